"""scripts/compare_methods.py and grpojax.demo.compare: equal completion budgets, the FLOP formula by hand,
mean ± std tables, the one-line bad-input contract, and the Qwen-preset path end to end on a tiny random
Qwen2 checkpoint + reward model + a 4-row fake PKU-SafeRLHF prompt file."""

import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from grpojax.cli import UserError
from grpojax.demo import compare as C
from grpojax.demo import compare_report as CR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "compare_methods.py")
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
PATHS = {"model.path": "/p/policy", "tokenizer.path": "/p/tok", "data.path": "/p/prompts.jsonl"}
SETS = {m: {f"{m}.reward_model": "/p/rm"} for m in C.METHODS}


def _script(*args, timeout=1800):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------------------------------- configs
def test_demo_spec_gives_every_method_the_same_completions_and_rollout_settings():
    spec = C.load_spec(os.path.join(ROOT, "configs", "compare", "demo.yaml"))
    cfgs = C.method_configs(spec, PATHS, SETS)
    g, p, o = (cfgs[m]["cfg"] for m in C.METHODS)
    budget = g.train.steps * g.train.batch_size
    assert all(cfgs[m]["completions"] == budget for m in C.METHODS)
    # completions actually sampled: steps x batch (GRPO, online DPO); rollouts x batch (PPO)
    assert o.train.steps * o.train.batch_size == budget
    rollouts = p.train.steps // (p.ppo.ppo_epochs * p.ppo.num_mini_batches)
    assert rollouts * p.ppo.ppo_epochs * p.ppo.num_mini_batches == p.train.steps
    assert rollouts * p.train.batch_size == budget
    for f in C.ROLLOUT_FIELDS:
        assert getattr(p.ppo, f) == getattr(g.grpo, f) == getattr(o.online_dpo, f), f
    for cfg in (g, p, o):
        assert (cfg.model.path, cfg.tokenizer.path, cfg.data.path) == ("/p/policy", "/p/tok", "/p/prompts.jsonl")
        assert cfg.data.max_prompt_length == g.data.max_prompt_length


def test_completion_budget_from_the_spec_and_indivisible_budget_is_an_error():
    spec = C.load_spec(os.path.join(ROOT, "configs", "compare", "demo.yaml"))
    cfgs = C.method_configs({**spec, "completions": 640}, PATHS, SETS)
    p = cfgs["ppo"]["cfg"]
    assert cfgs["grpo"]["cfg"].train.steps == 10 and cfgs["online_dpo"]["cfg"].train.steps == 10
    assert p.train.steps == 10 * p.ppo.ppo_epochs * p.ppo.num_mini_batches
    with pytest.raises(UserError, match="train.batch_size=64 does not divide the completion budget 100"):
        C.method_configs({**spec, "completions": 100}, PATHS, SETS)


def test_spec_errors_name_the_key(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("methods: {}\nextra: 1\n")
    with pytest.raises(UserError, match=r"unknown key\(s\) \['extra'\]"):
        C.load_spec(str(bad))
    bad.write_text("methods: {grpo: {base: configs/demo/grpo.yaml}, ppo: {base: nope.yaml}, "
                   "online_dpo: {base: configs/compare/demo_online_dpo.yaml}}\n")
    with pytest.raises(UserError, match="methods.ppo.base: .*nope.yaml does not exist"):
        C.load_spec(str(bad))
    with pytest.raises(UserError, match="spec not found"):
        C.load_spec(str(tmp_path / "missing.yaml"))


def test_every_shipped_spec_resolves():
    for name in ("demo", "qwen2.5-0.5b", "qwen2.5-7b", "qwen2.5-14b"):
        spec = C.load_spec(os.path.join(ROOT, "configs", "compare", f"{name}.yaml"))
        cfgs = C.method_configs(spec, {}, {})
        assert {m: cfgs[m]["completions"] for m in C.METHODS} == {m: cfgs["grpo"]["completions"] for m in C.METHODS}
        if name != "demo":
            assert all(cfgs[m]["cfg"].model.lora.rank == 16 for m in C.METHODS)
            assert cfgs["grpo"]["cfg"].grpo.beta == 0.04 and cfgs["grpo"]["cfg"].grpo.num_generations == 8


# ------------------------------------------------------------------------------------------- FLOPs
def _ns(**kw):
    return types.SimpleNamespace(**kw)


def test_flops_per_step_by_hand():
    """P = 10, P_rm = 4, B = 8 completions, T = 2 prompt + 3 completion tokens."""
    train, data = _ns(batch_size=8), _ns(max_prompt_length=2)
    g = _ns(train=train, data=data, grpo=_ns(max_completion_length=3, beta=0.04, num_iterations=1))
    f = C.flops_per_step("grpo", g, policy_params=10, rm_params=4)
    assert (f["train"], f["forward"], f["tokens_per_sequence"]) == (6 * 10 * 8 * 5, 800 + 320 + 800, 5)
    g0 = _ns(train=train, data=data, grpo=_ns(max_completion_length=3, beta=0.0, num_iterations=2))
    assert C.flops_per_step("grpo", g0, policy_params=10, rm_params=4)["forward"] == (800 + 320) / 2
    p = _ns(train=train, data=data, ppo=_ns(max_completion_length=3, ppo_epochs=2, num_mini_batches=2,
                                             kl_coef=0.1, adaptive_kl=False))
    f = C.flops_per_step("ppo", p, policy_params=10, rm_params=4)
    assert (f["train"], f["forward"]) == (6 * 10 * 4 * 5, (800 + 320 + 800 + 800) / 4)
    f = C.flops_per_step("ppo", p, policy_params=10, rm_params=4, critic_params=6)
    assert (f["train"], f["forward"]) == (6 * 16 * 4 * 5, (800 + 320 + 2 * 16 * 8 * 5 + 800) / 4)
    o = _ns(train=train, data=data, online_dpo=_ns(max_completion_length=3, num_generations=4))
    f = C.flops_per_step("online_dpo", o, policy_params=10, rm_params=4)
    assert (f["train"], f["forward"], f["total"]) == (6 * 10 * 4 * 5, 800 + 320 + 400, 1200 + 1520)
    with pytest.raises(ValueError, match="unknown method"):
        C.flops_per_step("sft", o, policy_params=1, rm_params=1)


# ------------------------------------------------------------------------------------------- report
def test_summary_mean_std_and_table_by_hand():
    aspects, w = ["a", "b"], [2.0, 1.0]
    def row(ga, rm, wall):
        return {"ground_truth": {"a": ga, "b": 0.0}, "reward_model": {"a": rm, "b": 1.0},
                "wall_seconds": wall, "flops": {"total": 2e9}, "total_flops": 4e12}
    per_seed = {0: {"sft": {"ground_truth": {"a": 0.1, "b": 0.0}, "reward_model": {"a": 0.0, "b": 0.0}},
                    "grpo": row(0.4, 1.0, 10.0)},
                1: {"sft": {"ground_truth": {"a": 0.3, "b": 0.0}, "reward_model": {"a": 0.0, "b": 0.0}},
                    "grpo": row(0.6, 2.0, 30.0)}}
    s = CR.summarise(per_seed, aspects, w)
    assert s["grpo"]["ground_truth/a"] == pytest.approx({"mean": 0.5, "std": np.sqrt(0.02), "n": 2})
    assert s["grpo"]["rm_weighted"]["mean"] == pytest.approx(((2 * 1 + 1) + (2 * 2 + 1)) / 2)
    assert s["grpo"]["wall_seconds"] == pytest.approx({"mean": 20.0, "std": np.sqrt(200.0), "n": 2})
    assert CR.summarise({0: per_seed[0]}, aspects, w)["grpo"]["ground_truth/a"]["std"] is None
    table = CR.markdown_table(s, aspects, "ground_truth")
    assert "| sft | 0.200 ± 0.141 | 0.000 ± 0.000 | 0.000 ± 0.000 | - | - | - | - | - |" in table
    assert "| grpo | 0.500 ± 0.141 |" in table and "| 2.00 ± 0.00 | 4.00 ± 0.00 |" in table


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, message", [
    (["--from-demo", "/nonexistent/demo_s{seed}", "--seeds", "0"], "not a finished demo run"),
    (["--methods", "grpo,sac"], r"unknown method\(s\) \['sac'\]"),
    (["--seeds", "0,x"], "expected comma-separated integers"),
    (["--from-demo", "/nonexistent/demo", "--seeds", "0,1"], "placeholder"),
    (["--preset", "qwen2.5-0.5b", "--policy", "p", "--reward-model", "r", "--prompts", "/nonexistent/pku.jsonl"],
     "file not found"),
    (["--preset", "qwen2.5-0.5b", "--prompts", "x.jsonl"], "needs --policy, --reward-model"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    proc = _script("--out", str(tmp_path / "out"), *args, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


def test_existing_results_are_not_replaced(tmp_path):
    (tmp_path / "compare.json").write_text('{"keep": 1}')
    proc = _script("--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert json.loads((tmp_path / "compare.json").read_text()) == {"keep": 1}


# ------------------------------------------------------------------------------------------- Qwen path
def _tiny_checkpoints(tmp_path):
    """A tiny random Qwen2 policy (HF dir + the shipped tiny tokenizer) and a 4-aspect HF reward model;
    their parameter counts from the JAX modules themselves."""
    import jax
    from flax import nnx

    from grpojax.models import Qwen, QwenConfig, to_hf
    from grpojax.models.reward_model import RewardModel, reward_model_to_hf

    cfg = QwenConfig(vocab_size=384, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=8, tie_word_embeddings=True, max_position_embeddings=128)
    count = lambda m: int(sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param))))  # noqa: E731
    policy = Qwen(cfg, rngs=nnx.Rngs(0))
    to_hf(policy, str(tmp_path / "policy"))
    for f in os.listdir(os.path.join(ROOT, "configs", "data", "tiny_tokenizer")):
        shutil.copy(os.path.join(ROOT, "configs", "data", "tiny_tokenizer", f), tmp_path / "policy" / f)
    rm = RewardModel(cfg, 4, rngs=nnx.Rngs(1))
    reward_model_to_hf(rm, str(tmp_path / "rm"), pad_token_id=0)
    return count(policy), count(rm)


def test_qwen_preset_path_end_to_end_on_a_tiny_checkpoint(tmp_path):
    p_policy, p_rm = _tiny_checkpoints(tmp_path)
    pku = tmp_path / "pku.jsonl"
    with open(pku, "w") as f:  # the PKU-SafeRLHF columns; only 'prompt' is used
        for i, q in enumerate(["How do I bake bread?", "How do I fix a bike?", "How do I pick a lock?",
                               "How do I learn python?"]):
            f.write(json.dumps({"prompt": q, "response_0": "a", "response_1": "b", "better_response_id": i % 2,
                                "safer_response_id": 0, "is_response_0_safe": True}) + "\n")
    out = tmp_path / "out"
    proc = _script("--out", str(out), "--preset", "qwen2.5-0.5b", "--lora-rank", "4",
                   "--policy", str(tmp_path / "policy"), "--reward-model", str(tmp_path / "rm"),
                   "--prompts", str(pku), "--eval-prompts", "1", "--eval-samples", "2", "--set",
                   "train.steps=2", "train.batch_size=2", "train.warmup_steps=0", "data.max_prompt_length=16",
                   "data.max_length=20", "model.dtype=float32", "model.param_dtype=float32",
                   "grpo.num_generations=2", "grpo.max_completion_length=4",
                   "ppo.ppo_epochs=1", "ppo.num_mini_batches=1", "train.save_every=100", "train.log_every=1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[compare] seed 0: 4 sampled completions per method" in proc.stdout
    report = json.loads((out / "compare.json").read_text())
    assert report["completions_per_method"] == 4 and report["info"]["0"]["steps"] == {
        "grpo": 2, "ppo": 2, "online_dpo": 2}
    assert report["info"]["0"]["params"] == {"policy": p_policy, "reward_model": p_rm}
    seed0 = report["per_seed"]["0"]
    for m in ("sft", *C.METHODS):
        scores = seed0[m]["reward_model"]
        assert list(scores) == ["politeness", "meaningfulness", "actionability", "safety"]
        assert all(np.isfinite(v) for v in scores.values()) and seed0[m]["n"] == 2
    for m in C.METHODS:
        r = seed0[m]
        rows = [json.loads(x) for x in open(out / "seed0" / m / "metrics.jsonl")]
        assert [x["step"] for x in rows] == [1, 2]
        assert r["peak_rss_mib"] > 100 and r["cpu_seconds"] > 0 and r["wall_seconds"] >= r["train_loop_seconds"]
        assert r["total_flops"] == pytest.approx(2 * r["flops"]["total"])
        saved = (out / "seed0" / m / "config.yaml").read_text()
        assert "rank: 4" in saved and "prompts_train.jsonl" in saved
    # GRPO's training term by hand: 6 x P x 2 completions x (16 + 4) tokens
    assert seed0["grpo"]["flops"]["train"] == 6 * p_policy * 2 * 20
    assert (out / "compare.png").stat().st_size > 0 and "| online_dpo |" in (out / "compare.md").read_text()
    held = [json.loads(x)["prompt"] for x in open(out / "seed0" / "data" / "prompts_heldout.jsonl")]
    train = [json.loads(x)["prompt"] for x in open(out / "seed0" / "data" / "prompts_train.jsonl")]
    assert len(held) == 1 and len(train) == 3 and not set(held) & set(train)


def test_training_child_runs_in_the_callers_directory(tmp_path, monkeypatch):
    """``run_child`` from a directory other than the repository, with relative paths (as a user runs
    ``compare_methods.py --out runs/x`` from their own working directory): the child finds the job file
    and resolves relative paths the same way (here a missing base config -> exit 2 -> UserError naming it),
    instead of crashing on a job path looked up in the repository."""
    monkeypatch.chdir(tmp_path)
    job = {"method": "grpo", "base": "no_such_base.yaml", "overrides": [], "result": "out/result.json"}
    os.makedirs("out")
    with pytest.raises(UserError, match="grpo training stopped on bad input"):
        C.run_child(job, "out/job.json")
