"""The Pallas TPU splash attention kernel behind :func:`grpojax.models.attention.attention`.

``jax.experimental.pallas.ops.tpu.splash_attention`` computes, per example, ``softmax(q k^T + mask) v`` over
``[N, T, H]`` queries and ``[K, S, H]`` keys / values (grouped-query heads natively: ``make_splash_mha`` with
``K < N``), with a static block-sparse mask (here ``CausalMask(offset)``: tiles wholly above the diagonal are
never computed) and-ed with ``SegmentIds`` (q and kv ids must be equal), its own fused forward and backward
kernels. The mapping from our mask (``grpojax.models.attention`` docstring):

* causal + offset -> ``CausalMask((T, S), offset)``; the offset must be a Python int (the mask is compiled
  into the kernel's block tables); a traced offset (KV cache) is refused here and routed to blockwise by
  the dispatcher.
* segments (padding 0, packed examples 1, 2, ...) -> ``SegmentIds`` unchanged.
* the kernel does not scale the scores: q is multiplied by ``H ** -0.5`` first.
* the kernel's tiles are multiples of 128 along T and S: T and S are padded to a multiple of the block with
  one extra segment id (``_PAD``) on both sides, so padded queries read padded keys (never a real one) and
  every row has a key; the padding is dropped from the output.
* batch: ``vmap`` over rows; on a mesh of more than one device the kernel runs inside ``jax.shard_map``
  with the batch (and, when q and kv heads split the same way, the heads) split as the activations are
  (``grpojax.sharding.rules``); a split sequence axis is refused.

Any head dimension the kernel accepts works (it pads H to 128 lanes internally: Qwen's 64 and 128 both
compile for TPU, ``tests/models/test_attention.py``). On CPU the kernel runs through Pallas' interpreter
(``interpret=True``): exact but slow, for small parity tests only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from grpojax.models.attention_blockwise import backend
from grpojax.types import Array

BLOCK = 512  # default tile length along T and S (a multiple of 128)
_LANES = 128
_PAD = 2**30  # segment id of the tile padding


def _tile(length: int, block: int) -> tuple[int, int]:
    """(tile, padded length): the tile is ``block`` or the length rounded up to 128 when shorter."""
    tile = min(block, -(-length // _LANES) * _LANES)
    return tile, -(-length // tile) * tile


@functools.lru_cache(maxsize=64)
def _kernel(heads: int, Tp: int, Sp: int, offset: int, bq: int, bk: int, interpret: bool):
    """A splash kernel for one example (cached: building its block tables runs NumPy over the mask)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    mask = sm.MultiHeadMask([sm.CausalMask((Tp, Sp), offset=offset) for _ in range(heads)])
    # separate dq and dk/dv backward kernels: the fused one writes one partial dq per key block
    # ([S / block_kv, heads, T, H], summed afterwards: quadratic in the length) and did not fit Qwen2.5-7B
    # at 32k tokens on a v5e chip (docs/memory_plan.md)
    sizes = sk.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq, block_kv_dkv=bk,
                          block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk, use_fused_bwd_kernel=False)
    with jax.ensure_compile_time_eval():  # concrete block tables, safe to cache across traces
        return sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def _local(q_BTNH, k_BSKH, v_BSKH, qseg_BT, kseg_BS, *, offset: int, block: int, interpret: bool):
    """Splash over the rows and heads held locally (padded, scaled, transposed to heads-major)."""
    from jax.experimental.pallas.ops.tpu.splash_attention.splash_attention_kernel import SegmentIds

    B, T, N, H = q_BTNH.shape
    S = k_BSKH.shape[1]
    bq, Tp = _tile(T, block)
    bk, Sp = _tile(S, block)
    pad = lambda x, n, v=0: jnp.pad(x, [(0, 0), (0, n - x.shape[1])] + [(0, 0)] * (x.ndim - 2),  # noqa: E731
                                    constant_values=v)
    q_BNTH = pad(q_BTNH * jnp.asarray(H ** -0.5, q_BTNH.dtype), Tp).transpose(0, 2, 1, 3)
    k_BKSH = pad(k_BSKH.astype(q_BTNH.dtype), Sp).transpose(0, 2, 1, 3)
    v_BKSH = pad(v_BSKH.astype(q_BTNH.dtype), Sp).transpose(0, 2, 1, 3)
    seg = SegmentIds(q=pad(qseg_BT.astype(jnp.int32), Tp, _PAD), kv=pad(kseg_BS.astype(jnp.int32), Sp, _PAD))
    kernel = _kernel(N, Tp, Sp, offset, bq, bk, interpret)
    out_BNTH = jax.vmap(kernel)(q_BNTH, k_BKSH, v_BKSH, seg)
    return out_BNTH.transpose(0, 2, 1, 3)[:, :T]


def attend_splash(q_BTNH: Array, k_BSKH: Array, v_BSKH: Array, q_segment_BT: Array, kv_segment_BS: Array,
                  offset: int = 0, *, block: int = BLOCK, interpret: bool | None = None) -> Array:
    """Splash attention (module docstring); same arguments and result as ``attend_einsum``.

    ``block``: tile length along T and S (a multiple of 128; shorter sequences use one tile).
    ``interpret``: run the kernel in Pallas' interpreter (default: when the target backend is not a TPU,
    ``attention_blockwise.backend``).
    """
    if not isinstance(offset, int):
        raise ValueError("attention: splash needs a static (Python int) offset; a KV-cache forward with a "
                         "traced cache position uses blockwise")
    if block % _LANES:
        raise ValueError(f"attention: splash block={block} is not a multiple of {_LANES}")
    if interpret is None:
        interpret = backend() != "tpu"
    run = functools.partial(_local, offset=offset, block=block, interpret=interpret)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return run(q_BTNH, k_BSKH, v_BSKH, q_segment_BT, kv_segment_BS)
    from grpojax.sharding.rules import ACTIVATION_AXES, logical_to_spec

    q_spec = logical_to_spec(ACTIVATION_AXES["q_BTNH"], q_BTNH.shape, mesh)
    k_spec = logical_to_spec(ACTIVATION_AXES["k_BTKH"], k_BSKH.shape, mesh)
    if q_spec[1] is not None or k_spec[1] is not None:
        raise ValueError("attention: splash does not support a sequence axis split over devices")
    heads = q_spec[2] if q_spec[2] == k_spec[2] else None  # split heads only when q and kv split alike
    q_spec, k_spec = P(q_spec[0], None, heads, None), P(k_spec[0], None, heads, None)
    seg_spec = P(q_spec[0], None)
    return jax.shard_map(run, mesh=mesh, in_specs=(q_spec, k_spec, k_spec, seg_spec, seg_spec),
                         out_specs=q_spec, check_vma=False)(q_BTNH, k_BSKH, v_BSKH, q_segment_BT,
                                                             kv_segment_BS)
