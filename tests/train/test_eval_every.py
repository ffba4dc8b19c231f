"""``train.eval_every`` in the kinds that ignored it (issue 17 item 8): GRPO / PPO / online DPO log the
held-out reward (``eval/reward``, ``eval/rewards/<name>/mean``) and SFT the held-out loss during training."""

import os
import sys

import jax
import numpy as np
import pytest

from grpojax.checkpoint import Checkpointer, abstract_like
from grpojax.config import load_config
from grpojax.train.runner import run

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pytest runs with --import-mode=importlib
from test_runner import _metrics, _repo_root  # noqa: E402,F401 (autouse fixture)

PROMPTS = "data.eval_path=configs/data/tiny_prompts.jsonl"


def _task(kind):
    from grpojax.train.tasks import SFTTask
    from grpojax.train.tasks.grpo import GRPOTask
    from grpojax.train.tasks.online_dpo import OnlineDPOTask
    from grpojax.train.tasks.ppo import PPOTask

    return {"grpo": GRPOTask, "ppo": PPOTask, "online_dpo": OnlineDPOTask, "sft": SFTTask}[kind]


def _restored(task, run_dir, step):
    with Checkpointer(str(run_dir), save_every=1, keep=10) as ck:
        return ck.restore(step, abstract_like(task.init_state())).state


def test_grpo_logs_the_held_out_reward_of_the_policy_at_that_step(tmp_path):
    over = ["train.steps=2", "train.eval_every=2", PROMPTS, f"run_dir={tmp_path}", "train.save_every=1"]
    cfg = load_config("configs/tiny_grpo.yaml", over)
    run(cfg, _task("grpo")(cfg))
    rows = _metrics(tmp_path)
    assert not any(k.startswith("eval/") for k in rows[0])
    ev = {k: v for k, v in rows[1].items() if k.startswith("eval/")}
    assert {"eval/reward", "eval/rewards/char_frac/mean", "eval/num_prompts"} <= set(ev), sorted(ev)
    assert ev["eval/num_prompts"] == 32 and 0.0 <= ev["eval/rewards/char_frac/mean"] <= 1.0
    # the same numbers as scripts/evaluate.py's evaluation (train.seed) of the step-2 checkpoint
    task = _task("grpo")(cfg)
    again = task.evaluate(_restored(task, tmp_path, 2), list(task._eval_data), seed=cfg.train.seed)
    for k, v in ev.items():
        assert again[k] == pytest.approx(v, rel=1e-6, abs=1e-7), k


@pytest.mark.parametrize("kind,extra", [("ppo", ["ppo.ppo_epochs=1", "ppo.num_mini_batches=1"]),
                                        ("online_dpo", ["mesh.data=1"])])
def test_ppo_and_online_dpo_log_the_held_out_reward(tmp_path, kind, extra):
    cfg = load_config(f"configs/tiny_{kind}.yaml", ["train.steps=1", "train.eval_every=1", PROMPTS,
                                                    f"run_dir={tmp_path}", *extra])
    run(cfg, _task(kind)(cfg))
    row = _metrics(tmp_path)[0]
    assert np.isfinite(row["eval/reward"]) and 0.0 <= row["eval/rewards/char_frac/mean"] <= 1.0, row
    # the step's sampled completions (issue 20): the first prompts' groups, each aspect's score, the reward
    import json

    with open(tmp_path / "completions.jsonl") as f:
        comps = [json.loads(line) for line in f]
    G = getattr(cfg, kind).num_generations
    assert len(comps) == max(1, 8 // G) * G and {c["step"] for c in comps} == {1}
    for c in comps:
        assert c["reward"] == pytest.approx(c["rewards/char_frac"]) and isinstance(c["completion"], str)
    if kind == "online_dpo":  # each prompt's group: one chosen and one rejected, or no pair (equal rewards)
        for i in range(0, len(comps), G):
            roles = sorted(c["pair"] for c in comps[i:i + G])
            rewards = [c["reward"] for c in comps[i:i + G]]
            if max(rewards) > min(rewards):
                assert roles == [""] * (G - 2) + ["chosen", "rejected"]
                assert next(c["reward"] for c in comps[i:i + G] if c["pair"] == "chosen") == max(rewards)


def test_sft_logs_the_held_out_loss(tmp_path):
    """eval/loss = the token-mean response NLL over every held-out pair, against a float64 NumPy
    log-softmax of the step-1 policy's logits."""
    from grpojax.data import COLLATE
    from grpojax.train.steps.forward import sequence_inputs
    from grpojax.train.tasks.base import split_sequences

    cfg = load_config("configs/tiny_sft.yaml", ["train.steps=1", "train.eval_every=1", f"run_dir={tmp_path}",
                                                "data.eval_path=configs/data/tiny_sft.jsonl", "mesh.data=1",
                                                "train.batch_size=6"])  # 32 pairs: 5 batches + 2 padded
    run(cfg, _task("sft")(cfg))
    row = _metrics(tmp_path)[0]
    task = _task("sft")(cfg)
    model = task.model_of(_restored(task, tmp_path, 1))
    d, data = cfg.data, task._eval_data
    assert len(data) % cfg.train.batch_size != 0  # the last evaluation batch is padded
    raw = COLLATE["sft"](task.tok, data[list(range(len(data)))], max_prompt_length=d.max_prompt_length,
                         max_length=d.max_length)
    b = {k: jax.numpy.asarray(v) for k, v in split_sequences(raw, d.max_prompt_length).items()}
    tokens, mask, pos = sequence_inputs(b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"],
                                        b["completion_mask_BC"])
    P, L = b["prompt_BQ"].shape[1], b["completion_BC"].shape[1]
    logits = np.asarray(model(tokens, pos, attn_mask_BT=mask), np.float64)[:, P - 1:P + L - 1]
    logp = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    comp, m = np.asarray(b["completion_BC"]), np.asarray(b["completion_mask_BC"], np.float64)
    nll = -np.take_along_axis(logp, comp[..., None], -1)[..., 0]
    want = float(np.sum(nll * m) / np.sum(m))
    assert row["eval/loss"] == pytest.approx(want, rel=1e-5)
    assert row["eval/perplexity"] == pytest.approx(np.exp(want), rel=1e-5)
