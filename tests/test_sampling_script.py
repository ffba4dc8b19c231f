"""scripts/sample.py on a tiny random Qwen2 checkpoint with a tiny BPE tokenizer trained in the test.

One subprocess run checks the real entry point end to end (greedy ids == transformers generate, the text
== the tokenizer's decoding, log-probs == a forward pass); one subprocess checks a bad-input exit code.
The other cases call ``grpojax.sampling.cli.main`` in-process (same code, no interpreter start-up).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from grpojax.sampling import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "sample.py")
VOCAB = 320
TEXTS = ["the cat sat on the mat", "hello world, hello there", "a tiny tokenizer for a tiny model",
         "sampling with a key value cache", "group relative policy optimisation"] * 4


def tiny_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def tiny_model(eos_id):
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, eos_token_id=eos_id, pad_token_id=eos_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """(dir with model + tokenizer, dir with the model only, tokenizer, torch model)."""
    tok = tiny_tokenizer()
    model = tiny_model(tok.eos_token_id)
    with_tok = tmp_path_factory.mktemp("with_tok")
    model.save_pretrained(with_tok)
    tok.save_pretrained(with_tok)
    bare = tmp_path_factory.mktemp("bare")
    model.save_pretrained(bare)
    return str(with_tok), str(bare), tok, model


def run_script(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, timeout=300)


def test_script_json_greedy_matches_transformers(ckpt):
    with_tok, _, tok, model = ckpt
    proc = run_script("--model", with_tok, "--prompt", "hello world", "--max-new-tokens", "7", "--greedy",
                      "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    ids = tok("hello world", add_special_tokens=False)["input_ids"]
    assert result["prompt_ids"] == ids
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=7, top_k=None, top_p=None,
                             temperature=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    ref_ids = ref[0, len(ids):].tolist()
    if tok.eos_token_id in ref_ids:
        ref_ids = ref_ids[: ref_ids.index(tok.eos_token_id) + 1]
    (comp,) = result["completions"]
    assert comp["completion_ids"] == ref_ids
    assert comp["text"] == tok.decode(ref_ids, skip_special_tokens=True)
    with torch.no_grad():
        logits = model(torch.tensor([ids + ref_ids])).logits[0, len(ids) - 1 : -1]
    ref_logp = torch.log_softmax(logits, -1)[torch.arange(len(ref_ids)), torch.tensor(ref_ids)].numpy()
    np.testing.assert_allclose(comp["logprobs"], ref_logp, atol=1e-4)


def test_script_bad_input_exit_code(ckpt):
    with_tok = ckpt[0]
    proc = run_script("--model", with_tok, "--prompt", "hi", "--max-new-tokens", "3", "--top-p", "2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --top-p must be in (0, 1], got 2.0"]
    assert proc.stdout == ""


def test_prompt_ids_without_tokenizer_prints_ids(ckpt, capsys):
    _, bare, tok, _ = ckpt
    assert cli.main(["--model", bare, "--prompt-ids", "5, 6 7", "--max-new-tokens", "4", "--greedy"]) == 0
    printed = capsys.readouterr().out.strip()
    assert cli.main(["--model", bare, "--prompt-ids", "5 6 7", "--max-new-tokens", "4", "--greedy",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["prompt_ids"] == [5, 6, 7] and result["completions"][0]["text"] is None
    assert printed == " ".join(map(str, result["completions"][0]["completion_ids"]))
    assert result["eos_ids"] == [tok.eos_token_id]  # from config.json when there is no tokenizer


def test_sampling_flags_seed_and_num_samples(ckpt, capsys):
    with_tok = ckpt[0]
    argv = ["--model", with_tok, "--prompt", "the cat", "--max-new-tokens", "5", "--temperature", "1.5",
            "--top-k", "50", "--top-p", "0.95", "--num-samples", "3", "--json"]
    outs = []
    for seed in ("1", "1", "2"):
        assert cli.main(argv + ["--seed", seed]) == 0
        outs.append(json.loads(capsys.readouterr().out)["completions"])
    assert outs[0] == outs[1] and outs[0] != outs[2] and len(outs[0]) == 3
    for c in outs[0]:
        assert len(c["completion_ids"]) == len(c["logprobs"]) <= 5
        assert c["truncated"] == (not c["finished"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prompt-ids", "1 x 3"], "--prompt-ids: 'x' is not an integer token id"),
        (["--prompt-ids", "1 999"], "prompt token ids [999] are >= the vocabulary size 320"),
        (["--prompt-ids", "1", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
        (["--prompt", "hi", "--temperature", "0"], "--temperature must be > 0"),
        (["--prompt", "hi", "--top-k", "0"], "--top-k must be >= 1, got 0"),
        (["--prompt", "hi", "--chat"], "has no chat template; drop --chat"),
        (["--prompt", "hi", "--prompt-ids", "1"], "not allowed with argument"),
        (["--prompt", "hi", "--model-typo", "x"], "unrecognized arguments"),
    ],
)
def test_bad_input_one_line_exit_2(ckpt, capsys, argv, message):
    full = ["--model", ckpt[0], "--max-new-tokens", "3", *argv] if "--max-new-tokens" not in argv else \
        ["--model", ckpt[0], *argv]
    assert cli.main(full) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_bad_input_is_the_package_user_error(tmp_path):
    """The sampling command line raises grpojax's one user-error type (what ``grpojax.cli.main`` reports)."""
    from grpojax.cli import UserError

    with pytest.raises(UserError, match="--max-new-tokens must be >= 1"):
        cli.run(cli.build_parser().parse_args(["--model", str(tmp_path), "--prompt-ids", "1",
                                               "--max-new-tokens", "0"]))
    with pytest.raises(UserError, match="required"):
        cli.build_parser().parse_args(["--prompt-ids", "1"])


def test_bad_model_paths(ckpt, tmp_path, capsys):
    bare = ckpt[1]
    assert cli.main(["--model", bare, "--prompt", "hi", "--max-new-tokens", "2"]) == 2
    assert "has no tokenizer" in capsys.readouterr().err
    assert cli.main(["--model", str(tmp_path / "missing"), "--prompt-ids", "1", "--max-new-tokens", "2"]) == 2
    assert "is not a checkpoint directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["--model", str(empty), "--prompt-ids", "1", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json" in err[0]


def test_tensor_parallel_sampling_matches_one_device(ckpt, capsys):
    """--tensor 4 / -1: the weights split over 4 / 8 of the fake CPU devices give the one-device greedy
    tokens and log-probs; more devices than JAX has is a bad-input exit."""
    argv = ["--model", ckpt[0], "--prompt", "the cat sat", "--max-new-tokens", "8", "--greedy", "--json",
            "--num-samples", "2"]
    outs = {}
    for t in ("1", "4", "-1"):
        capsys.readouterr()
        assert cli.main(argv + ["--tensor", t]) == 0
        outs[t] = json.loads(capsys.readouterr().out)
    assert [outs[t]["devices"] for t in ("1", "4", "-1")] == [1, 4, 8]
    for t in ("4", "-1"):
        for a, b in zip(outs[t]["completions"], outs["1"]["completions"]):
            assert a["completion_ids"] == b["completion_ids"] and len(a["completion_ids"]) > 0
            np.testing.assert_allclose(a["logprobs"], b["logprobs"], atol=1e-4)
    assert cli.main(argv + ["--tensor", "64"]) == 2
    assert "--tensor 64: JAX sees only 8 devices" in capsys.readouterr().err
