"""benchmarks/accelerator.py: the formulas of the prepared accelerator check, and the whole suite at toy
shapes on the CPU (``--suite --tiny``) in worker processes that cannot import ``datasets`` (the GPU image
has none), so the suite does not rot while no GPU is at hand."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import accelerator as A  # noqa: E402

from grpojax.models import PRESETS, QwenConfig  # noqa: E402

BLOCKED = ("datasets", "tensorboardX", "wandb", "trl")  # not in a bare CUDA + JAX + torch image


def test_known_peaks_longest_match():
    assert A.known_peaks("NVIDIA H100 80GB HBM3") == (989e12, 3.35e12)
    assert A.known_peaks("NVIDIA H100 PCIe") == (756e12, 2.0e12)
    assert A.known_peaks("NVIDIA H200") == (989e12, 4.8e12)
    assert A.known_peaks("NVIDIA GH200 480GB") == (989e12, 4.0e12)
    assert A.known_peaks("NVIDIA A100-SXM4-40GB") == (312e12, 1.555e12)
    assert A.known_peaks("TPU v5 lite") == (197e12, 0.819e12)
    assert A.known_peaks("cpu") is None


def test_flops_and_floor_by_hand():
    cfg = PRESETS["qwen2.5-7b"].__dict__
    D, F, V, L, NH, KH = 3584, 18944, 152064, 28, 28 * 128, 4 * 128
    layer = 2 * D * NH + 2 * D * KH + 3 * D * F
    rows, P, C = 3, 60, 40
    T = P + C
    full = A.update_flops(cfg, rows=rows, prompt=P, completion=C)
    assert full["flops"] == 6 * L * layer * rows * T + 6 * V * D * rows * C + 6 * L * rows * T * T * NH
    assert full["flops_palm"] == full["flops"] + 6 * L * rows * T * T * NH
    r = 16
    lora = A.update_flops(cfg, rows=rows, prompt=P, completion=C, lora_rank=r)
    adapters = L * r * (2 * (D + NH) + 2 * (D + KH) + 3 * (D + F))
    assert lora["flops"] == (4 * L * layer * rows * T + 4 * V * D * rows * C + 6 * L * rows * T * T * NH
                             + 6 * adapters * rows * T)
    # one row, prompt 5, 3 new tokens: prefill, then 2 decoding steps reading the weights and 6, then 7 cached tokens
    kv = L * 2 * KH * 2
    W = 2 * (L * layer + V * D)
    fl = A.sampler_floor(cfg, rows=1, prompt=5, new=3, peak_flops=1e15, bandwidth=1e12)
    prefill = max((2 * (L * layer * 5 + V * D) + 2 * L * 25 * NH) / 1e15, (W + 5 * kv) / 1e12)
    assert fl["prefill_floor_s"] == pytest.approx(prefill)
    assert fl["decode_floor_s"] == pytest.approx((2 * W + (6 + 7) * kv) / 1e12)


def test_block_weights_count_the_models_own_kernels():
    from flax import nnx

    from grpojax.models import Qwen

    cfg = QwenConfig(**A.TINY_LARGE)
    model = nnx.eval_shape(lambda: Qwen(cfg))
    kernels = sum(v.size for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param)) if path[-1] == "w")
    assert A.block_weights(cfg.__dict__) == kernels


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("accel")
    block = out / "blocked"
    for name in BLOCKED:
        (block / name).mkdir(parents=True)
        (block / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed on the GPU image')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "accelerator.py"), "--suite", "--tiny",
                           "--out", str(out), "--groups", "device,large,hf", "--max-seconds", "600"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "suite.json") as f:
        return json.load(f), out


def test_tiny_suite_runs_every_part(tiny_suite):
    suite, out = tiny_suite
    logs = {g: (out / f"log_{g}.txt").read_text() for g in suite["groups"]}
    for grp, res in suite["groups"].items():
        assert res["_group"]["status"] == "ok", logs[grp]
        errors = {k: v["error"] for k, v in res.items() if "error" in v}
        assert not errors, logs[grp]
    dev, large, hf = (suite["groups"][g] for g in ("device", "large", "hf"))
    parity = {k: r for k, r in dev.items() if k.startswith("parity")}
    assert all(r.get("ok") or "skipped" in r for r in parity.values()), parity
    assert parity["parity_einsum_float32"]["ok"] and parity["parity_einsum_bfloat16"]["ok"]
    assert 0 < large["mfu_16"]["mfu"] and large["mfu_16"]["mode"] == "full"
    assert large["sampler_b4"]["tokens_per_s"] > 0 and large["sampler_b4"]["fraction_of_floor"] > 0
    assert large["grpo_step"]["tokens"] == 4 * (8 + 8)  # 2 prompts x G 2, prompt + generated tokens
    assert large["grpo_step"]["tokens_per_s_per_gpu"] > 0
    assert hf["generate_b4"]["tokens_per_s"] > 0
    md = (out / "suite.md").read_text()
    assert "large.grpo_step" in md and "hf.generate_b4" in md and "ours / HF" in md


def test_a_part_that_fails_is_recorded_and_the_next_runs(tmp_path):
    import accelerator_jax as J

    res = J.Results(str(tmp_path / "r.json"), seconds=3600, budgets={"slow": 7200, "mfu": 1})
    res.part("bad", lambda: {"x": 1 / 0})
    res.part("good", lambda: {"x": 1})
    res.part("slow_part", lambda: {"x": 1})  # budget 7200 s > the hour left: skipped
    res.part("mfu_1024", lambda: {"x": 1})   # "mfu" budget: runs
    with open(tmp_path / "r.json") as f:
        data = json.load(f)
    assert data["bad"]["error"].startswith("ZeroDivisionError") and data["good"]["x"] == 1
    assert "skipped" in data["slow_part"] and data["mfu_1024"]["x"] == 1


def test_a_group_past_its_budget_is_killed_and_recorded(tmp_path):
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(A.plan(True)))
    res = A.run_group("device", str(plan_path), str(tmp_path), 1, dict(os.environ, PYTHONPATH=ROOT))
    assert res["_group"]["status"].startswith("killed at its time budget")


def test_parity_flags_an_attention_that_ignores_the_segments(monkeypatch):
    import accelerator_device as J
    import jax.numpy as jnp

    right = J.parity("einsum", jnp.float32, B=2, T=24, N=4, K=2, H=16)
    assert right["ok"]
    real = J.attention
    monkeypatch.setattr(J, "attention", lambda q, k, v, qs, ks, **kw: real(q, k, v, qs > 0, ks > 0, **kw))
    wrong = J.parity("einsum", jnp.float32, B=2, T=24, N=4, K=2, H=16)
    assert not wrong["ok"] and wrong["fwd_err"] > 1e-2
