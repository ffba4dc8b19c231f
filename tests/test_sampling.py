"""Sampling strategies against float64 NumPy references, and the decode loop on a toy cached model.

The toy model (``ToyLM``) follows the ``grpojax.models.Qwen`` call / cache interface but its logits are
an explicit formula of (last token, RoPE position, number of visible cache slots, sum of the visible
token ids), so an independent NumPy re-implementation predicts every greedy token and every log-prob:
it checks positions (cumsum(mask) - 1), slot masks, cache writes and reads, EOS / pad handling.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from grpojax import sampling

V = 11
MAX_POS = 64


# ----------------------------------------------------------------------------- strategies (pure functions)

def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def np_top_k(z, k):
    z = np.asarray(z, np.float64)
    kth = np.sort(z, -1)[:, ::-1][:, k - 1 : k]
    return np.where(z >= kth, z, -np.inf)


def np_top_p(z, p):
    z = np.asarray(z, np.float64)
    out = np.full_like(z, -np.inf)
    for b in range(z.shape[0]):
        order = np.argsort(-z[b], kind="stable")
        probs = np.exp(np_log_softmax(z[b][None])[0])[order]
        mass = 0.0
        kept = []
        for rank, v in enumerate(order):
            if rank == 0 or mass < p:
                kept.append(v)
            mass += probs[rank]
        threshold = min(z[b, kept])
        out[b] = np.where(z[b] >= threshold, z[b], -np.inf)
    return out


def test_temperature_hand_computed():
    z = jnp.array([[1.0, 2.0, -4.0]])
    np.testing.assert_allclose(sampling.apply_temperature(z, 0.5), [[2.0, 4.0, -8.0]])
    assert sampling.apply_temperature(z.astype(jnp.bfloat16), 2.0).dtype == jnp.float32


def test_top_k_hand_computed_keeps_ties():
    z = jnp.array([[3.0, 1.0, 2.0, 2.0, 0.0]])
    out = np.asarray(sampling.top_k_filter(z, 2))
    np.testing.assert_array_equal(np.isfinite(out), [[True, False, True, True, False]])
    np.testing.assert_array_equal(sampling.top_k_filter(z, 5), z)
    with pytest.raises(ValueError, match="top_k"):
        sampling.top_k_filter(z, 0)


def test_top_p_hand_computed():
    # probs 0.5, 0.3, 0.2 (log-probs as logits)
    z = jnp.log(jnp.array([[0.3, 0.5, 0.2]]))
    keep = lambda p: np.isfinite(np.asarray(sampling.top_p_filter(z, p))).tolist()  # noqa: E731
    assert keep(0.4) == [[False, True, False]]   # 0 < 0.4 keeps the top; 0.5 >= 0.4 stops
    assert keep(0.5) == [[False, True, False]]
    assert keep(0.6) == [[True, True, False]]    # mass before rank 1 is 0.5 < 0.6
    assert keep(0.81) == [[True, True, True]]
    assert keep(1.0) == [[True, True, True]]


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 9), st.floats(0.05, 1.0), st.floats(0.3, 3.0))
def test_filters_match_numpy(seed, k, p, tau):
    z = np.random.default_rng(seed).normal(size=(3, 9)) * 2
    z32 = jnp.asarray(z, jnp.float32)
    scaled = np.asarray(z32, np.float64) / np.float64(np.float32(tau))
    got_k = np.asarray(sampling.filter_logits(z32, temperature=tau, top_k=k))
    np.testing.assert_array_equal(np.isfinite(got_k), np.isfinite(np_top_k(scaled, k)))
    got_p = np.asarray(sampling.filter_logits(z32, temperature=tau, top_p=p))
    np.testing.assert_array_equal(np.isfinite(got_p), np.isfinite(np_top_p(scaled, p)))
    both = np.asarray(sampling.filter_logits(z32, temperature=tau, top_k=k, top_p=p))
    np.testing.assert_array_equal(np.isfinite(both), np.isfinite(np_top_p(np_top_k(scaled, k), p)))
    finite = np.isfinite(both)
    np.testing.assert_allclose(both[finite], scaled[finite], rtol=1e-6)
    logp = sampling.token_logprobs(z32, jnp.array([0, 4, 8]), tau)
    np.testing.assert_allclose(logp, np_log_softmax(scaled)[np.arange(3), [0, 4, 8]], rtol=1e-5, atol=1e-6)


def test_top_p_one_keeps_every_token_despite_float32_rounding():
    # the failing hypothesis example: float32 cumulative mass reaches 1.0 before the last tokens
    z = np.random.default_rng(1).normal(size=(3, 9)) * 2 / np.float32(0.375)
    kept = np.isfinite(np.asarray(sampling.top_p_filter(jnp.asarray(z, jnp.float32), 1.0)))
    assert kept.all()


def test_filters_jit_and_vmap_agree():
    z = jax.random.normal(jax.random.key(1), (4, 3, 17))
    f = lambda x: sampling.filter_logits(x, temperature=0.7, top_k=5, top_p=0.8)  # noqa: E731
    stacked = jnp.stack([f(z[i]) for i in range(4)])
    np.testing.assert_array_equal(jax.jit(jax.vmap(f))(z), stacked)


def test_greedy_and_next_token():
    z = jnp.array([[0.0, 5.0, 1.0], [2.0, 2.0, -1.0]])
    np.testing.assert_array_equal(sampling.greedy(z), [1, 0])  # first index on ties
    tok, logp = sampling.next_token(jax.random.key(0), z, temperature=2.0, use_greedy=True)
    np.testing.assert_array_equal(tok, [1, 0])
    np.testing.assert_allclose(logp, np_log_softmax(np.asarray(z) / 2.0)[[0, 1], [1, 0]], rtol=1e-6)
    for kwargs in ({"top_k": 1}, {"top_p": 1e-6}):
        for seed in range(5):
            tok, _ = sampling.next_token(jax.random.key(seed), z[:1], temperature=1.3, **kwargs)
            assert int(tok[0]) == 1


def test_categorical_matches_softmax_chi_square():
    # 20k independent draws of one row: Pearson chi-square against softmax(z / tau), 5 dof.
    z = jnp.array([[0.5, -1.0, 1.5, 0.0, 2.0, -0.3]])
    tau, n = 0.8, 20_000
    rows = jnp.repeat(z, n, axis=0)
    tok, _ = sampling.next_token(jax.random.key(3), rows, temperature=tau)
    counts = np.bincount(np.asarray(tok), minlength=6)
    expected = n * np.exp(np_log_softmax(np.asarray(z, np.float64) / tau))[0]
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 20.5, (chi2, counts, expected)  # p = 0.001 critical value for 5 dof


def test_two_stage_categorical_matches_softmax_and_skips_masked():
    # V = 50 in blocks of 8 (the last one padded), 12 tokens excluded: chi-square over the allowed ones.
    z = np.random.default_rng(0).normal(size=50) * 1.5
    z[[3, 7, 8, 9, 10, 11, 12, 13, 14, 15, 40, 49]] = -np.inf  # block 1 (8..15) is fully excluded
    n = 40_000
    rows = jnp.repeat(jnp.asarray(z, jnp.float32)[None], n, axis=0)
    tok = jax.jit(lambda k, r: sampling.categorical(k, r, block=8))(jax.random.key(11), rows)
    counts = np.bincount(np.asarray(tok), minlength=50)
    allowed = np.isfinite(z)
    assert counts[~allowed].sum() == 0
    expected = n * np.exp(np_log_softmax(z[allowed][None]))[0]
    chi2 = ((counts[allowed] - expected) ** 2 / expected).sum()
    assert chi2 < 70.7, chi2  # p = 0.001 critical value for 37 dof


def test_two_stage_categorical_draws_as_if_the_last_block_were_padded():
    # The ragged last block is reduced on its own instead of padding the logits; the random stream and
    # hence every draw must stay those of the padded formulation (seeded runs stay reproducible).
    def padded(rng, z_BV, block):
        batch, vocab = z_BV.shape
        n = -(-vocab // block)
        z_BnK = jnp.pad(z_BV, ((0, 0), (0, n * block - vocab)), constant_values=-jnp.inf).reshape(batch, n, block)
        rng_block, rng_token = jax.random.split(rng)
        c_B = jax.random.categorical(rng_block, jax.nn.logsumexp(z_BnK, axis=-1), axis=-1)
        z_BK = jnp.take_along_axis(z_BnK, c_B[:, None, None], axis=1)[:, 0, :]
        return c_B * block + jax.random.categorical(rng_token, z_BK, axis=-1)

    z = np.random.default_rng(1).normal(size=(64, 1026)) * 2
    z[::2, 1024:] += 8.0  # half the rows put most of their mass on the short last block (ids 1024, 1025)
    z = jnp.asarray(z, jnp.float32)
    for seed in range(3):
        ours = np.asarray(jax.jit(lambda k: sampling.categorical(k, z, block=256))(jax.random.key(seed)))
        np.testing.assert_array_equal(ours, np.asarray(padded(jax.random.key(seed), z, 256)))
        assert (ours >= 1024).sum() >= 16 and (ours < 1024).sum() >= 16


# ----------------------------------------------------------------------------- a toy model with a KV cache

class ToyLM(nnx.Module):
    """logits_v = A[tok, v] + P[pos, v] + C[n_visible, v] + w_v * (sum of visible token ids) / 10."""

    def __init__(self, seed=0):
        r = np.random.default_rng(seed)
        self.A = nnx.Param(jnp.asarray(r.normal(size=(V, V)) * 3, jnp.float32))
        self.P = nnx.Param(jnp.asarray(r.normal(size=(MAX_POS, V)), jnp.float32))
        self.C = nnx.Param(jnp.asarray(r.normal(size=(MAX_POS + 1, V)), jnp.float32))
        self.w = nnx.Param(jnp.asarray(r.normal(size=(V,)), jnp.float32))

    def __call__(self, tokens_BT, positions_BT=None, *, attn_mask_BT=None, cache=None, cache_pos=None,
                 return_hidden=False):
        batch, t = tokens_BT.shape
        if positions_BT is None:
            positions_BT = jnp.broadcast_to(jnp.arange(t)[None], (batch, t))
        if cache is None:
            ids_BS, slot_ok_BS, offset = tokens_BT, attn_mask_BT, 0
            if slot_ok_BS is None:
                slot_ok_BS = jnp.ones((batch, t), bool)
        else:
            k = jax.lax.dynamic_update_slice(cache[0]["k"], tokens_BT[:, :, None, None].astype(jnp.float32),
                                             (0, cache_pos, 0, 0))
            cache = [dict(k=k, v=k)]
            ids_BS, slot_ok_BS, offset = k[:, :, 0, 0], attn_mask_BT, cache_pos
        s = ids_BS.shape[1]
        visible_BTS = (jnp.arange(s)[None, None, :] <= offset + jnp.arange(t)[None, :, None]) \
            & slot_ok_BS[:, None, :].astype(bool)
        count_BT = visible_BTS.sum(-1)
        hist_BT = jnp.einsum("bts,bs->bt", visible_BTS.astype(jnp.float32), ids_BS.astype(jnp.float32))
        hidden = self.A[tokens_BT] + self.P[positions_BT] + self.C[count_BT] \
            + self.w[None, None, :] * hist_BT[:, :, None] / 10.0
        out = hidden if return_hidden else self.logits_from_hidden(hidden)
        return out if cache is None else (out, cache)

    def logits_from_hidden(self, hidden_BTD, vocab_major=False):
        return hidden_BTD


def toy_cache(batch, max_len):
    z = jnp.zeros((batch, max_len, 1, 1), jnp.float32)
    return [dict(k=z, v=z)]


def np_toy_logits(m, prompt, completion):
    """NumPy float64: next-token logits after the real tokens ``prompt + completion`` (positions 0..n-1)."""
    seq = list(prompt) + list(completion)
    n = len(seq)
    A, P, C, w = (np.asarray(x[...], np.float64) for x in (m.A, m.P, m.C, m.w))
    return A[seq[-1]] + P[n - 1] + C[n] + w * sum(seq) / 10.0


def np_greedy(m, prompt, steps, eos):
    out, logps = [], []
    for _ in range(steps):
        z = np_toy_logits(m, prompt, out)
        tok = int(np.argmax(z))
        out.append(tok)
        logps.append(np_log_softmax(z[None])[0, tok])
        if tok in eos:
            break
    return out, logps


PROMPTS = [[3, 1, 4, 1, 5], [9, 2], [6], [5, 3, 5, 8]]


def pad_batch(prompts, side, pad=0, width=6):
    toks = np.full((len(prompts), width), pad, np.int32)
    mask = np.zeros((len(prompts), width), np.int32)
    for i, p in enumerate(prompts):
        sl = slice(0, len(p)) if side == "right" else slice(width - len(p), width)
        toks[i, sl], mask[i, sl] = p, 1
    return toks, mask


def test_left_pad_positions():
    toks, mask = pad_batch(PROMPTS, "right", pad=7)
    t, m, pos = sampling.left_pad(jnp.asarray(toks), jnp.asarray(mask), pad_id=0)
    np.testing.assert_array_equal(t[1], [0, 0, 0, 0, 9, 2])
    np.testing.assert_array_equal(m[2], [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(pos[0], [0, 0, 1, 2, 3, 4])
    mid = sampling.left_pad(jnp.array([[5, 0, 6, 0]]), jnp.array([[1, 0, 1, 0]]), pad_id=0)
    np.testing.assert_array_equal(mid[0], [[0, 0, 5, 6]])


@pytest.mark.parametrize("side", ["left", "right"])
def test_greedy_matches_numpy_reference(side):
    model = ToyLM()
    toks, mask = pad_batch(PROMPTS, side)
    steps = 7
    out = sampling.sample(model, toks, mask, jax.random.key(0), max_new_tokens=steps, greedy=True,
                          temperature=1.0, cache_fn=toy_cache, pad_id=0)
    for i, p in enumerate(PROMPTS):
        ref, ref_logp = np_greedy(model, p, steps, eos=())
        np.testing.assert_array_equal(out.completion_tokens_BC[i], ref)
        np.testing.assert_allclose(out.completion_logp_BC[i], ref_logp, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(out.completion_mask_BC) == 1) and np.all(out.truncated_B)
    np.testing.assert_array_equal(out.prompt_tokens_BT, pad_batch(PROMPTS, "left")[0])


def test_eos_stops_rows_and_loop():
    model = ToyLM()
    toks, mask = pad_batch(PROMPTS, "left")
    steps = 12
    free = [np_greedy(model, p, steps, eos=())[0] for p in PROMPTS]
    eos = free[0][2]  # row 0 emits it at index 2 (maybe other rows earlier / later / never)
    out = sampling.sample(model, toks, mask, jax.random.key(0), max_new_tokens=steps, greedy=True,
                          eos_ids=[eos], pad_id=10, cache_fn=toy_cache)
    for i, p in enumerate(PROMPTS):
        ref, _ = np_greedy(model, p, steps, eos=(eos,))
        n = len(ref)
        np.testing.assert_array_equal(out.completion_tokens_BC[i, :n], ref)
        np.testing.assert_array_equal(out.completion_tokens_BC[i, n:], 10)
        np.testing.assert_array_equal(out.completion_mask_BC[i], [1] * n + [0] * (steps - n))
        assert np.all(np.asarray(out.completion_logp_BC[i, n:]) == 0)
        assert bool(out.truncated_B[i]) == (ref[-1] != eos)
    lengths = [len(np_greedy(model, p, steps, eos=(eos,))[0]) for p in PROMPTS]
    expected_steps = steps if any(r[-1] != eos for r in (np_greedy(model, p, steps, (eos,))[0] for p in PROMPTS)) \
        else max(lengths)
    assert int(out.num_steps) == expected_steps


def test_loop_stops_early_when_all_done():
    model = ToyLM()
    toks, mask = pad_batch(PROMPTS[:1], "left")
    ref, _ = np_greedy(model, PROMPTS[0], 3, eos=())
    out = sampling.sample(model, toks, mask, jax.random.key(0), max_new_tokens=20, greedy=True,
                          eos_ids=(ref[1], ref[0]) if ref[0] != ref[1] else ref[0], cache_fn=toy_cache)
    assert int(out.num_steps) <= 2 and int(out.completion_mask_BC.sum()) == int(out.num_steps)
    assert not bool(out.truncated_B[0])


def test_samples_logp_groups_and_determinism():
    model = ToyLM()
    toks, mask = pad_batch(PROMPTS, "right")
    kw = dict(max_new_tokens=6, temperature=0.7, top_k=6, top_p=0.9, num_samples=3, cache_fn=toy_cache)
    out = sampling.sample(model, toks, mask, jax.random.key(42), **kw)
    again = sampling.sample(model, toks, mask, jax.random.key(42), **kw)
    other = sampling.sample(model, toks, mask, jax.random.key(43), **kw)
    for a, b in zip(out, again):
        np.testing.assert_array_equal(a, b)
    assert out.completion_tokens_BC.shape == (12, 6)
    assert not np.array_equal(out.completion_tokens_BC, other.completion_tokens_BC)
    # prompt-major: rows 3b..3b+2 share prompt b; log-probs at tau of the sampled tokens, un-truncated
    for row in range(12):
        prompt = PROMPTS[row // 3]
        np.testing.assert_array_equal(out.prompt_tokens_BT[row], pad_batch([prompt], "left")[0][0])
        comp = [int(x) for x in out.completion_tokens_BC[row]]
        for i, tok in enumerate(comp):
            ref = np_log_softmax(np_toy_logits(model, prompt, comp[:i])[None] / np.float32(0.7))[0, tok]
            np.testing.assert_allclose(out.completion_logp_BC[row, i], ref, rtol=1e-5, atol=1e-5)
    assert len({tuple(np.asarray(r)) for r in out.completion_tokens_BC}) > 4  # groups are not copies


def test_first_token_distribution_matches_softmax():
    model = ToyLM(seed=3)
    prompt = [2, 7]
    tau, g = 1.5, 4000
    out = sampling.sample(model, np.array([prompt], np.int32), np.ones((1, 2), np.int32), jax.random.key(9),
                          max_new_tokens=1, temperature=tau, num_samples=g, cache_fn=toy_cache)
    counts = np.bincount(np.asarray(out.completion_tokens_BC[:, 0]), minlength=V)
    probs = np.exp(np_log_softmax(np_toy_logits(model, prompt, [])[None] / tau))[0]
    keep = probs * g >= 5  # pool the rare tokens into one chi-square cell
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(probs[keep] * g, probs[~keep].sum() * g)
    obs, exp = obs[exp > 0], exp[exp > 0]
    chi2 = ((obs - exp) ** 2 / exp).sum()
    assert chi2 < 29.6, (chi2, obs, exp)  # p = 0.001 critical value for 10 dof (at most V - 1 dof)


def test_no_recompile_for_new_values():
    model = ToyLM()
    toks, mask = pad_batch(PROMPTS, "left")
    kw = dict(max_new_tokens=4, top_p=0.9, cache_fn=toy_cache, eos_ids=[3, 4])
    sampling.sample(model, toks, mask, jax.random.key(0), temperature=1.0, **kw)
    size = sampling.sampler._sample_jit._cache_size()
    toks2 = (toks + 1) % V
    sampling.sample(model, toks2, mask, jax.random.key(1), temperature=0.5, **{**kw, "top_p": 0.5})
    sampling.sample(ToyLM(seed=5), toks2, mask, jax.random.key(1), temperature=0.5, **kw)
    assert sampling.sampler._sample_jit._cache_size() == size


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=2, temperature=0.0), "temperature"),
        (dict(max_new_tokens=2, top_k=0), "top_k"),
        (dict(max_new_tokens=2, top_p=1.5), "top_p"),
        (dict(max_new_tokens=2, num_samples=0), "num_samples"),
        (dict(max_new_tokens=2, eos_ids=[-1]), "eos_ids"),
    ],
)
def test_bad_arguments(kwargs, match):
    toks, mask = pad_batch(PROMPTS, "left")
    with pytest.raises(ValueError, match=match):
        sampling.sample(ToyLM(), toks, mask, jax.random.key(0), cache_fn=toy_cache, **kwargs)


def test_bad_prompts():
    toks, mask = pad_batch(PROMPTS, "left")
    mask[2] = 0
    with pytest.raises(ValueError, match=r"prompt rows \[2\]"):
        sampling.sample(ToyLM(), toks, mask, jax.random.key(0), max_new_tokens=2, cache_fn=toy_cache)
    with pytest.raises(ValueError, match="shapes"):
        sampling.sample(ToyLM(), toks, mask[:, :3], jax.random.key(0), max_new_tokens=2, cache_fn=toy_cache)
    with pytest.raises(ValueError, match="integer"):
        sampling.sample(ToyLM(), toks.astype(np.float32), mask, jax.random.key(0), max_new_tokens=2,
                        cache_fn=toy_cache)
    with pytest.raises(ValueError, match="cache_fn"):
        sampling.sample(ToyLM(), *pad_batch(PROMPTS, "left"), jax.random.key(0), max_new_tokens=2)


def test_top_k_one_and_tiny_top_p_equal_greedy_in_the_loop():
    model = ToyLM(seed=1)
    toks, mask = pad_batch(PROMPTS, "right")
    ref = np.repeat([np_greedy(model, p, 8, eos=())[0] for p in PROMPTS], 2, axis=0)
    for extra in (dict(top_k=1), dict(top_p=1e-6)):
        got = sampling.sample(model, toks, mask, jax.random.key(5), temperature=0.9, max_new_tokens=8,
                              cache_fn=toy_cache, num_samples=2, **extra)
        np.testing.assert_array_equal(got.completion_tokens_BC, ref)
