"""scripts/plan_memory.py and scripts/memory_table.py: the fit-and-check walk to the largest batch, the
rendered table, the analytic model FLOPs against XLA's own count, and the JSON contract of a real compile.

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


def test_plan_sampler_in_the_training_and_the_rollout_layout(backend_env):
    """--kind sample: the bf16 weights are the arguments (1/4 each on fsdp=4, 1/2 on rollout tensor=2), and
    per decoded token the scanned fsdp layout all-gathers at least the decoder's weights while the rollout
    layout moves a small fraction of that."""
    common = ["--model", "qwen2.5-0.5b", "--layers", "2", "--devices", "4", "--mesh", "fsdp=4", "--batch", "8",
              "--seq", "32", "--kind", "sample", "--scan-layers", "--json"]
    fsdp = pm.plan(pm.parse_args(common))
    tensor = pm.plan(pm.parse_args(common + ["--rollout-tensor", "2"]))
    assert fsdp["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1} and tensor["mesh"] == {"data": 2, "fsdp": 1, "tensor": 2}
    assert fsdp["model_flops_per_step"] is None and fsdp["rollout_tensor"] is None and tensor["rollout_tensor"] == 2
    weights = 2 * fsdp["params"]
    assert weights / 4 <= fsdp["argument_bytes"] < weights / 4 + 2**20
    assert weights / 2 <= tensor["argument_bytes"] < weights / 2 + 2**20
    D, F, NH, KH = 896, 4864, 14 * 64, 2 * 64
    decoder = 2 * 2 * (2 * D * NH + 2 * D * KH + 3 * D * F)  # bf16, 2 layers
    per_token = {k: sum(r["decode_step_collective_bytes"].values()) for k, r in (("fsdp", fsdp), ("tensor", tensor))}
    assert per_token["fsdp"] >= decoder and per_token["tensor"] < 0.1 * per_token["fsdp"], per_token
    # full fine-tuning: bf16 params + two float32 Adam moments, sharded 4 ways, resident beside the rollout
    assert fsdp["train_state_bytes_per_device"] == tensor["train_state_bytes_per_device"]
    assert 10 * fsdp["params"] / 4 <= fsdp["train_state_bytes_per_device"] < 10 * fsdp["params"] / 4 + 2**20
    # copying the weights onto the rollout mesh: at least the half each chip keeps; nothing in the training layout
    assert fsdp["rollout_copy_collective_bytes"] == 0 and tensor["rollout_copy_collective_bytes"] >= weights / 2


def test_plan_reports_compiler_oom_as_does_not_fit(monkeypatch, capsys):
    """libtpu rejects a program larger than HBM at compile time; plan() turns that into fits=False with the
    compiler's line (other compile errors still raise), and memory_table renders it."""
    import types

    import jax

    from grpojax import sharding as shd

    mesh = shd.make_mesh({"fsdp": -1}, devices=jax.devices()[:1])
    msg = "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required (15.92G) exceeds (15.75G)."

    def fake_build(args, devices, exc=RuntimeError(f"INTERNAL: x\n{msg}\nmore")):  # noqa: B008
        def compile_():
            raise exc
        return PRESETS["qwen2.5-7b"], mesh, lambda: types.SimpleNamespace(compile=compile_), 32, 10, 10, {}

    monkeypatch.setattr(pm, "setup_backend", lambda args: (jax.devices()[:1], "tpu AOT compile (v5e-16)", 2**34))
    monkeypatch.setattr(pm, "build", fake_build)
    argv = ["--model", "qwen2.5-7b", "--batch", "32", "--devices", "1"]
    out = pm.plan(pm.parse_args(argv))
    assert out["fits"] is False and out["per_device_bytes"] is None and out["compile_error"] == msg
    assert pm.main(argv) == 0 and f"DOES NOT FIT: the compiler rejected the program: {msg}" in capsys.readouterr().out
    monkeypatch.setattr(pm, "build", lambda a, d: fake_build(a, d, ValueError("shapes do not match")))
    with pytest.raises(ValueError, match="shapes do not match"):
        pm.plan(pm.parse_args(argv))


GIB = 2**30


def _rec(shape, model, lora, b, nbytes, seq=1024, error=None, kind=None):
    return {"type": kind or mt.POINT, "shape": shape, "model": model, "lora_rank": lora, "seq": seq, "layers": 28,
            "b": b, "devices": mt.shape_devices(shape), "hbm_bytes": mt.shape_hbm(shape),
            "per_device_bytes": nbytes, "temp_bytes": 0, "argument_bytes": 0,
            "backend": "tpu AOT compile (v5p-8, TPU v5)", "compile_seconds": 10.0, "compile_error": error}


def _walk(memory, hbm):
    """Drives ``next_b`` against a memory model ``b -> bytes or None`` (None = the compiler refuses)."""
    pts, order = {}, []
    while (b := mt.next_b(pts, hbm)) is not None:
        order.append(b)
        assert len(order) < 20, order
        pts[b] = {"per_device_bytes": memory(b), "hbm_bytes": hbm}
    return pts, order


def test_walk_on_an_affine_memory_needs_the_fit_and_two_checks():
    # 2 GiB fixed + 1 GiB per sequence, budget 0.9 * 95 = 85.5 GiB -> 83 per device
    pts, order = _walk(lambda b: 2 * GIB + b * GIB, 95 * GIB)
    assert order == [2, 4, 83, 84] and mt.compiled_max(pts) == 83
    assert mt.fit(pts, 95 * GIB) == {"fixed_bytes": 2 * GIB, "per_seq_bytes": GIB, "predicted_seqs": 83}


def test_walk_corrects_a_wrong_prediction_by_compiling():
    budget = 0.9 * 95 * GIB
    # the line through b = 2, 4 says 83, but past b = 60 each sequence costs 3x: secant steps down
    mem = lambda b: 2 * GIB + b * GIB + max(0, b - 60) * 2 * GIB  # noqa: E731
    pts, order = _walk(mem, 95 * GIB)
    assert order == [2, 4, 83, 54, 65, 67, 68]
    assert mt.compiled_max(pts) == max(b for b in range(1, 100) if mem(b) <= budget) == 67
    # cheaper than the line past b = 40: steps up
    mem = lambda b: 2 * GIB + b * GIB - max(0, b - 40) * GIB // 2  # noqa: E731
    pts, order = _walk(mem, 95 * GIB)
    assert order == [2, 4, 83, 113, 127, 128]
    assert mt.compiled_max(pts) == max(b for b in range(1, 200) if mem(b) <= budget) == 127


def test_walk_when_nothing_fits_or_the_compiler_refuses():
    pts, order = _walk(lambda b: 20 * GIB + b * GIB, 16 * GIB)  # v5e: the state alone is over budget
    assert order == [2, 1] and mt.compiled_max(pts) == 0  # 2 over budget: no compile at 4
    pts, order = _walk(lambda b: 13 * GIB + b * GIB, 16 * GIB)  # budget 14.4 GiB: 1 fits, 2 does not
    assert order == [2, 1] and mt.compiled_max(pts) == 1
    assert mt.fit(pts, 16 * GIB) == {"fixed_bytes": 13 * GIB, "per_seq_bytes": GIB, "predicted_seqs": 1}
    # the compiler refuses b = 4 (RESOURCE_EXHAUSTED -> None bytes): bisection between 2 and 4
    pts, order = _walk(lambda b: None if b > 2 else 5 * GIB + b * GIB, 16 * GIB)
    assert order == [2, 4, 3] and mt.compiled_max(pts) == 2
    # libtpu refuses a program from b = 145 on while XLA's bytes would still fit (v5p-16 7B full): the
    # fitting points' line meets the budget below the refused b, so it guides the next compile
    mem = lambda b: None if b > 150 else int((12 + 0.1 * b if b <= 4 else 10 + 0.55 * b) * GIB)  # noqa: E731
    pts, order = _walk(mem, 95 * GIB)
    assert order == [2, 4, 734, 369, 186, 95, 137, 138] and mt.compiled_max(pts) == 137
    # refusals far below the line's prediction: bisection, not a crawl down from the line
    pts, order = _walk(lambda b: None if b > 40 else 2 * GIB + b * GIB, 95 * GIB)
    assert order == [2, 4, 83, 43, 23, 33, 38, 40, 41] and mt.compiled_max(pts) == 40


def test_walk_gives_up_after_max_checks_without_inventing_a_max():
    pts, order = _walk(lambda b: 2 * GIB + b * GIB if b < 30 else (None if b % 2 else 90 * GIB), 95 * GIB)
    assert len(order) <= len(mt.SEQS) + mt.MAX_CHECKS
    assert mt.compiled_max(pts) in (None, 29)


def test_worker_resumes_from_the_cache_and_keeps_going_after_a_failing_row(monkeypatch, capsys, tmp_path):
    calls = []

    def fake_plan(args):
        calls.append((args.model, args.lora_rank, args.batch, args.scan_layers))
        if args.lora_rank:
            raise RuntimeError("boom")
        b = args.batch // 8
        return {"per_device_bytes": 4 * GIB + b * GIB, "temp_bytes": 1, "argument_bytes": 2, "layers": 28,
                "backend": "cpu (8 fake devices)", "compile_seconds": 1.0, "compile_error": None}

    monkeypatch.setattr(pm, "plan", fake_plan)
    cache = tmp_path / "c.jsonl"
    cache.write_text(json.dumps(_rec("h100x8", "qwen2.5-7b", 0, 2, 6 * GIB)) + "\n")  # b = 2 already done
    with pytest.raises(SystemExit, match=r"failed rows \[\('qwen2.5-7b', 16\)\]"):
        mt.worker("h100x8", 1024, None, [("qwen2.5-7b", 16), ("qwen2.5-7b", 0)], str(cache))
    out, err = capsys.readouterr()
    # 0.9 * 80e9 = 67.06 GiB: (67.06 - 4) // 1 = 63 per device
    assert calls == [("qwen2.5-7b", 16, 16, True), ("qwen2.5-7b", 0, 32, True), ("qwen2.5-7b", 0, 63 * 8, True),
                     ("qwen2.5-7b", 0, 64 * 8, True)]
    assert "h100x8 qwen2.5-7b lora=16 b=2 FAILED: RuntimeError: boom" in err
    recs = [json.loads(x) for x in out.splitlines()]
    assert [r["b"] for r in recs] == [4, 63, 64] and recs[0]["per_device_bytes"] == 8 * GIB


def test_cache_renders_rows_pending_refusals_and_the_unrolled_comparison(tmp_path, capsys):
    recs = [_rec("v5p-8", "qwen2.5-7b", 16, b, 2 * GIB + b * GIB) for b in (2, 4, 83)]
    # the same compiles before the activation pins: compared, never in the table
    recs += [_rec("v5p-8", "qwen2.5-7b", 16, b, nb, kind=mt.UNPINNED) for b, nb in ((2, 4 * GIB), (4, 7 * GIB))]
    recs.append(_rec("v5p-8", "qwen2.5-0.5b", 0, 2, GIB, kind=mt.UNPINNED))
    recs.append(_rec("v5p-8", "qwen2.5-7b", 16, 84, None, error="RESOURCE_EXHAUSTED: Ran out of memory on HBM."))
    recs.append(_rec("v5p-8", "qwen2.5-14b", 0, 2, 9 * GIB))  # unfinished row: shown, pending
    # a row out of compiles without a bracket (bytes not monotonic in b): its largest fit, marked
    recs += [_rec("v5p-16", "qwen2.5-7b", 0, b, nb * GIB) for b, nb in
             ((2, 12.7), (4, 13.3), (136, 82.6), (138, 90.1), (139, 86.9), (144, 89.6))]
    recs += [_rec("v5p-16", "qwen2.5-7b", 0, b, None, error="RESOURCE_EXHAUSTED: HBM") for b in (268, 202, 169, 152)]
    recs.append(_rec("v5p-8", "qwen2.5-7b", 16, 2, 1, seq=2048))  # another seq is ignored
    recs.append({"type": "validation", "shape": "v5p-8", "model": "qwen2.5-7b", "lora_rank": 16, "seq": 1024,
                 "b": 2, "batch": 8, "per_device_bytes": 5 * GIB, "compile_seconds": 3000.0})
    recs.append({"type": "point", "shape": "v5p-8", "model": "qwen2.5-0.5b", "lora_rank": 0, "seq": 1024,
                 "layers": 1, "b": 2, "per_device_bytes": 1})  # the old 1-2 layer method: ignored
    cache = tmp_path / "cache.jsonl"
    cache.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"type": "sca\n')  # a line cut by a kill
    out = tmp_path / "plan.md"
    assert mt.main(["--render-only", "--cache", str(cache), "--out", str(out)]) == 0
    assert f"{cache}:{len(recs) + 1}: skipping unreadable line" in capsys.readouterr().err
    text = out.read_text()
    (row,) = [x for x in text.splitlines() if x.startswith("| v5p-8 | 4 | qwen2.5-7b")]
    assert row == "| v5p-8 | 4 | qwen2.5-7b | LoRA r=16 | 2.00 | 1024 | 332 | 332 | 85.00 | 4 | tpu AOT compile | 40 |"
    (row,) = [x for x in text.splitlines() if x.startswith("| v5p-8 | 4 | qwen2.5-14b")]
    assert row == "| v5p-8 | 4 | qwen2.5-14b | full | - | - | - | - | - | 1 | tpu AOT compile | 10 |"
    (row,) = [x for x in text.splitlines() if x.startswith("| v5p-16 | 8 | qwen2.5-7b")]
    assert "| >= 1088 (n.b.) | - | 10 |" in row
    pending = next(x for x in text.splitlines() if x.startswith("Not finished"))
    assert "v5p-8 qwen2.5-14b full" in pending and "v5p-8 qwen2.5-7b LoRA" not in pending
    assert "v5p-8 qwen2.5-0.5b full" in pending  # old-method points do not count
    assert "v5p-16 qwen2.5-7b full" not in pending  # done, though not bracketed
    assert "v5p-8 qwen2.5-7b LoRA r=16 batch 336: `RESOURCE_EXHAUSTED: Ran out of memory on HBM`" in text
    assert "| v5p-8 | qwen2.5-7b | LoRA r=16 | 8 | 5.000 | 4.000 | -20.0% | 3000 | 10 |" in text
    pinning = text[text.index("## Before and after pinning"):text.index("## Scanned vs unrolled")]
    assert "| v5p-8 | qwen2.5-7b | LoRA r=16 | 16 | 7.00 | 6.00 | 10 | 10 |" in pinning
    assert "| v5p-8 | qwen2.5-7b | LoRA r=16 | 8 | 4.00 | 4.00 | 10 | 10 |" in pinning
    assert "qwen2.5-0.5b" not in pinning  # compiled one way only


def test_cli_rejects_unknown_names(tmp_path):
    with pytest.raises(SystemExit, match=r"unknown \['v9-8'\]"):
        mt.main(["--only", "v9-8", "--cache", str(tmp_path / "c.jsonl")])
    with pytest.raises(SystemExit, match=r"unknown \['lora8'\]"):
        mt.main(["--tunings", "lora8", "--cache", str(tmp_path / "c.jsonl")])


def test_rollout_layouts_renders_compiled_refused_and_pending_points(tmp_path):
    """scripts/rollout_layouts.py: a cached compile renders its GiB and per-token MiB, a libtpu refusal
    renders as does-not-fit, a point without a record as pending; --render-only compiles nothing."""
    import rollout_layouts as rl

    base = {"hbm_bytes_per_device": 16 * GIB, "compile_seconds": 12.5, "fits": True, "lora_rank": 16,
            "train_state_bytes_per_device": GIB // 4, "rollout_copy_collective_bytes": 3 * 2**30,
            "rollout_copy_temp_bytes": GIB // 2}
    recs = [{**base, "model": "qwen2.5-7b", "topology": "v5e-8", "batch": 64, "rollout_tensor": 4, "scan_layers": True,
             "compile_error": None, "per_device_bytes": int(4.65 * GIB),
             "decode_step_collective_bytes": {"all-gather": 9 * 2**20, "all-reduce": 27 * 2**20, "all-to-all": 0}},
            {**base, "model": "qwen2.5-7b", "topology": "v5e-8", "batch": 64, "rollout_tensor": 1, "scan_layers": True,
             "compile_error": "RESOURCE_EXHAUSTED: Ran out of memory", "per_device_bytes": None, "fits": False}]
    cache = tmp_path / "c.jsonl"
    cache.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "t.md"
    assert rl.main(["--render-only", "--cache", str(cache), "--out", str(out)]) == 0
    rows = {ln.split(" | ")[3]: ln for ln in out.read_text().splitlines()
            if ln.startswith("| qwen2.5-7b | v5e-8 | 64 |")}
    assert ("| 4.65 (16) | 0.25 -> 4.90 | 36.0 MiB (all-gather 9.0, all-reduce 27.0) | 3,072 MiB (0.50 GiB temp) "
            "| 12.5 |") in rows["rollout_tensor=4"]
    assert "does not fit (16): libtpu refused it" in rows["rollout_tensor=1"]
    assert "not compiled yet" in rows["training (fsdp)"]


def test_mlp_chunks_long_sequences_same_values_less_memory(monkeypatch):
    """``MLP`` over a sequence longer than ``MLP_CHUNK_TOKENS``: chunk by chunk (last chunk padded) it gives
    the unchunked output and gradients (float32), and the compiled backward holds one chunk's ``[B, c, F]``
    intermediates instead of the whole sequence's."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from grpojax.models import qwen

    cfg = PRESETS["qwen2.5-0.5b"].replace(hidden_size=32, intermediate_size=512)
    mlp = qwen.MLP(cfg, dtype=jnp.float32, param_dtype=jnp.float32, keys=qwen.KeyStream(nnx.Rngs(0)))
    graphdef, state = nnx.split(mlp)

    def loss(st, x_BTD, chunk):
        monkeypatch.setattr(qwen, "MLP_CHUNK_TOKENS", chunk)  # read at trace time
        return jnp.sum(jnp.sin(nnx.merge(graphdef, st)(x_BTD)))

    x_BTD = jax.random.normal(jax.random.key(1), (2, 1000, 32), jnp.float32)
    step = {c: jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2).lower(state, x_BTD, c).compile()
            for c in (128, 4096)}  # 8 chunks (the last one 104 real tokens) vs one pass
    got, want = step[128](state, x_BTD), step[4096](state, x_BTD)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    temp = {c: s.memory_analysis().temp_size_in_bytes for c, s in step.items()}
    whole_F = 2 * 1000 * 512 * 4  # one [B, T, F] float32 intermediate
    assert whole_F < temp[4096] and 4 * temp[128] < temp[4096], temp


def test_plan_mlp_chunk_flag_is_set_while_tracing_and_restored(monkeypatch):
    """``--mlp-chunk N`` sets ``MLP_CHUNK_TOKENS`` for the trace of the step (0: no chunking), then puts the
    default back; without the flag the default stays."""
    import jax

    from grpojax import sharding as shd
    from grpojax.models import qwen

    seen = []
    mesh = shd.make_mesh({"fsdp": -1}, devices=jax.devices()[:1])

    def fake_build(args, devices):
        def lower():
            seen.append(qwen.MLP_CHUNK_TOKENS)
            raise RuntimeError("RESOURCE_EXHAUSTED: traced")
        return PRESETS["qwen2.5-7b"], mesh, lower, 8, 10, 10, {}

    monkeypatch.setattr(pm, "setup_backend", lambda args: (jax.devices()[:1], "cpu", 2**34))
    monkeypatch.setattr(pm, "build", fake_build)
    default = qwen.MLP_CHUNK_TOKENS
    for flag in (["--mlp-chunk", "512"], ["--mlp-chunk", "0"], []):
        out = pm.plan(pm.parse_args(["--model", "qwen2.5-7b", "--batch", "8", "--devices", "1", *flag]))
        assert out["compile_error"] == "RESOURCE_EXHAUSTED: traced" and qwen.MLP_CHUNK_TOKENS == default
    assert seen == [512, sys.maxsize, default]


def test_long_plans_render_per_sequence_slope_and_growth():
    """scripts/long_plans.py: per-sequence bytes are bytes(2 per chip) - bytes(1 per chip) of the same seq,
    the growth is the temporaries over the half-length row's; a libtpu refusal renders with its temporaries."""
    import long_plans as lp

    def rec(variant, seq, per_chip, nbytes, error=None):
        return {"type": lp.KIND, "row": "lora-v5e-8", "variant": variant, "seq": seq, "per_chip": per_chip,
                "per_device_bytes": nbytes, "temp_bytes": None if nbytes is None else nbytes // 2,
                "compile_seconds": 100.0, "compile_error": error}

    refused = "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required (49.06G) exceeds (15.75G)"
    recs = [rec("splash", 8192, 1, 8 * GIB), rec("splash", 8192, 2, 11 * GIB), rec("splash", 16384, 1, 13 * GIB),
            rec("splash", 16384, 2, 19.3 * GIB), rec("einsum", 16384, 1, None, refused)]
    lines = {ln.split(" | ")[0] + " " + ln.split(" | ")[1]: ln for ln in lp.section_lines(recs) if ln.startswith("| ")}
    assert lines["| splash 8,192"] == "| splash | 8,192 | 65,536 | 8.00 | 4.00 | - | yes | 3,072 | 100 |"
    assert lines["| splash 16,384"] == "| splash | 16,384 | 131,072 | 13.00 | 6.50 | 1.62 | yes | 6,451 | 100 |"
    assert "refused by libtpu (49.06G temporaries) | - | - | - | - | 100 |" in lines["| einsum 16,384"]


@pytest.mark.parametrize("remat", ["full", "block"])
def test_remat_keeps_the_attention_offset_static_so_splash_is_not_routed_to_blockwise(monkeypatch, remat):
    """Under ``jax.checkpoint`` (remat) a training forward's attention still gets the Python-int offset 0:
    ``resolve`` keeps ``splash`` (a traced offset would send it to blockwise, silently, in every training
    plan). Traced only (``eval_shape``), the TPU kernel replaced by the einsum."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from grpojax.models import Qwen
    from grpojax.models import attention as A

    seen, resolve = set(), A.resolve
    monkeypatch.setattr(A, "resolve", lambda impl, q, k, offset=0, platform=None: seen.add(
        (type(offset).__name__, resolve(impl, q, k, offset, platform="tpu"))) or resolve(impl, q, k, offset, "tpu"))
    monkeypatch.setattr(A, "attend_splash", lambda *a, **kw: A.attend_einsum(*a))
    cfg = PRESETS["qwen2.5-0.5b"].replace(num_layers=2, hidden_size=32, intermediate_size=64, num_heads=4,
                                          num_kv_heads=2, head_dim=8, vocab_size=64, scan_layers=True)
    graphdef, state = nnx.split(Qwen(cfg, remat=remat, attention="splash", rngs=nnx.Rngs(0)))
    jax.eval_shape(jax.grad(lambda st: nnx.merge(graphdef, st)(jnp.ones((1, 64), jnp.int32)).sum()), state)
    assert seen == {("int", "splash")}, seen
