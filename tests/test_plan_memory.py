"""scripts/plan_memory.py and scripts/memory_table.py: the depth / batch extrapolation, the rendered
table, the analytic model FLOPs against XLA's own count, and the JSON contract of a real compile.

(The subprocess CLI test with ``--json`` lives in tests/test_sharding_rules.py; these run in-process.)
"""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import memory_table as mt  # noqa: E402
import plan_memory as pm  # noqa: E402

from grpojax.models import PRESETS  # noqa: E402


def _points(m0, m1, c0, c1):
    return {(L, b): m0 + m1 * L + (c0 + c1 * L) * b for L, b in mt.POINTS}


def test_fit_row_recovers_bilinear_model_and_max_batch_by_hand():
    # fixed(L=4) = 10 + 5*4 = 30, per_seq(L=4) = 2 + 1*4 = 6, budget 0.9*100 = 90 -> (90-30)/6 = 10 per device
    row = mt.fit_row(_points(10, 5, 2, 1), num_layers=4, hbm=100, devices=8)
    assert row["coefficients"] == {"m0": 10, "m1": 5, "c0": 2, "c1": 1}
    assert (row["fixed_bytes"], row["per_seq_bytes"]) == (30, 6)
    assert (row["max_seqs_per_device"], row["max_batch"]) == (10, 80)
    # one byte less of HBM budget and the 10th sequence no longer fits
    assert mt.fit_row(_points(10, 5, 2, 1), num_layers=4, hbm=100 - 1 / 0.9, devices=8)["max_seqs_per_device"] == 9
    # the state alone over budget -> 0, not a negative batch
    assert mt.fit_row(_points(100, 5, 2, 1), num_layers=4, hbm=100, devices=8)["max_batch"] == 0


def test_fit_row_names_missing_points():
    pts = _points(1, 1, 1, 1)
    del pts[(2, mt.SEQS[1])]
    with pytest.raises(ValueError, match=rf"missing points \[\(2, {mt.SEQS[1]}\)\]"):
        mt.fit_row(pts, num_layers=4, hbm=100, devices=1)


def _point(shape, model, lora, L, b, nbytes, seq=1024):
    return {"type": "point", "shape": shape, "model": model, "lora_rank": lora, "seq": seq, "layers": L, "b": b,
            "devices": mt.shape_devices(shape), "per_device_bytes": nbytes, "temp_bytes": 0,
            "argument_bytes": 0, "backend": "tpu AOT compile (v5p-8, TPU v5)", "compile_seconds": 10.0}


def test_cache_to_markdown_rows_pending_and_validation(tmp_path, capsys):
    gib = 2**30
    pts = _points(2 * gib, 1 * gib, 256 * 2**20, 64 * 2**20)
    cache = tmp_path / "cache.jsonl"
    recs = [_point("v5p-8", "qwen2.5-7b", 16, L, b, v) for (L, b), v in pts.items()]
    recs.append(_point("v5p-8", "qwen2.5-14b", 0, 1, 1, gib))  # an incomplete row stays pending
    recs.append(_point("v5p-8", "qwen2.5-7b", 16, 1, 1, 5, seq=2048))  # another seq is ignored
    fixed, per_seq = 2 * gib + 28 * gib, 256 * 2**20 + 28 * 64 * 2**20  # 30 GiB, 2 GiB
    b_max = int((0.9 * 95 * gib - fixed) // per_seq)  # 27
    recs.append({"type": "validation", "shape": "v5p-8", "model": "qwen2.5-7b", "lora_rank": 16, "seq": 1024,
                 "b": b_max, "batch": 4 * b_max, "per_device_bytes": int(0.98 * (fixed + per_seq * b_max)),
                 "predicted_bytes": fixed + per_seq * b_max, "hbm_bytes": 95 * gib,
                 "backend": "tpu", "compile_seconds": 99.0})
    recs.append(dict(recs[-1], b=b_max + 1, batch=4 * (b_max + 1), per_device_bytes=None,
                     compile_error="RESOURCE_EXHAUSTED: Ran out of memory on HBM"))
    cache.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"type": "poi\n')  # a line cut by a kill
    out = tmp_path / "plan.md"
    assert mt.main(["--render-only", "--cache", str(cache), "--out", str(out)]) == 0
    assert f"{cache}:{len(recs) + 1}: skipping unreadable line" in capsys.readouterr().err
    text = out.read_text()
    row = [x for x in text.splitlines() if x.startswith("| v5p-8 | 4 | qwen2.5-7b")]
    assert row == [f"| v5p-8 | 4 | qwen2.5-7b | LoRA r=16 | 30.00 | 2048 | {4 * b_max} | tpu AOT compile | 40 |"]
    assert b_max == 27
    assert "v5p-8 qwen2.5-14b full" in text and "v5p-8 qwen2.5-7b LoRA," not in text
    assert "| v5p-8 | qwen2.5-14b | full | 1 | 1 | 1.000 | 10 |" in text  # the incomplete row's one point
    val = [x for x in text.splitlines() if x.startswith(f"| v5p-8 | qwen2.5-7b | LoRA r=16 | {4 * b_max} |")]
    assert len(val) == 1 and "| +2.0% | yes | 99 |" in val[0], val
    assert f"| v5p-8 | qwen2.5-7b | LoRA r=16 | {4 * b_max + 4} | " in text and "| out of memory (o) | - | no |" in text
    assert "v5p-8 qwen2.5-7b batch 112: `RESOURCE_EXHAUSTED: Ran out of memory on HBM`" in text


def test_cli_rejects_unknown_names_and_validate_without_row(tmp_path):
    with pytest.raises(SystemExit, match=r"unknown \['v9-8'\]"):
        mt.main(["--only", "v9-8", "--cache", str(tmp_path / "c.jsonl")])
    with pytest.raises(SystemExit, match="no fitted row"):
        mt.main(["--validate", "v5e-8:qwen2.5-0.5b:0", "--cache", str(tmp_path / "c.jsonl"),
                 "--out", str(tmp_path / "o.md")])
    with pytest.raises(SystemExit, match="expected shape:model:lora_rank"):
        mt.main(["--validate", "v5e-8:qwen2.5-0.5b", "--cache", str(tmp_path / "c.jsonl")])


def test_model_flops_by_hand():
    cfg = PRESETS["qwen2.5-0.5b"]
    D, F, V, L, NH, KH = 896, 4864, 151936, 24, 14 * 64, 2 * 64
    layer = 2 * D * NH + 2 * D * KH + 3 * D * F
    full = 6 * L * layer * 3 * 100 + 12 * L * NH * 100**2 * 3 + 6 * V * D * 3 * 40
    assert pm.model_flops(cfg, seqs=3, seq=100, completion_len=40, lora=False) == full
    lora = 4 * L * layer * 3 * 100 + 12 * L * NH * 100**2 * 3 + 4 * V * D * 3 * 40
    assert pm.model_flops(cfg, seqs=3, seq=100, completion_len=40, lora=True) == lora


@pytest.fixture
def backend_env(monkeypatch):
    """plan() writes XLA_FLAGS / JAX_PLATFORMS for a fresh process; restore them after the test. The backend is
    started first, under conftest's 8 devices: were plan() the first to touch it, its ``--devices 4`` would
    leave every later test in this process with 4 devices."""
    import jax

    assert jax.device_count() == 8
    for k in ("XLA_FLAGS", "JAX_PLATFORMS"):
        if k in os.environ:
            monkeypatch.setenv(k, os.environ[k])
        else:
            monkeypatch.delenv(k, raising=False)


def test_plan_grpo_json_contract_and_flops_match_xla_without_loops(backend_env):
    """No block remat and one log-prob chunk (no while loop for XLA to count once): XLA's FLOP count of the
    whole compiled step agrees with the analytic MFU count plus the one recompute the step does by design,
    the forward of the ``jax.checkpoint``-ed LM-head chunk in the backward (2 V D per completion token);
    the rest is softmax, norms and AdamW."""
    args = pm.parse_args(["--model", "qwen2.5-0.5b", "--layers", "1", "--devices", "4", "--mesh", "fsdp=4",
                          "--batch", "8", "--seq", "64", "--logprob-chunk", "32", "--remat", "none", "--json"])
    out = pm.plan(args)
    json.dumps(out)  # one JSON object
    assert out["backend"].startswith("cpu (4 fake devices") and out["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
    assert out["per_device_bytes"] == (out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"]
                                       + out["temp_bytes"]) > 0
    D, F, V, NH, KH = 896, 4864, 151936, 14 * 64, 2 * 64  # tied embedding; q, k, v biases; two RMSNorms + final
    assert out["params"] == out["trainable_params"] == V * D + 2 * D * NH + 2 * D * KH + 3 * D * F + NH + 2 * KH + 3 * D
    head_recompute = 2 * V * D * 8 * 32  # 8 sequences x 32 completion tokens
    ratio = out["flops_per_step"] / (out["model_flops_per_step"] + head_recompute)
    assert 0.97 < ratio < 1.10, (ratio, out)


def test_plan_dpo_lora_state_bytes(backend_env):
    """DPO + LoRA: the argument bytes are the bf16 frozen base + f32 adapters with two f32 moments, sharded 4 ways."""
    out = pm.plan(pm.parse_args(["--model", "qwen2.5-0.5b", "--layers", "1", "--devices", "4", "--batch", "4",
                                 "--seq", "16", "--kind", "dpo", "--lora-rank", "4", "--logprob-chunk", "8"]))
    assert out["kind"] == "dpo" and out["lora_rank"] == 4 and out["flops_per_step"] > 0
    n_lora = out["trainable_params"]
    state = (2 * (out["params"] - n_lora) + 12 * n_lora) / 4
    assert state <= out["argument_bytes"] <= 1.05 * state + 2**20, out
    assert out["model_flops_per_step"] == pm.model_flops(PRESETS["qwen2.5-0.5b"].replace(num_layers=1), 8, 16, 8, True)


def test_worker_keeps_going_after_a_failing_row(monkeypatch, capsys):
    """A row whose compile raises is reported (and its remaining points skipped); the next row still runs,
    and the worker exits non-zero naming the failed row."""
    calls = []

    def fake_plan(args):
        calls.append((args.model, args.lora_rank, args.layers, args.batch))
        if args.lora_rank:
            raise RuntimeError("boom")
        return {"per_device_bytes": 100 * args.layers + args.batch, "temp_bytes": 1, "argument_bytes": 2,
                "backend": "cpu (8 fake devices)", "compile_seconds": 1.0}

    monkeypatch.setattr(pm, "plan", fake_plan)
    todo = [("qwen2.5-7b", 16, 1, 1), ("qwen2.5-7b", 16, 1, 2), ("qwen2.5-7b", 0, 2, 1)]
    with pytest.raises(SystemExit, match=r"failed rows \[\('qwen2.5-7b', 16\)\]"):
        mt.worker("h100x8", 1024, None, todo)
    out, err = capsys.readouterr()
    assert calls == [("qwen2.5-7b", 16, 1, 8), ("qwen2.5-7b", 0, 2, 8)]  # 2nd LoRA point skipped
    assert "h100x8 qwen2.5-7b lora=16 L=1 b=1 FAILED: RuntimeError: boom" in err
    (rec,) = [json.loads(x) for x in out.splitlines()]
    assert (rec["layers"], rec["b"], rec["per_device_bytes"], rec["devices"]) == (2, 1, 208, 8)


def test_plan_reports_compiler_oom_as_does_not_fit(monkeypatch, capsys):
    """libtpu rejects a program larger than HBM at compile time; plan() turns that into fits=False with the
    compiler's line (other compile errors still raise), and memory_table renders it."""
    import types

    import jax

    from grpojax import sharding as shd

    mesh = shd.make_mesh({"fsdp": -1}, devices=jax.devices()[:1])
    msg = "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required (15.92G) exceeds (15.75G)."

    def fake_build(args, devices, exc=RuntimeError(f"INTERNAL: x\n{msg}\nmore")):
        def compile_():
            raise exc
        jitted = types.SimpleNamespace(lower=lambda *a: types.SimpleNamespace(compile=compile_))
        return PRESETS["qwen2.5-7b"], mesh, jitted, (), 32, 10, 10

    monkeypatch.setattr(pm, "setup_backend", lambda args: (jax.devices()[:1], "tpu AOT compile (v5e-16)", 2**34))
    monkeypatch.setattr(pm, "build", fake_build)
    argv = ["--model", "qwen2.5-7b", "--batch", "32", "--devices", "1"]
    out = pm.plan(pm.parse_args(argv))
    assert out["fits"] is False and out["per_device_bytes"] is None and out["compile_error"] == msg
    assert pm.main(argv) == 0 and f"DOES NOT FIT: the compiler rejected the program: {msg}" in capsys.readouterr().out
    monkeypatch.setattr(pm, "build", lambda a, d: fake_build(a, d, ValueError("shapes do not match")))
    with pytest.raises(ValueError, match="shapes do not match"):
        pm.plan(pm.parse_args(argv))


def _rendered_row(tmp_path, shape, model, rank, pts, prefix):
    """The table row of ``shape`` / ``model`` that ``memory_table --render-only`` writes from the cached ``pts``."""
    cache = tmp_path / "cache.jsonl"
    cache.write_text("".join(json.dumps(_point(shape, model, rank, L, b, v)) + "\n" for (L, b), v in pts.items()))
    out = tmp_path / "plan.md"
    assert mt.main(["--render-only", "--cache", str(cache), "--out", str(out)]) == 0
    (row,) = [x for x in out.read_text().splitlines() if x.startswith(f"{prefix} {model}")]
    return row


def test_rows_below_the_fitted_range_are_marked(tmp_path):
    """A max below the fit's smallest per-device batch (SEQS[0]) is an extrapolation downwards: marked (e)."""
    gib = 2**30
    # v5e-8: 16 GiB, budget 14.4 GiB; fixed 12 GiB + 2 GiB per sequence -> 1 sequence per chip, 8 in all
    row = _rendered_row(tmp_path, "v5e-8", "qwen2.5-14b", 0, _points(12 * gib, 0, 2 * gib, 0), "| v5e-8 | 8 |")
    assert "| full (e) | 12.00 | 2048 | 8 |" in row, row


def test_rows_whose_per_sequence_cost_falls_with_depth_get_no_batch(tmp_path):
    """c1 < 0 so steep that the extrapolated cost per sequence is negative: (g), no max batch invented."""
    gib = 2**30
    pts = _points(1 * gib, 0, 1 * gib, -gib // 4)  # per sequence at 24 layers: 1 - 6 < 0 GiB
    row = _rendered_row(tmp_path, "v5p-8", "qwen2.5-0.5b", 16, pts, "| v5p-8 | 4 |")
    assert "| LoRA r=16 (g) | 1.00 | - | - |" in row, row


def test_full_depth_fit_from_two_validation_compiles(tmp_path):
    """Two full-depth compiles at b = 2 and 4 sequences per chip give fixed + per-sequence bytes without any
    depth extrapolation: (6 - 4) / 2 = 1 GiB per sequence, 4 - 2 = 2 GiB fixed; (85.5 - 2) // 1 = 83 per chip."""
    gib = 2**30
    pts = _points(2 * gib, 0, 1 * gib, 0)
    val = {"type": "validation", "shape": "v5p-8", "model": "qwen2.5-0.5b", "lora_rank": 16, "seq": 1024,
           "hbm_bytes": 95 * gib, "backend": "tpu", "compile_seconds": 5.0, "predicted_bytes": 0}
    recs = [_point("v5p-8", "qwen2.5-0.5b", 16, L, b, v) for (L, b), v in pts.items()]
    recs += [dict(val, b=2, batch=8, per_device_bytes=4 * gib), dict(val, b=4, batch=16, per_device_bytes=6 * gib),
             dict(val, b=9, batch=36, per_device_bytes=None, compile_error="RESOURCE_EXHAUSTED")]
    cache = tmp_path / "cache.jsonl"
    cache.write_text("".join(json.dumps(r) + "\n" for r in recs))
    (fit,) = mt.full_depth_fits([r for r in recs if r["type"] == "validation"])
    assert (fit["b1"], fit["b2"], fit["fixed_bytes"], fit["per_seq_bytes"]) == (2, 4, 2 * gib, gib)
    assert fit["max_batch"] == 83 * 4
    out = tmp_path / "plan.md"
    assert mt.main(["--render-only", "--cache", str(cache), "--out", str(out)]) == 0
    assert "| v5p-8 | qwen2.5-0.5b | LoRA r=16 | 2, 4 | 2.00 | 1024 | 332 |" in out.read_text()


def test_rows_whose_fixed_part_falls_with_depth_get_no_batch(tmp_path):
    """m1 < 0 (fixed memory falling with depth) means the 1-2 layer points are not affine: (f), no max batch."""
    gib = 2**30
    pts = _points(40 * gib, -gib, gib, 0)  # fixed at 48 layers: 40 - 48 < 0 GiB
    row = _rendered_row(tmp_path, "v5p-8", "qwen2.5-14b", 16, pts, "| v5p-8 | 4 |")
    assert "| LoRA r=16 (f) | -8.00 | 1024 | - |" in row, row
