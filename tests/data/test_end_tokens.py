"""Every end token stops a completion: the tokenizer's EOS and every ``eos_token_id`` of the model's
``generation_config.json`` (Qwen2.5-Instruct: ``<|im_end|>`` and ``<|endoftext|>``), for the rollouts of
GRPO / PPO / online DPO / evaluation (``Tokenizer.eos_ids``) and for ``scripts/sample.py``."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx

from grpojax.config import load_config
from grpojax.data import load_tokenizer
from grpojax.models import Qwen, QwenConfig
from grpojax.rollout import SamplingSettings, sample_and_score
from grpojax.sampling.cli import eos_and_pad
from grpojax.train.tasks.grpo import GRPOTask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_TOK = os.path.join(ROOT, "configs", "data", "tiny_tokenizer")
ENDOFTEXT, IM_END = 0, 2  # the tiny tokenizer's ids of Qwen's <|endoftext|> (also its pad) and <|im_end|> (its EOS)


@pytest.fixture(scope="module")
def qwen_like_dirs(tmp_path_factory):
    """A tokenizer directory (EOS <|im_end|>, pad <|endoftext|>) and a model directory whose
    generation_config.json lists both end ids, as Qwen2.5-Instruct's does."""
    root = tmp_path_factory.mktemp("qwen_like")
    tok_dir, model_dir = str(root / "tok"), str(root / "model")
    shutil.copytree(TINY_TOK, tok_dir)
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": ENDOFTEXT, "eos_token_id": [IM_END, ENDOFTEXT], "pad_token_id": ENDOFTEXT}, f)
    return tok_dir, model_dir


def test_tokenizer_takes_every_end_id_and_decode_cuts_at_either(qwen_like_dirs):
    tok_dir, model_dir = qwen_like_dirs
    alone = load_tokenizer(tok_dir)
    assert alone.eos_ids == (IM_END,) and alone.eos_id == IM_END and alone.pad_id == ENDOFTEXT
    tok = load_tokenizer(tok_dir, model_path=model_dir)
    assert tok.eos_ids == (IM_END, ENDOFTEXT) and tok.eos_id == IM_END  # EOS appended to SFT responses
    ids = tok.encode_response("abc") + [ENDOFTEXT] + tok.encode_response("zz")
    assert tok.decode(ids) == "abc" and tok.decode(tok.encode_response("ab") + [IM_END, 70]) == "ab"
    # the generation config in the tokenizer directory itself counts too
    shutil.copy(os.path.join(model_dir, "generation_config.json"), tok_dir)
    try:
        assert load_tokenizer(tok_dir).eos_ids == (IM_END, ENDOFTEXT)
    finally:
        os.remove(os.path.join(tok_dir, "generation_config.json"))


def test_bad_generation_config_is_one_line(tmp_path):
    shutil.copytree(TINY_TOK, tmp_path / "t")
    (tmp_path / "t" / "generation_config.json").write_text('{"eos_token_id": "x"}')
    from grpojax.cli import UserError

    with pytest.raises(UserError, match=r"generation_config.json: eos_token_id must be a non-negative integer"):
        load_tokenizer(str(tmp_path / "t"))


def test_grpo_task_reads_the_model_dirs_end_ids(qwen_like_dirs, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    tok_dir, model_dir = qwen_like_dirs
    with open("configs/tiny_grpo.yaml") as f:
        raw = yaml.safe_load(f)
    raw["model"] = {"path": model_dir}  # only init_state loads the weights
    raw.update(tokenizer={"path": tok_dir}, run_dir=str(tmp_path / "run"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert GRPOTask(load_config(str(tmp_path / "c.yaml"))).tok.eos_ids == (IM_END, ENDOFTEXT)


class EndBiasedQwen(Qwen):
    """A tiny random Qwen whose two end tokens get +bias on every logit: completions end at random
    positions, half on each end token."""

    def logits_from_hidden(self, hidden_BTD, **kw):
        logits = super().logits_from_hidden(hidden_BTD, **kw)
        bias = jnp.zeros((logits.shape[-1],), logits.dtype).at[jnp.array([ENDOFTEXT, IM_END])].set(4.0)
        return logits + bias.reshape((1,) * (logits.ndim - 1) + (-1,))


def test_rollout_stops_on_either_end_token_with_right_masks(qwen_like_dirs):
    tok_dir, model_dir = qwen_like_dirs
    tok = load_tokenizer(tok_dir, model_path=model_dir)
    cfg = QwenConfig(vocab_size=384, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=8, tie_word_embeddings=True)
    model = EndBiasedQwen(cfg, rngs=nnx.Rngs(0))
    prompts = ["hello there", "how are you", "bake bread", "a b c"]
    pb = tok.prompt_batch(prompts, 24)
    L = 12
    # mask_truncated_completions: a row the sampler did not see end (truncated) would lose its whole mask
    ro = sample_and_score(model, pb.prompt_ids_BT, pb.prompt_mask_BT, prompts, jax.random.key(0), tok=tok,
                            sampling=SamplingSettings(num_generations=8, max_new_tokens=L),
                            aspect_names=["len"], mask_truncated_completions=True,
                            score_fn=lambda b, p, t: np.array([[len(x)] for x in t], np.float32))
    tokens = np.asarray(ro.batch["completion_BC"])
    mask = np.asarray(ro.batch["completion_mask_BC"])
    ended_on = {ENDOFTEXT: 0, IM_END: 0}
    for row, m, text in zip(tokens, mask, ro.completions):
        ends = [j for j, t in enumerate(row) if t in (ENDOFTEXT, IM_END)]
        if ends and m[ends[0]] == 1:  # stopped on an end token: mask 1 up to and including it, 0 after
            n = ends[0] + 1
            ended_on[int(row[ends[0]])] += 1
            np.testing.assert_array_equal(m, (np.arange(L) < n).astype(m.dtype))
            assert text == tok.decode(row[:n]) and text == tok.hf.decode(row[:ends[0]].tolist())
        else:  # truncated: no end token anywhere, loss mask zeroed
            assert m.sum() == 0 and not ends
    assert ended_on[ENDOFTEXT] >= 3 and ended_on[IM_END] >= 3, ended_on  # both kinds occur and stop
    stopped = sum(ended_on.values())
    np.testing.assert_allclose(ro.metrics["completions/clipped_ratio"], 1 - stopped / len(tokens))


def test_sample_script_takes_both_end_ids(qwen_like_dirs, tmp_path):
    tok_dir, model_dir = qwen_like_dirs
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tok_dir, ckpt)
    shutil.copy(os.path.join(model_dir, "generation_config.json"), ckpt)
    tok = load_tokenizer(str(ckpt)).hf
    eos, pad = eos_and_pad(str(ckpt), tok)
    assert sorted(eos) == [ENDOFTEXT, IM_END] and pad == ENDOFTEXT


def test_export_writes_every_end_id_to_generation_config(qwen_like_dirs, monkeypatch, tmp_path):
    """An exported policy stops where training did: its generation_config.json lists every end id (for
    grpojax and for transformers' generate), keeping the source checkpoint's sampling defaults."""
    from transformers import GenerationConfig

    from grpojax.data.tokenizer import write_generation_config

    monkeypatch.chdir(ROOT)
    tok_dir, model_dir = qwen_like_dirs
    src = tmp_path / "tok_with_gen"
    shutil.copytree(tok_dir, src)
    shutil.copy(os.path.join(model_dir, "generation_config.json"), src)
    cfg = load_config("configs/tiny_grpo.yaml", [f"tokenizer.path={src}", f"run_dir={tmp_path / 'run'}",
                                                 "mesh.data=1"])
    task = GRPOTask(cfg)
    out = str(tmp_path / "hf")
    task.export(task.init_state(), out)
    with open(os.path.join(out, "generation_config.json")) as f:
        assert json.load(f)["eos_token_id"] == [IM_END, ENDOFTEXT]
    assert load_tokenizer(out).eos_ids == (IM_END, ENDOFTEXT)
    assert GenerationConfig.from_pretrained(out).eos_token_id == [IM_END, ENDOFTEXT]
    # the source checkpoint's sampling defaults survive
    with open(os.path.join(model_dir, "generation_config.json")) as f:
        gen = {**json.load(f), "temperature": 0.7, "top_p": 0.8}
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "generation_config.json").write_text(json.dumps(gen))
    (tmp_path / "o").mkdir()
    write_generation_config(str(tmp_path / "o"), load_tokenizer(tok_dir, model_path=str(tmp_path / "m")),
                            str(tmp_path / "m"))
    got = json.loads((tmp_path / "o" / "generation_config.json").read_text())
    assert got["temperature"] == 0.7 and got["top_p"] == 0.8 and got["eos_token_id"] == [IM_END, ENDOFTEXT]
