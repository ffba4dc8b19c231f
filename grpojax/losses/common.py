"""Building blocks shared by every loss: per-token log-probs, entropy, masked reductions, KL estimators.

All functions are pure functions of arrays, safe under ``jit`` / ``vmap`` / ``grad``. Reductions take an
explicit mask and an explicit ``axis``; masked-out entries never reach an arithmetic operation (they are
replaced with ``jnp.where`` first), so NaN / inf garbage under the mask cannot poison values or gradients.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp

from grpojax.types import Array

KL_ESTIMATORS = ("k1", "k2", "k3")
GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")  # token aggregations of ``grpo.aggregate_token_loss``
DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")  # per-pair losses of ``dpo.dpo_loss``


def check_bt(name: str, *arrays: Array) -> None:
    """ValueError naming ``name`` unless every array is ``[B, T]`` and all have one shape."""
    shapes = [a.shape for a in arrays]
    if any(a.ndim != 2 for a in arrays) or len(set(shapes)) != 1:
        raise ValueError(f"{name}: expected [B, T] arrays of one shape (values and mask), got {shapes}")


def check_nonneg(name: str, value, upper: float | None = None) -> None:
    """ValueError unless a concrete ``value`` is ``>= 0`` (and ``<= upper``); traced values pass unchecked."""
    if isinstance(value, numbers.Real) and not (value >= 0 and (upper is None or value <= upper)):
        bound = f"in [0, {upper}]" if upper is not None else ">= 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def as_float(x: Array) -> Array:
    """``x`` in its own float dtype, or float32 when it is an integer / narrower dtype."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def is_active(mask: Array) -> Array:
    """Bool: where a 0/1 (or bool, or float-weight) mask counts."""
    return mask > 0


def _check_temperature(temperature) -> None:
    try:
        value = float(temperature)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return  # traced temperature: cannot be checked at trace time
    if not value > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def token_logprobs(logits: Array, tokens: Array, temperature: float = 1.0) -> Array:
    """Log-probability of each target token under ``softmax(logits / temperature)``.

    ``logp[..., t] = z[..., t, tokens[..., t]] - logsumexp_v z[..., t, v]`` with
    ``z = float32(logits) / temperature`` (training log-probs use the sampling temperature, as TRL).
    Only the gathered logit and the log-normaliser are kept: no ``[..., T, V]`` log-softmax is built
    (under ``jit`` the cast and division fuse into the reductions).

    Args:
      logits: ``[..., T, V]`` any float dtype (bf16 logits are upcast to float32).
      tokens: ``[..., T]`` integer ids in ``[0, V)``; the target of position t (already shifted by
        the caller: ``logits[:, t]`` must be the prediction of ``tokens[:, t]``).
      temperature: positive scalar.

    Returns:
      ``[..., T]`` float32 log-probs (``<= 0``).

    Example:
      >>> token_logprobs(jnp.zeros((1, 2, 4)), jnp.array([[0, 3]]))  # uniform over 4 tokens
      Array([[-1.3862944, -1.3862944]], dtype=float32)
    """
    if logits.ndim != tokens.ndim + 1 or logits.shape[:-1] != tokens.shape:
        raise ValueError(
            f"token_logprobs: logits must be [..., T, V] and tokens [..., T] with the same leading "
            f"shape; got logits {logits.shape} and tokens {tokens.shape}"
        )
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"token_logprobs: tokens must be integer ids, got dtype {tokens.dtype}")
    _check_temperature(temperature)
    z = logits.astype(jnp.float32)
    if not (isinstance(temperature, (int, float)) and temperature == 1.0):
        z = z / temperature
    log_norm = jax.nn.logsumexp(z, axis=-1)
    picked = jnp.take_along_axis(z, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - log_norm


def token_entropy(logits: Array, temperature: float = 1.0) -> Array:
    """Entropy of ``softmax(logits / temperature)`` at every position.

    ``H = -Σ_v p_v log p_v = logsumexp(z) - Σ_v p_v z_v`` with ``z = float32(logits) / temperature``.

    Args:
      logits: ``[..., T, V]``.
      temperature: positive scalar.

    Returns:
      ``[..., T]`` float32 entropies in nats, in ``[0, log V]``.
    """
    if logits.ndim < 2:
        raise ValueError(f"token_entropy: logits must be [..., T, V], got shape {logits.shape}")
    _check_temperature(temperature)
    z = logits.astype(jnp.float32) / temperature
    log_norm = jax.nn.logsumexp(z, axis=-1, keepdims=True)
    p = jnp.exp(z - log_norm)
    # Σ p (log_norm - z), with 0 * (-inf) avoided for -inf logits (p = 0 there).
    return jnp.sum(jnp.where(p > 0, p * (log_norm - z), 0.0), axis=-1)


def _mask_like(x: Array, mask: Array) -> Array:
    if mask.shape != x.shape:
        raise ValueError(f"mask shape {mask.shape} must equal value shape {x.shape}")
    return mask.astype(jnp.float32)


def masked_sum(x: Array, mask: Array, axis: int | Sequence[int] | None = None) -> Array:
    """``Σ mask · x`` over ``axis`` (``None`` = all axes). Entries with ``mask == 0`` are ignored even
    if they hold NaN or inf (values and gradients stay finite).

    Args:
      x: any shape ``[...]``.
      mask: same shape as ``x``; bool or float weights.
      axis: the axes to reduce (explicit; ``None`` reduces everything).
    """
    m = _mask_like(x, mask)
    return jnp.sum(jnp.where(m != 0, x * m, 0.0), axis=axis)


def masked_mean(x: Array, mask: Array, axis: int | Sequence[int] | None = None) -> Array:
    """``Σ mask · x / max(Σ mask, 1)`` over ``axis``; a fully masked slice gives 0 (not NaN).

    Args:
      x: any shape ``[...]``.
      mask: same shape as ``x``; bool or float weights (0/1 in the usual case).
      axis: the axes to reduce (``None`` reduces everything).
    """
    m = _mask_like(x, mask)
    return masked_sum(x, m, axis=axis) / jnp.maximum(jnp.sum(m, axis=axis), 1.0)


def kl_penalty(logp: Array, ref_logp: Array, estimator: str = "k3") -> Array:
    """Per-token estimate of ``KL(π || π_ref)`` from sampled-token log-probs (Schulman, "Approximating
    KL divergence", 2020; k3 is the DeepSeekMath / TRL GRPO choice).

    With ``d = logp - ref_logp``:
      - ``k1 = d``                       (unbiased, can be negative)
      - ``k2 = ½ d²``                    (biased, ≥ 0)
      - ``k3 = exp(-d) + d - 1``         (unbiased, ≥ 0, 0 when ``logp == ref_logp``)

    Args:
      logp: ``[...]`` policy log-probs of the sampled tokens.
      ref_logp: same shape, reference-model log-probs.
      estimator: one of ``"k1"``, ``"k2"``, ``"k3"``.

    Returns:
      Same shape as ``logp``, float32.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; valid choices: {', '.join(KL_ESTIMATORS)}")
    chex.assert_equal_shape([logp, ref_logp])
    d = logp.astype(jnp.float32) - ref_logp.astype(jnp.float32)
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * jnp.square(d)
    # expm1(-d) + d is the accurate form of exp(-d) - 1 + d near d = 0.
    return jnp.expm1(-d) + d
