"""The shared-prompt decode (``cache_layout="shared"``) against the dense one and the einsum attention.

* ``shared_prompt_attention`` (prompt keys once per group + generated keys by chunks, merged by log-sum-exp)
  equals the einsum attention over the G-times repeated prompt keys followed by the generated ones, for
  several filled lengths, ragged last chunks, padded prompts, GQA, per-layer and stacked caches; NaN in
  the chunks past the filled ones never reaches the output (they are not read);
* ``sample`` with the shared layout (the default for ``Qwen``) gives the dense layout's tokens, masks and
  log-probs in float32, with G = 3, left / right / middle padded prompts and EOS ids that stop some rows:
  greedy (per-layer cache) and top-k / top-p sampling with the same key (stacked ``scan_layers`` cache).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grpojax.models import Qwen, QwenConfig, decode_attention
from grpojax.models import qwen as qwen_module
from grpojax.models.attention import attend_einsum
from grpojax.sampling import sample

EOS_SAMPLED = [3, 17, 40]
CFG = QwenConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                 num_kv_heads=2, head_dim=8)


def _reference(q_BTNH, pk_bQKH, pv_bQKH, seg_bQ, k_BCKH, v_BCKH, filled):
    """Einsum attention over ``[repeat(prompt, G), generated]`` keys, query t at key Q + filled + t."""
    B, b, Q = q_BTNH.shape[0], pk_bQKH.shape[0], pk_bQKH.shape[1]
    rep = lambda x: jnp.repeat(x, B // b, axis=0)  # noqa: E731
    k_BSKH = jnp.concatenate([rep(pk_bQKH), k_BCKH], axis=1)
    v_BSKH = jnp.concatenate([rep(pv_bQKH), v_BCKH], axis=1)
    kv_seg_BS = jnp.concatenate([rep(seg_bQ), jnp.ones((B, k_BCKH.shape[1]), jnp.int32)], axis=1)
    q_seg_BT = jnp.ones(q_BTNH.shape[:2], jnp.int32)
    return attend_einsum(q_BTNH, k_BSKH, v_BSKH, q_seg_BT, kv_seg_BS, Q + filled)


@pytest.mark.parametrize("T, C, chunk", [(1, 11, 4), (2, 8, 3)])
def test_shared_prompt_attention_matches_einsum(T, C, chunk):
    b, G, Q, N, K, H, L = 2, 3, 6, 4, 2, 8, 3
    B = b * G
    r = np.random.default_rng(C)
    f32 = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)  # noqa: E731
    q, pk, pv = f32(B, T, N, H), f32(b, Q, K, H), f32(b, Q, K, H)
    seg = jnp.asarray([[0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 0, 0]], jnp.int32)  # left- and middle-padded prompts
    k_LBCKH, v_LBCKH = f32(L, B, C, K, H), f32(L, B, C, K, H)
    attend = jax.jit(decode_attention.shared_prompt_attention, static_argnames="chunk")
    for filled in range(C - T + 1):
        # slots in chunks wholly past the last one a query reads hold NaN: reading them would poison the output
        first_unread = -(-(filled + T) // min(chunk, C)) * min(chunk, C)
        poison = jnp.arange(C)[None, None, :, None, None] >= first_unread
        v_nan = jnp.where(poison, jnp.nan, v_LBCKH)
        ref = _reference(q, pk, pv, seg, k_LBCKH[1], v_LBCKH[1], filled)
        # keys / values past filled + t are masked in the reference; they must not change the result
        got = attend(q, pk, pv, seg, k_LBCKH[1], v_nan[1], filled, chunk=chunk)
        np.testing.assert_allclose(got, ref, rtol=2e-6, atol=2e-6, err_msg=f"filled={filled}")
        stacked = attend(q, pk, pv, seg, k_LBCKH, v_nan, filled, layer=jnp.int32(1), chunk=chunk)
        np.testing.assert_allclose(stacked, ref, rtol=2e-6, atol=2e-6, err_msg=f"stacked, filled={filled}")


def _prompts():
    """Four prompts: left-, right-, middle-padded and full rows (ids 1..63, pad 0)."""
    toks = np.array([[0, 0, 0, 7, 21, 3, 9], [40, 2, 33, 0, 0, 0, 0], [5, 0, 18, 0, 60, 61, 0],
                     [11, 12, 13, 14, 15, 16, 17]], np.int32)
    return toks, (toks != 0).astype(np.int32)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 4 generated slots (read when the sampler is traced), so 10 new tokens take 3 chunks."""
    monkeypatch.setattr(decode_attention, "DECODE_CHUNK", 4)


def _assert_same(shared, dense):
    np.testing.assert_array_equal(shared.completion_tokens_BC, dense.completion_tokens_BC)
    np.testing.assert_array_equal(shared.completion_mask_BC, dense.completion_mask_BC)
    np.testing.assert_array_equal(shared.truncated_B, dense.truncated_B)
    np.testing.assert_array_equal(shared.prompt_tokens_BT, dense.prompt_tokens_BT)
    assert int(shared.num_steps) == int(dense.num_steps)
    np.testing.assert_allclose(shared.completion_logp_BC, dense.completion_logp_BC, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("small_chunks")
def test_greedy_with_eos_equals_dense(monkeypatch):
    model = Qwen(CFG, rngs=nnx.Rngs(4))  # per-layer cache (the sampled test below: stacked)
    traced = []  # the default layout of a Qwen must go through the shared-prompt kernel
    kernel = qwen_module.shared_prompt_attention
    monkeypatch.setattr(qwen_module, "shared_prompt_attention", lambda *a, **k: traced.append(1) or kernel(*a, **k))
    toks, mask = _prompts()
    kw = dict(max_new_tokens=10, greedy=True, num_samples=3, pad_id=0)
    free = sample(model, toks, mask, jax.random.key(0), eos_ids=[64, 65], cache_layout="dense", **kw)
    assert np.all(free.truncated_B)  # ids 64, 65 are outside the vocabulary: no row stops
    ends = [int(free.completion_tokens_BC[0, 2]), int(free.completion_tokens_BC[9, 5])]
    dense = sample(model, toks, mask, jax.random.key(0), eos_ids=ends, cache_layout="dense", **kw)
    assert not traced
    shared = sample(model, toks, mask, jax.random.key(0), eos_ids=ends, **kw)  # Qwen's default: shared
    assert traced
    assert not np.all(dense.truncated_B) and not np.all(dense.completion_mask_BC)  # some rows stopped early
    _assert_same(shared, dense)


@pytest.mark.usefixtures("small_chunks")
def test_sampled_with_eos_equals_dense_with_the_same_key():
    model = Qwen(CFG.replace(scan_layers=True), rngs=nnx.Rngs(4))  # stacked [L, ...] cache
    toks, mask = _prompts()
    kw = dict(max_new_tokens=10, temperature=0.9, top_k=20, top_p=0.95, num_samples=3, eos_ids=EOS_SAMPLED)
    dense = sample(model, toks, mask, jax.random.key(3), cache_layout="dense", **kw)
    shared = sample(model, toks, mask, jax.random.key(3), cache_layout="shared", **kw)
    assert len({tuple(np.asarray(row)) for row in dense.completion_tokens_BC}) > 6  # samples differ
    assert 0 < int(dense.truncated_B.sum()) < 12  # some rows stopped at an EOS, some did not
    _assert_same(shared, dense)
