"""``grpojax.sharding.hlo``: collective bytes from HLO text, by hand and on the real sampler's program.

The sampler test is the reason the rollout mesh exists: in the FSDP training layout a decoded token moves
every layer's weights between devices (scanned layers: gathered inside the loop) or the whole model sits
gathered on every device (per-layer: XLA hoists the gathers out of the loop); on
``rollout_mesh(mesh, k)`` a token moves activations only.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grpojax import sharding as shd
from grpojax.models import Qwen, QwenConfig
from grpojax.sampling import DECODE_SCOPE, ShardedCache, lower_sample
from grpojax.sharding.hlo import collective_bytes, loop_collective_bytes

HLO = """HloModule jit_f, entry_computation_layout={()->f32[]}

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %add.1 = f32[] add(%x, %y)
}

%inner_body (p: (s32[], bf16[4])) -> (s32[], bf16[4]) {
  %p = (s32[], bf16[4]) parameter(0)
  %v = bf16[4]{0} get-tuple-element(%p), index=1
  %all-reduce.7 = bf16[4]{0} all-reduce(%v), channel_id=2, replica_groups={{0,1}}, to_apply=%add
  ROOT %t = (s32[], bf16[4]) tuple(%c, %all-reduce.7)
}

%inner_cond (p: (s32[], bf16[4])) -> pred[] {
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

%branch_small (q: f32[2]) -> f32[2] {
  ROOT %all-to-all.1 = f32[2]{0} all-to-all(%q), channel_id=4, replica_groups={{0,1}}, dimensions={0}
}

%branch_big (q: f32[2]) -> f32[16] {
  ROOT %all-gather.9 = f32[16]{0} all-gather(%q), channel_id=5, replica_groups={{0,1}}, dimensions={0}
}

%acs (w: f32[1,32]) -> f32[8,32] {
  ROOT %all-gather.20 = f32[8,32]{1,0} all-gather(%w), channel_id=7, dimensions={0}
}

%async_collective_fusion.3 (w: f32[1,32]) -> f32[8,32] {
  ROOT %all-gather.21 = f32[8,32]{1,0} all-gather(%w), channel_id=7, dimensions={0}
}

%acd (w: f32[1,32]) -> f32[8,32] {
  ROOT %all-gather.22 = f32[8,32]{1,0} all-gather(%w), channel_id=7, dimensions={0}
}

%outer_body (p: (s32[], f32[8,128])) -> (s32[], f32[8,128]) {
  %p = (s32[], f32[8,128]) parameter(0)
  %w = f32[1,128]{1,0} get-tuple-element(%p), index=1
  %all-gather.3 = f32[8,128]{1,0} all-gather(%w), channel_id=1, replica_groups={{0,1}}, dimensions={0}
  %ags = (f32[1,64]{1,0}, f32[8,64]{1,0}) all-gather-start(%w), channel_id=6, dimensions={0}
  %agd = f32[8,64]{1,0} all-gather-done(%ags)
  %while.5 = (s32[], bf16[4]) while(%init), condition=%inner_cond, body=%inner_body, metadata={op_name="jit(f)/scan/while"}, backend_config={"known_trip_count":{"n":"3"}}
  %cond.2 = f32[16]{0} conditional(%b, %q, %q), branch_computations={%branch_small, %branch_big}
  %async-collective-start = (f32[1,32]{1,0}, f32[8,32]{1,0}) fusion(%w), kind=kOutput, calls=%acs
  %fusion.3 = (f32[4]{0}, f32[8,32]{1,0}) fusion(%async-collective-start), kind=kOutput, calls=%async_collective_fusion.3
  %async-collective-done = f32[8,32]{1,0} fusion(%fusion.3), kind=kOutput, calls=%acd
  ROOT %t = (s32[], f32[8,128]) tuple(%c, %all-gather.3)
}

%outer_cond (p: (s32[], f32[8,128])) -> pred[] {
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

ENTRY %main (a: f32[1,128]) -> f32[] {
  %a = f32[1,128]{1,0} parameter(0)
  %all-reduce.1 = f32[1,128]{1,0} all-reduce(%a), channel_id=9, replica_groups={{0,1}}, to_apply=%add
  %while.1 = (s32[], f32[8,128]) while(%t0), condition=%outer_cond, body=%outer_body, metadata={op_name="jit(f)/decode_loop/while"}, backend_config={"known_trip_count":{"n":"7"}}
  ROOT %r = f32[] constant(0)
}
"""


def test_collective_bytes_of_the_whole_program_by_hand():
    got = collective_bytes(HLO)
    # all-gather: 8*128*4 + 8*64*4 (async start's output) + 16*4 + 8*32*4 (TPU's async collective fusion:
    # started, stepped and finished in three computations, counted once); all-reduce: 4*2 + 128*4; all-to-all: 2*4
    assert got == {"all-gather": 4096 + 2048 + 64 + 1024, "all-reduce": 8 + 512, "reduce-scatter": 0,
                   "all-to-all": 8, "collective-permute": 0}


def test_one_iteration_of_the_named_loop_by_hand():
    got = loop_collective_bytes(HLO, "decode_loop")
    # the outer body once (its own trip count is not applied), the inner scan x 3, the larger branch only
    assert got == {"all-gather": 4096 + 2048 + 64 + 1024, "all-reduce": 3 * 8, "reduce-scatter": 0,
                   "all-to-all": 0, "collective-permute": 0}
    with pytest.raises(ValueError, match="no while loop named 'prefill/while'"):
        loop_collective_bytes(HLO, "prefill")


CFG = QwenConfig(vocab_size=128, hidden_size=128, intermediate_size=512, num_layers=2, num_heads=8,
                 num_kv_heads=8, head_dim=16, scan_layers=True)


def _decode_step_bytes(mesh):
    """Collective bytes per device and decoded token of the sampler's program for ``CFG`` on ``mesh``."""
    graphdef, state = nnx.split(Qwen(CFG, rngs=nnx.Rngs(0)))
    abstract = shd.with_shardings(jax.eval_shape(lambda: state), shd.tree_shardings(state, mesh))
    prompt = shd.abstract_batch({"ids": ((16, 8), jnp.int32)}, mesh)["ids"]
    text = lower_sample(graphdef, abstract, prompt, prompt, max_new_tokens=4,
                        cache_fn=ShardedCache(CFG, mesh)).compile().as_text()
    return sum(loop_collective_bytes(text, DECODE_SCOPE).values())


def test_rollout_mesh_decodes_without_moving_the_weights():
    """Scanned layers on fsdp=8: every decoded token all-gathers at least the decoder's weights (one
    layer's slices, L times). On the rollout mesh (same 8 devices as tensor=8) a token moves activations
    only (the logits' vocabulary split, attention / MLP partial sums): under a tenth of that. With the
    weights replicated (rollout tensor=1: data=8) nothing moves."""
    train = shd.make_mesh({"fsdp": 8})
    decoder_bytes = 4 * CFG.num_layers * CFG.hidden_size * (2 * 8 * 16 + 2 * 8 * 16 + 3 * CFG.intermediate_size)
    fsdp = _decode_step_bytes(train)
    tensor = _decode_step_bytes(shd.rollout_mesh(train, 8))
    data = _decode_step_bytes(shd.rollout_mesh(train, 1))
    print(f"per decoded token: fsdp=8 {fsdp} B, rollout tensor=8 {tensor} B, rollout data=8 {data} B "
          f"(decoder weights {decoder_bytes} B)")
    assert fsdp >= 7 / 8 * decoder_bytes
    assert tensor < 0.1 * fsdp
    assert data == 0


def test_rollout_mesh_shapes_and_errors():
    train = shd.make_mesh({"data": 2, "fsdp": 4})
    assert shd.rollout_mesh(train, None) is train
    for k, want in ((-1, (1, 1, 8)), (8, (1, 1, 8)), (2, (4, 1, 2)), (1, (8, 1, 1))):
        m = shd.rollout_mesh(train, k)
        assert tuple(m.shape.values()) == want and list(m.devices.flat) == list(train.devices.flat)
    with pytest.raises(ValueError, match="rollout tensor=3 must be -1 or divide the 8 devices"):
        shd.rollout_mesh(train, 3)
    one = shd.make_mesh({"data": 1}, devices=jax.devices()[:1])
    assert shd.rollout_mesh(one, 4) is one  # a 7B preset (rollout_tensor: 4) run on one device


def _copy_cost(plain, src, dst):
    """(collective bytes, temp bytes) per device of the program resharding ``plain`` from ``src`` to ``dst``."""
    c = jax.jit(lambda s: s, out_shardings=shd.tree_shardings(plain, dst)).lower(
        shd.with_shardings(plain, shd.tree_shardings(plain, src))).compile()
    return sum(collective_bytes(c.as_text()).values()), c.memory_analysis().temp_size_in_bytes


def test_copy_to_rollout_goes_through_all_tensor_and_moves_less_than_a_direct_reshard():
    """fsdp=8 -> rollout tensor=4 (data=2): XLA's direct reshard replicates each weight and slices it
    ("involuntary full rematerialization"); through tensor=8 first the copy moves about half the bytes with
    a fifth of the temporaries. The values arrive unchanged on the rollout mesh; all-tensor and all-data
    rollout meshes are one hop."""
    train = shd.make_mesh({"fsdp": 8})
    roll = shd.rollout_mesh(train, 4)
    hops = shd.rollout_hops(train, roll)
    assert [dict(h.shape) for h in hops] == [{"data": 1, "fsdp": 1, "tensor": 8}, {"data": 2, "fsdp": 1, "tensor": 4}]
    assert len(shd.rollout_hops(train, shd.rollout_mesh(train, 8))) == 1
    assert len(shd.rollout_hops(train, shd.rollout_mesh(train, 1))) == 1 and shd.rollout_hops(train, train) == []
    _, state = nnx.split(Qwen(CFG, rngs=nnx.Rngs(0)))
    plain = jax.eval_shape(lambda: state)
    direct = _copy_cost(plain, train, roll)
    via, src, temp = 0, train, 0
    for h in hops:
        b, t = _copy_cost(plain, src, h)
        via, temp, src = via + b, max(temp, t), h
    print(f"fsdp=8 -> tensor=4: direct {direct[0]} B moved, {direct[1]} B temp; via tensor=8 {via} B, {temp} B")
    assert via < 0.6 * direct[0] and temp < 0.3 * direct[1]
    placed = jax.device_put(state, shd.tree_shardings(state, train))
    copied = shd.copy_to_rollout(placed, train, roll)
    for a, b in zip(jax.tree.leaves(copied), jax.tree.leaves(state)):
        assert a.sharding.mesh is roll
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
