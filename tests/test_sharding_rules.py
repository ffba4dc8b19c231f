"""Mesh factory, logical-axis rules (divisibility fallbacks, one use per mesh axis), batch / cache
layouts, per-host batch assembly, and the plan_memory CLI contract."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from grpojax import sharding as shd
from grpojax.config import MeshConfig
from grpojax.models import PRESETS, Qwen, QwenConfig, init_cache
from grpojax.sampling import ShardedCache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mesh_sizes_resolve_and_reject():
    assert shd.mesh_sizes(MeshConfig(data=-1, fsdp=2, tensor=2), 8) == (2, 2, 2)
    assert shd.mesh_sizes({"fsdp": -1}, 8) == (1, 8, 1)
    assert shd.mesh_sizes((1, 1, 8), 8) == (1, 1, 8)
    with pytest.raises(ValueError, match="unknown axis 'model'"):
        shd.mesh_sizes({"model": 2}, 8)
    with pytest.raises(ValueError, match="multiply to 4, but there are 8 devices"):
        shd.mesh_sizes((2, 2, 1), 8)
    with pytest.raises(ValueError, match="not divisible"):
        shd.mesh_sizes({"data": -1, "tensor": 3}, 8)
    mesh = shd.make_mesh(MeshConfig(data=2, fsdp=-1, tensor=2))
    assert mesh.axis_names == shd.AXES and dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    sub = shd.make_mesh((1, 2, 1), devices=jax.devices()[:2])
    assert sub.devices.size == 2


def test_logical_to_spec_fallbacks():
    mesh = shd.make_mesh((2, 2, 2))
    # q kernel [D, N, H]: embed->fsdp, q_heads->tensor, head_dim whole
    assert shd.logical_to_spec(("embed", "q_heads", "head_dim"), (32, 8, 4), mesh) == P("fsdp", "tensor", None)
    # 3 kv heads do not divide tensor=2 -> replicated along that dim
    assert shd.logical_to_spec(("embed", "kv_heads", "head_dim"), (32, 3, 4), mesh) == P("fsdp", None, None)
    # batch over (data, fsdp); 6 rows are divisible by data=2 but not by 4 -> keep the dividing prefix
    assert shd.logical_to_spec(("batch", None), (8, 5), mesh) == P(("data", "fsdp"), None)
    assert shd.logical_to_spec(("batch", None), (6, 5), mesh) == P("data", None)
    # a mesh axis is used once per array: two tensor-mapped dims -> the second stays whole
    assert shd.logical_to_spec(("vocab", "mlp"), (16, 16), mesh) == P("tensor", None)
    # size-1 mesh axes are never named
    one = shd.make_mesh((8, 1, 1))
    assert shd.logical_to_spec(("embed", "q_heads"), (32, 8), one) == P(None, None)
    with pytest.raises(ValueError, match="differ in rank"):
        shd.logical_to_spec(("embed",), (3, 4), mesh)


def test_real_presets_shard_along_rules():
    """Qwen2.5-0.5B on fsdp=4 x tensor=2: 14 q heads / 2 kv heads split over tensor, D over fsdp."""
    mesh = shd.make_mesh((1, 4, 2))
    from flax import nnx
    state = nnx.state(nnx.eval_shape(lambda: Qwen(PRESETS["qwen2.5-0.5b"])))
    d = shd.describe(shd.tree_shardings(state, mesh))
    assert d["['embed'].value"] == str(P("tensor", "fsdp"))
    assert d["['layers'][0]['attn']['q']['w'].value"] == str(P("fsdp", "tensor", None))
    assert d["['layers'][0]['attn']['k']['w'].value"] == str(P("fsdp", "tensor", None))
    assert d["['layers'][0]['mlp']['down']['w'].value"] == str(P("tensor", "fsdp"))
    assert d["['final_norm']['scale'].value"] == str(P("fsdp"))


def test_batch_and_cache_shardings():
    mesh = shd.make_mesh((2, 2, 2))
    batch = {"x_BT": np.zeros((8, 3), np.int32), "a_B": np.zeros(8, np.float32), "s": np.float32(1)}
    sh = shd.batch_shardings(batch, mesh)
    assert sh["x_BT"].spec == P(("data", "fsdp"), None) and sh["a_B"].spec == P(("data", "fsdp"))
    assert sh["s"].spec == P()
    cfg = QwenConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=2)
    cache = init_cache(cfg, 4, 6)
    csh = shd.cache_shardings(cache, mesh)
    assert csh[1]["k"].spec == P(("data", "fsdp"), None, "tensor", None)
    built = jax.jit(lambda: ShardedCache(cfg, mesh)(4, 6))()
    assert built[0]["v"].sharding.is_equivalent_to(csh[0]["v"], 4)
    assert built[0]["v"].addressable_shards[0].data.shape == (1, 6, 1, 2)


def test_global_batch_single_host_and_bytes():
    mesh = shd.make_mesh((4, 2, 1))
    assert shd.host_batch_slice(16) == slice(0, 16)
    local = {"x_BT": np.arange(24, dtype=np.int32).reshape(8, 3)}
    g = shd.global_batch(local, mesh)
    np.testing.assert_array_equal(np.asarray(g["x_BT"]), local["x_BT"])
    assert g["x_BT"].sharding.spec == P(("data", "fsdp"), None)
    assert shd.sharded_bytes_per_device(g) == 3 * 4  # one row of 3 int32 per device
    assert shd.maybe_initialize_distributed(MeshConfig()) is False


def test_plan_memory_cli_json():
    """The CLI compiles the real step on fake CPU devices and reports XLA's numbers as one JSON object."""
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "plan_memory.py"), "--model", "qwen2.5-0.5b",
           "--layers", "1", "--mesh", "fsdp=4", "--devices", "4", "--batch", "4", "--seq", "16",
           "--logprob-chunk", "8", "--json"]
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1} and out["devices"] == 4
    assert out["backend"].startswith("cpu (4 fake devices")
    assert out["flops_per_step"] > 0 and out["per_device_bytes"] > 0
    # arguments per device: bf16 params (2) + f32 AdamW mu, nu (8) = 10 bytes / param, 4 ways, + batch
    state_bytes = out["params"] * 10 / 4
    assert state_bytes <= out["argument_bytes"] <= state_bytes * 1.05 + 2**20, out
    assert out["alias_bytes"] >= 0.95 * state_bytes  # the donated state is reused for the output
