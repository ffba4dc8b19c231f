"""Sampling strategies: tiny pure functions of next-token logits ``[B, V]``.

The order follows Hugging Face ``generate`` (and vLLM): temperature scaling, then top-k, then top-p on the
renormalised top-k distribution, then a categorical draw (or argmax for greedy decoding).

A filtered-out token gets the logit ``-inf``; ties at the cut-off are kept (so top-k may keep more than k
tokens when several logits equal the k-th largest, exactly like HF's ``TopKLogitsWarper``).

The log-probability reported for a sampled token is always taken under the temperature-scaled,
**un-truncated** distribution ``log_softmax(logits / temperature)`` (see :func:`token_logprobs`): that is
what a training forward pass computes (ALGORITHMS.md 1.4: "training log-probs are computed from logits
divided by the sampling temperature"), so sampler and trainer agree exactly. With top-k / top-p the
sampling distribution is the truncated one; the un-truncated log-prob is then the log-prob of the
policy being trained, not of the proposal actually used (the same convention as TRL and vLLM-based
trainers).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from grpojax.types import Array, PRNGKey

NEG_INF = -jnp.inf


def apply_temperature(logits_BV: Array, temperature: float | Array) -> Array:
    """Scales logits by ``1 / temperature`` in float32: ``z_bv / tau``.

    Args:
      logits_BV: next-token logits ``[B, V]`` (any float dtype; the result is float32).
      temperature: a positive scalar ``tau`` (Python float or 0-d array; may be traced).

    Returns:
      ``[B, V]`` float32 scaled logits.
    """
    chex.assert_rank(logits_BV, 2)
    return logits_BV.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)


def top_k_filter(logits_BV: Array, k: int) -> Array:
    """Keeps the k largest logits of each row, sets the others to ``-inf``.

    ``z'_bv = z_bv if z_bv >= kth_largest(z_b) else -inf`` (ties with the k-th value are kept).

    Args:
      logits_BV: logits ``[B, V]``.
      k: a static Python int, ``1 <= k``; ``k >= V`` keeps everything.

    Returns:
      ``[B, V]`` filtered logits, same dtype.
    """
    chex.assert_rank(logits_BV, 2)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be a positive int, got {k!r}")
    vocab = logits_BV.shape[-1]
    if k >= vocab:
        return logits_BV
    kth_B1 = jax.lax.top_k(logits_BV, k)[0][:, k - 1 : k]
    return jnp.where(logits_BV >= kth_B1, logits_BV, NEG_INF)


def _top_p_threshold(sorted_logits_BV: Array, p: float | Array) -> Array:
    """Smallest logit kept by nucleus filtering, given logits sorted in descending order: ``[B, 1]``."""
    probs_BV = jax.nn.softmax(sorted_logits_BV.astype(jnp.float32), axis=-1)
    mass_before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    p = jnp.asarray(p, jnp.float32)
    # p >= 1 keeps every token: the float32 running mass can round up to 1 before the tail
    keep_BV = (mass_before_BV < p) | (p >= 1.0)
    keep_BV = keep_BV.at[:, 0].set(True)  # the most likely token always survives
    kept_logits_BV = jnp.where(keep_BV, sorted_logits_BV, jnp.inf)
    return jnp.min(kept_logits_BV, axis=-1, keepdims=True)


def top_p_filter(logits_BV: Array, p: float | Array) -> Array:
    """Nucleus (top-p) filtering (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration").

    Sort the tokens by probability ``pi = softmax(z)``, keep the smallest prefix whose mass reaches ``p``:
    token ``v`` (at sorted rank r) is kept iff the mass of the tokens ranked before it is ``< p``; the top
    token is always kept. Tokens tied with the smallest kept logit are kept too. ``p >= 1`` keeps all.

    Args:
      logits_BV: logits ``[B, V]`` (already temperature-scaled / top-k filtered if wanted).
      p: scalar in ``(0, 1]`` (Python float or 0-d array; may be traced).

    Returns:
      ``[B, V]`` filtered logits, same dtype.
    """
    chex.assert_rank(logits_BV, 2)
    sorted_BV = -jnp.sort(-logits_BV, axis=-1)
    threshold_B1 = _top_p_threshold(sorted_BV, p)
    return jnp.where(logits_BV >= threshold_B1, logits_BV, NEG_INF)


def filter_logits(
    logits_BV: Array,
    *,
    temperature: float | Array = 1.0,
    top_k: int | None = None,
    top_p: float | Array | None = None,
) -> Array:
    """Temperature, then top-k, then top-p: the logits a categorical draw samples from, ``[B, V]`` f32.

    When both top-k and top-p are given, the nucleus is computed on the top-k distribution (HF order), and
    only the k sorted values are needed for it, which avoids sorting the whole vocabulary.
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    scaled_BV = apply_temperature(logits_BV, temperature)
    vocab = scaled_BV.shape[-1]
    if top_k is not None and top_k < vocab:
        values_BK = jax.lax.top_k(scaled_BV, top_k)[0]
        threshold_B1 = values_BK[:, top_k - 1 : top_k]
        if top_p is not None:
            threshold_B1 = jnp.maximum(threshold_B1, _top_p_threshold(values_BK, top_p))
        return jnp.where(scaled_BV >= threshold_B1, scaled_BV, NEG_INF)
    if top_p is not None:
        return top_p_filter(scaled_BV, top_p)
    return scaled_BV


def greedy(logits_BV: Array) -> Array:
    """Argmax decoding: ``y_b = argmax_v z_bv`` (the first index on ties, like ``torch.argmax``). ``[B]`` int32."""
    chex.assert_rank(logits_BV, 2)
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)


BLOCK = 256


def categorical(rng: PRNGKey, filtered_logits_BV: Array, block: int = BLOCK) -> Array:
    """Draws ``y_b ~ softmax(z_b)`` per row, exactly, in two Gumbel-max stages. ``[B]`` int32.

    The vocabulary is cut into blocks of ``block`` tokens (the last one may be shorter: as if padded with
    ``-inf``). Stage 1 draws a block ``c ~ softmax(lse_c)`` with ``lse_c = logsumexp(z over block c)``;
    stage 2 draws a token inside it, ``v ~ softmax(z over block c)``. Then
    ``P(v) = P(c) P(v | c) = exp(z_v) / sum_u exp(z_u)``: the same distribution as
    ``jax.random.categorical`` (and no token with ``z = -inf`` is ever drawn), but with
    ``B (V / block + block)`` random numbers per step instead of ``B V`` (why: ``docs/history.md``).

    Args:
      rng: PRNG key.
      filtered_logits_BV: ``[B, V]`` logits (``-inf`` = excluded); each row needs a finite entry.
      block: block size (static).
    """
    chex.assert_rank(filtered_logits_BV, 2)
    batch, vocab = filtered_logits_BV.shape
    if vocab <= block:
        return jax.random.categorical(rng, filtered_logits_BV, axis=-1).astype(jnp.int32)
    full, rest = divmod(vocab, block)
    z_BV = filtered_logits_BV.astype(jnp.float32)
    # Block log-masses without padding a copy of the logits (the ragged last block is reduced on its own;
    # padding it with -inf would give the same values at the price of an extra [B, V] copy per step).
    lse_Bn = jax.nn.logsumexp(z_BV[:, :full * block].reshape(batch, full, block), axis=-1)
    if rest:
        lse_Bn = jnp.concatenate([lse_Bn, jax.nn.logsumexp(z_BV[:, full * block:], axis=-1, keepdims=True)], 1)
    # lse is -inf for blocks with no allowed token
    rng_block, rng_token = jax.random.split(rng)
    c_B = jax.random.categorical(rng_block, lse_Bn, axis=-1)
    idx_BK = c_B[:, None] * block + jnp.arange(block)[None, :]
    z_BK = jnp.where(idx_BK < vocab, jnp.take_along_axis(z_BV, jnp.minimum(idx_BK, vocab - 1), axis=1), NEG_INF)
    k_B = jax.random.categorical(rng_token, z_BK, axis=-1)
    return (c_B * block + k_B).astype(jnp.int32)


def token_logprobs(logits_BV: Array, tokens_B: Array, temperature: float | Array = 1.0) -> Array:
    """Log-prob of the chosen tokens at temperature ``tau``: ``log_softmax(z_b / tau)[y_b]``. ``[B]`` f32.

    Un-truncated on purpose (see the module docstring): it equals the trainer's log-prob of the token.

    Args:
      logits_BV: raw logits ``[B, V]``.
      tokens_B: chosen token ids ``[B]`` (int).
      temperature: positive scalar.
    """
    chex.assert_rank([logits_BV, tokens_B], [2, 1])
    scaled_BV = apply_temperature(logits_BV, temperature)
    logz_B1 = jax.nn.logsumexp(scaled_BV, axis=-1, keepdims=True)
    picked_B1 = jnp.take_along_axis(scaled_BV, tokens_B[:, None].astype(jnp.int32), axis=-1)
    return (picked_B1 - logz_B1)[:, 0]


def next_token(
    rng: PRNGKey,
    logits_BV: Array,
    *,
    temperature: float | Array = 1.0,
    top_k: int | None = None,
    top_p: float | Array | None = None,
    use_greedy: bool = False,
) -> tuple[Array, Array]:
    """One decoding decision: returns ``(tokens_B int32, logp_B f32)``.

    ``tokens_B`` is the argmax of the raw logits when ``use_greedy`` (temperature, top-k and top-p do not
    change the argmax), otherwise a draw from :func:`filter_logits`. ``logp_B`` is
    :func:`token_logprobs` at ``temperature`` in both cases.
    """
    if use_greedy:
        tokens_B = greedy(logits_BV)
    else:
        tokens_B = categorical(rng, filter_logits(logits_BV, temperature=temperature, top_k=top_k, top_p=top_p))
    return tokens_B, token_logprobs(logits_BV, tokens_B, temperature)
