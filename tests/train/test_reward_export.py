"""A reward run's ``export_hf``: a HF ``Qwen2ForSequenceClassification`` directory that transformers scores
like our JAX model (LoRA merged, label map recorded) and that loads back as ``grpo.reward_model``."""

import json
import os
import types

import numpy as np
import pytest
import torch

from grpojax.cli import UserError
from grpojax.config import load_config
from grpojax.data import load_tokenizer
from grpojax.data.batching import encode_sequences
from grpojax.rollout.reward_scorer import load_reward_scorer
from grpojax.train.build import build_reward_model
from grpojax.train.runner import run
from grpojax.train.tasks.reward import RewardTask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASPECTS = ["politeness", "meaningfulness", "actionability", "safety"]
AFFINE = (0.5, 0.25)  # reward.label_affine: target = 0.5 * label + 0.25


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 2-step LoRA reward run with a label affine map, exported: ``(cfg, run_dir, hf_dir)``."""
    tmp = tmp_path_factory.mktemp("rm_export")
    run_dir, hf_dir = str(tmp / "rm"), str(tmp / "rm" / "hf")
    old = os.getcwd()
    os.chdir(ROOT)  # the tiny config's repo-relative paths
    try:
        cfg = load_config("configs/tiny_reward.yaml", [
            "train.steps=2", f"run_dir={run_dir}", f"export_hf={hf_dir}", "model.lora.rank=4",
            f"reward.label_affine=[{AFFINE[0]},{AFFINE[1]}]", "train.learning_rate=1e-2"])
        run(cfg, RewardTask(cfg))
    finally:
        os.chdir(old)
    return cfg, run_dir, hf_dir


def _section(aspects):
    return types.SimpleNamespace(grpo=types.SimpleNamespace(aspects=tuple(aspects)),
                                 model=types.SimpleNamespace(scan_layers=False))


def _batch(tok):
    with open(os.path.join(ROOT, "configs/data/tiny_reward.jsonl")) as f:
        rows = [json.loads(line) for line in f][:6]
    enc = encode_sequences(tok, [r["prompt"] for r in rows], [r["response"] for r in rows], 32, 56)
    P = 32
    ids, mask = enc["input_ids_BT"], enc["attention_mask_BT"]
    batch = {"prompt_BQ": ids[:, :P], "prompt_mask_BQ": mask[:, :P], "completion_BC": ids[:, P:],
             "completion_mask_BC": mask[:, P:]}
    return ids, mask, batch


def test_export_writes_a_sequence_classification_directory(exported):
    cfg, _, hf_dir = exported
    with open(os.path.join(hf_dir, "config.json")) as f:
        c = json.load(f)
    tok = load_tokenizer(os.path.join(ROOT, "configs/data/tiny_tokenizer"))
    assert c["architectures"] == ["Qwen2ForSequenceClassification"] and c["num_labels"] == 4
    assert c["id2label"] == {str(i): a for i, a in enumerate(ASPECTS)}
    assert c["label2id"] == {a: i for i, a in enumerate(ASPECTS)}
    assert c["pad_token_id"] == tok.pad_id
    # label = logits * label_scale + label_shift inverts target = 0.5 * label + 0.25
    np.testing.assert_allclose(c["grpojax"]["label_scale"], [2.0] * 4)
    np.testing.assert_allclose(c["grpojax"]["label_shift"], [-0.5] * 4)
    assert c["grpojax"]["aspects"] == ASPECTS and c["grpojax"]["chat_template"] is True
    assert os.path.isfile(os.path.join(hf_dir, "tokenizer.json"))
    assert load_tokenizer(hf_dir).hf.get_vocab() == tok.hf.get_vocab()


def test_transformers_scores_the_export_like_our_model(exported):
    """transformers (PyTorch, float32) on the exported directory == our scorer on the run_dir (LoRA unmerged)
    == our scorer on the exported directory, on the label scale."""
    from transformers import AutoModelForSequenceClassification

    _, run_dir, hf_dir = exported
    tok = load_tokenizer(os.path.join(ROOT, "configs/data/tiny_tokenizer"))
    ids, mask, batch = _batch(tok)
    hf = AutoModelForSequenceClassification.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long)).logits.numpy()
    ref = logits * 2.0 - 0.5
    cwd = os.getcwd()
    os.chdir(ROOT)  # the run_dir's config.yaml names the tokenizer by a repo-relative path
    try:
        from_run = np.asarray(load_reward_scorer(run_dir, _section(ASPECTS), tok)(batch))
    finally:
        os.chdir(cwd)
    scorer = load_reward_scorer(hf_dir, _section(ASPECTS), tok)
    assert not scorer.retokenize  # the exported tokenizer is the policy's: the sampled ids are scored
    from_hf = np.asarray(scorer(batch))
    print(f"\n[reward export] max |HF - run_dir| = {np.abs(ref - from_run).max():.2e}, "
          f"max |HF - export| = {np.abs(ref - from_hf).max():.2e}, score spread {np.ptp(ref):.2e}")
    assert np.ptp(ref) > 1e-3  # not a degenerate constant
    np.testing.assert_allclose(from_run, ref, atol=2e-5)
    np.testing.assert_allclose(from_hf, ref, atol=2e-5)


def test_export_aspect_names_are_checked(exported):
    _, _, hf_dir = exported
    with pytest.raises(UserError, match="scores aspects"):
        load_reward_scorer(hf_dir, _section(ASPECTS[::-1]), None)


def test_lora_reward_run_trains_the_head(exported):
    """Under LoRA the head is trained too (PEFT's modules_to_save=["score"]); a frozen random head was the bug."""
    from transformers import AutoModelForSequenceClassification

    cfg, _, hf_dir = exported
    init = np.asarray(build_reward_model(cfg).head_w[...])  # the run's seed: the head it started from
    hf = AutoModelForSequenceClassification.from_pretrained(hf_dir, dtype=torch.float32)
    trained = hf.score.weight.detach().numpy().T
    assert np.abs(trained - init).max() > 1e-3
