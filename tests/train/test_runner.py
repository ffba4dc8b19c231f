"""The outer loop end to end on the tiny configs: learning, exact resume, SIGTERM, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from grpojax.checkpoint import Checkpointer, abstract_like
from grpojax.config import load_config
from grpojax.train.runner import run
from grpojax.train.tasks import SFTTask
from grpojax.train.tasks.grpo import GRPOTask
from grpojax.train.tasks.preference import PreferenceTask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "JAX_PLATFORMS": "cpu",
       "XLA_FLAGS": ""}


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the tiny configs use repo-relative paths


def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _final_state_leaves(run_dir):
    with Checkpointer(run_dir, save_every=1, keep=10) as ck:
        state = ck.restore_latest().state
    leaves = jax.tree.leaves(state)
    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                       else x) for x in leaves]


def _train(kind, task_cls, overrides):
    cfg = load_config(f"configs/tiny_{kind}.yaml", overrides)
    return run(cfg, task_cls(cfg))


def test_grpo_raises_a_rule_based_reward(tmp_path):
    """A real learning test: the share of vowels in completions rises under GRPO (30 steps)."""
    _train("grpo", GRPOTask, ["train.steps=30", f"run_dir={tmp_path}", "train.save_every=100"])
    rows = _metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 31))
    first = np.mean([r["reward"] for r in rows[:5]])
    last = np.mean([r["reward"] for r in rows[-5:]])
    assert last > first + 0.1, (first, last)
    for key in ("loss", "kl", "entropy", "frac_reward_zero_std", "reward_std",
                "rewards/char_frac/mean", "clip_ratio/region_mean", "completions/mean_length",
                "sampler/logp_max_abs_diff", "grad_norm"):
        assert key in rows[0], key
    assert rows[0]["sampler/logp_max_abs_diff"] < 1e-4  # f32: sampler and trainer agree


def test_sft_script_sigterm_saves_and_exits_zero(tmp_path):
    cmd = [sys.executable, "scripts/sft.py", "configs/tiny_sft.yaml", "train.steps=100000",
           f"run_dir={tmp_path}", "train.save_every=100000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "SIGTERM: saved step" in out
    steps = Checkpointer(str(tmp_path), save_every=1, keep=10).all_steps()
    assert steps and steps[-1] == _metrics(tmp_path)[-1]["step"]


@pytest.mark.parametrize("args,needle", [
    (["configs/tiny_dpo.yaml", "train.stepz=3"], "stepz"),
    (["configs/tiny_dpo.yaml", "preference.loss=gr_xpo"], "preference.loss"),
    (["configs/missing.yaml"], "missing.yaml"),
    (["configs/tiny_sft.yaml"], "kind"),  # an sft config given to the dpo script
])
def test_bad_input_one_line_exit_2(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "scripts/train_dpo.py", *args, f"run_dir={tmp_path}/r"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert not os.path.exists(f"{tmp_path}/r/checkpoints")


def test_reward_model_trains_and_scores_grpo_rollouts(tmp_path):
    from grpojax.train.tasks.reward import RewardTask

    rm_dir, grpo_dir = str(tmp_path / "rm"), str(tmp_path / "grpo")
    _train("reward", RewardTask, ["train.steps=12", f"run_dir={rm_dir}", "train.learning_rate=3e-3"])
    rows = _metrics(rm_dir)
    assert np.mean([r["loss"] for r in rows[-3:]]) < 0.6 * np.mean([r["loss"] for r in rows[:3]])
    assert {"mse/politeness", "mse/safety"} <= set(rows[0])
    aspects = "[politeness,meaningfulness,actionability,safety]"
    _train("grpo", GRPOTask, ["train.steps=1", f"run_dir={grpo_dir}", f"grpo.reward_model={rm_dir}",
                              f"grpo.aspects={aspects}"])
    row = _metrics(grpo_dir)[0]
    for a in ("politeness", "meaningfulness", "actionability", "safety", "char_frac"):
        assert np.isfinite(row[f"rewards/{a}/mean"]), a


def test_evaluate_script_scores_a_grpo_policy(tmp_path):
    run_dir, hf_dir = str(tmp_path / "g"), str(tmp_path / "hf")
    cfg = load_config("configs/tiny_grpo.yaml", ["train.steps=1", f"run_dir={run_dir}", f"export_hf={hf_dir}"])
    task = GRPOTask(cfg)
    run(cfg, task)
    # the exported HF directory holds the trained policy (same logits) and the tokenizer
    from grpojax.data import load_tokenizer
    from grpojax.models import from_hf

    with Checkpointer(run_dir, save_every=1, keep=10) as ck:
        state = ck.restore_latest(abstract_like(task.init_state())).state
    tokens = jax.numpy.asarray([[5, 6, 7, 8]], jax.numpy.int32)
    np.testing.assert_allclose(np.asarray(from_hf(hf_dir)(tokens)), np.asarray(task.model_of(state)(tokens)),
                               atol=1e-5)
    assert load_tokenizer(hf_dir).vocab_size == task.tok.vocab_size
    proc = subprocess.run([sys.executable, "scripts/evaluate.py", "configs/tiny_grpo.yaml", f"run_dir={run_dir}",
                           "data.eval_path=configs/data/tiny_prompts.jsonl", "--out", str(tmp_path / "e.json")],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["step"] == 1 and result["eval/num_prompts"] == 32
    assert 0.0 <= result["eval/rewards/char_frac/mean"] <= 1.0


@pytest.mark.parametrize("kind,task_cls,extra", [
    ("dpo", PreferenceTask, []),
    ("grpo", GRPOTask, ["grpo.beta=0.04"]),
])
def test_lora_with_reference_trains_past_donation_and_exports(tmp_path, kind, task_cls, extra):
    """Regression: the LoRA reference shared the donated frozen base ("Buffer has been deleted or donated"
    at step 2), and export merged LoRA into read-only host arrays."""
    from transformers import AutoModelForCausalLM

    hf_dir = str(tmp_path / "hf")
    _train(kind, task_cls, ["train.steps=3", f"run_dir={tmp_path / 'run'}", "train.save_every=100",
                            "model.lora.rank=2", f"export_hf={hf_dir}", *extra])
    rows = _metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in rows)
    assert AutoModelForCausalLM.from_pretrained(hf_dir) is not None


def test_a_finished_run_keeps_its_export_and_an_extension_refuses_to_replace_it(tmp_path):
    """Re-running a finished run leaves its export as it is (was a FileExistsError traceback); training
    further into an existing export_hf is refused in one line before any step (nothing replaced)."""
    from grpojax.cli import UserError

    hf_dir = tmp_path / "hf"
    over = [f"run_dir={tmp_path / 'run'}", "train.save_every=100", f"export_hf={hf_dir}"]
    _train("sft", SFTTask, ["train.steps=1", *over])
    before = {f.name: f.stat().st_mtime_ns for f in hf_dir.iterdir()}
    summary = _train("sft", SFTTask, ["train.steps=1", *over])
    assert summary["start_step"] == summary["end_step"] == 1
    with pytest.raises(UserError, match="export_hf: .* exists and is not empty"):
        _train("sft", SFTTask, ["train.steps=2", *over])
    assert {f.name: f.stat().st_mtime_ns for f in hf_dir.iterdir()} == before
    assert [r["step"] for r in _metrics(tmp_path / "run")] == [1]


@pytest.mark.parametrize("kind", ["ppo", "online_dpo"])
def test_evaluate_script_scores_ppo_and_online_dpo_policies(tmp_path, kind):
    """evaluate.py on a PPO / online-DPO run: the same held-out prompt evaluation as GRPO's (the section's
    sampling and reward), from the run's latest checkpoint."""
    from grpojax.train.tasks.online_dpo import OnlineDPOTask
    from grpojax.train.tasks.ppo import PPOTask

    run_dir = str(tmp_path / kind)
    extra = {"ppo": ["ppo.ppo_epochs=1", "ppo.num_mini_batches=1"], "online_dpo": ["mesh.data=1"]}[kind]
    cfg = load_config(f"configs/tiny_{kind}.yaml", ["train.steps=1", f"run_dir={run_dir}", *extra])
    run(cfg, {"ppo": PPOTask, "online_dpo": OnlineDPOTask}[kind](cfg))
    proc = subprocess.run([sys.executable, "scripts/evaluate.py", f"configs/tiny_{kind}.yaml", f"run_dir={run_dir}",
                           "data.eval_path=configs/data/tiny_prompts.jsonl", *extra, "--out", str(tmp_path / "e.json")],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["step"] == 1 and result["eval/num_prompts"] == 32
    assert 0.0 <= result["eval/rewards/char_frac/mean"] <= 1.0 and np.isfinite(result["eval/reward"])
    assert result["eval/completions/mean_length"] > 0
