"""What a short tiny GRPO run leaves to watch it by (issue 20): evaluation rows in ``metrics.jsonl``,
sampled completions in ``completions.jsonl`` (prompt, each aspect's score, reward, advantage), an offline
W&B run with the same scalars and a completions table, and the loop's callback hooks."""

import glob
import json
import os
import sys

import numpy as np
import pytest

from grpojax.config import load_config
from grpojax.train.callbacks import Callback
from grpojax.train.runner import run

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pytest runs with --import-mode=importlib
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from test_metrics_wandb import wandb_history  # noqa: E402
from test_runner import _metrics, _repo_root  # noqa: E402,F401 (autouse fixture)

wandb = pytest.importorskip("wandb")


class Recorder(Callback):
    def __init__(self):
        self.steps, self.end = [], None

    def on_step_end(self, step, row, ctx):
        self.steps.append((step, row["loss"], ctx.cfg.kind))

    def on_train_end(self, step, state, ctx):
        self.end = (step, ctx.task.model_of(state) is not None)


def test_tiny_grpo_run_writes_eval_rows_completions_and_an_offline_wandb_run(tmp_path, monkeypatch):
    from grpojax.train.tasks.grpo import GRPOTask

    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    cfg = load_config("configs/tiny_grpo.yaml", [
        "train.steps=2", "train.eval_every=2", "data.eval_path=configs/data/tiny_prompts.jsonl", "train.log_every=1",
        f"run_dir={run_dir}", "train.save_every=100", "logging.wandb.project=grpojax-test",
        "logging.wandb.mode=offline", "logging.wandb.name=tiny"])
    rec = Recorder()
    run(cfg, GRPOTask(cfg), callbacks=[rec])
    wandb.teardown()  # flushes the offline run file

    rows = _metrics(run_dir)
    assert [s for s, _, _ in rec.steps] == [1, 2] and rec.steps[0][1] == rows[0]["loss"] and rec.end == (2, True)
    assert "eval/reward" in rows[1] and "eval/rewards/char_frac/mean" in rows[1] and "eval/reward" not in rows[0]

    with open(run_dir / "completions.jsonl") as f:
        comps = [json.loads(line) for line in f]
    prompts = {json.loads(line)["prompt"] for line in open("configs/data/tiny_prompts.jsonl")}
    G = cfg.grpo.num_generations
    assert sorted({c["step"] for c in comps}) == [1, 2] and len(comps) == 2 * 2 * G  # 8 // G = 2 groups a step
    for c in comps:
        assert set(c) == {"step", "prompt", "completion", "rewards/char_frac", "reward", "advantage"}
        assert c["prompt"] in prompts and isinstance(c["completion"], str)
        vowels = sum(ch in "aeiou" for ch in c["completion"]) / len(c["completion"]) if c["completion"] else 0.0
        assert c["rewards/char_frac"] == pytest.approx(vowels, abs=1e-6) and c["reward"] == c["rewards/char_frac"]
    for i in range(0, len(comps), G):  # each group's advantages: (r - mean) / (Bessel std + 1e-4), float64
        group = comps[i:i + G]
        assert len({c["prompt"] for c in group}) == 1
        r = np.array([c["reward"] for c in group], np.float64)
        want = (r - r.mean()) / (r.std(ddof=1) + 1e-4)
        np.testing.assert_allclose([c["advantage"] for c in group], want, rtol=1e-4, atol=1e-4)

    (offline,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    hist = wandb_history(offline)
    logged = {h["_step"]: h for h in hist if "loss" in h}
    assert logged[1]["loss"] == pytest.approx(rows[0]["loss"]) and logged[2]["eval/reward"] == pytest.approx(
        rows[1]["eval/reward"])
    tables = [h for h in hist if h.get("completions/_type") == "table-file"]
    assert [t["_step"] for t in tables] == [1, 2] and all(t["completions/nrows"] == 2 * G for t in tables)
