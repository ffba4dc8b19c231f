"""Forward passes over packed rows (``data.packing``, :mod:`grpojax.data.packing`): token log-probs and
per-example sums.

A packed row holds several examples, ``segment_ids_BT`` = 1, 2, ... per example (0 = padding), positions
restarting at 0 for each. The model reads ``segment_ids_BT`` so a token attends only to earlier tokens of
its own segment; token ``t`` is then predicted by the hidden state at ``t - 1``, which belongs to the same
example whenever ``t`` is a loss token (the packer refuses an example whose first token is one). So

    logp_BT[b, t] = log_softmax(E h[b, t - 1])[tokens[b, t]]     (0 at t = 0)

equals the unpacked forward's log-prob of the same token of the same example. The LM head runs
``chunk_size`` positions at a time under ``jax.checkpoint`` (never more than ``[B, chunk, V]`` logits), as
:func:`grpojax.train.steps.forward.completion_logprobs` does.

Per-example reductions (:func:`slot_sums`) go through ``jax.ops.segment_sum`` over ``row * X + slot``
(exact float32 adds, no one-hot matmul).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from grpojax.losses import token_logprobs
from grpojax.sharding.rules import ACTIVATION_AXES, pin
from grpojax.types import Array

_H = ACTIVATION_AXES["x_BTD"]
_LOGITS = ACTIVATION_AXES["logits_BTV"]
_TOK = _H[:2]


def _divisor_at_most(length: int, chunk: int | None) -> int:
    if chunk is None or chunk >= length:
        return length
    return max(c for c in range(1, chunk + 1) if length % c == 0)


def packed_logprobs(model, tokens_BT: Array, positions_BT: Array, segment_ids_BT: Array, *,
                    chunk_size: int | None = 128) -> Array:
    """``[B, T]`` float32 log-prob of every token given the earlier tokens of its segment (module
    docstring); column 0 and tokens that start a segment get a meaningless value (mask them)."""
    hidden_BTD = model(tokens_BT, positions_BT, segment_ids_BT=segment_ids_BT, return_hidden=True)
    B, T, D = hidden_BTD.shape
    # column t predicts token t + 1 (the last column's target is a dummy, dropped below)
    next_BT = jnp.concatenate([tokens_BT[:, 1:], tokens_BT[:, :1]], axis=1)
    c = _divisor_at_most(T, chunk_size)
    n = T // c

    @jax.checkpoint
    def one_chunk(h_BcD, tok_Bc):
        logits = pin(model.logits_from_hidden(pin(h_BcD, _H)), _LOGITS)
        return pin(token_logprobs(logits, pin(tok_Bc, _TOK)), _TOK)

    if n == 1:
        lp_BT = one_chunk(pin(hidden_BTD, _H), next_BT)
    else:
        h_nBcD = hidden_BTD.reshape(B, n, c, D).transpose(1, 0, 2, 3)
        t_nBc = next_BT.reshape(B, n, c).transpose(1, 0, 2)
        lp_BT = jax.lax.map(lambda xs: one_chunk(*xs), (h_nBcD, t_nBc)).transpose(1, 0, 2).reshape(B, T)
    return jnp.concatenate([jnp.zeros((B, 1), lp_BT.dtype), lp_BT[:, :-1]], axis=1)


def slot_sums(values_BT: Array, segment_ids_BT: Array, num_slots: int) -> Array:
    """``[B, X]``: the sum of ``values_BT`` over each row's segment ``x + 1`` (padding dropped)."""
    B, T = segment_ids_BT.shape
    seg = segment_ids_BT.astype(jnp.int32)
    ids_BT = jnp.where(seg > 0, jnp.arange(B, dtype=jnp.int32)[:, None] * num_slots + seg - 1, B * num_slots)
    sums = jax.ops.segment_sum(values_BT.reshape(-1), ids_BT.reshape(-1), num_segments=B * num_slots + 1)
    return sums[:-1].reshape(B, num_slots)


def packed_sequence_logprobs(model, batch: dict, num_slots: int, *, average: bool = False,
                             chunk_size: int | None = 128) -> Array:
    """``[B * X]`` sequence log-probs of the packed examples (flat slot ``row * X + slot``): the sum of
    their loss tokens' log-probs (``average``: divided by the count, at least 1), as
    :func:`grpojax.losses.dpo.sequence_logprob` of the unpacked rows."""
    logp_BT = packed_logprobs(model, batch["input_ids_BT"], batch["positions_BT"], batch["segment_ids_BT"],
                              chunk_size=chunk_size)
    m_BT = batch["loss_mask_BT"].astype(jnp.float32)
    total_BX = slot_sums(jnp.where(m_BT > 0, logp_BT, 0.0) * m_BT, batch["segment_ids_BT"], num_slots)
    if average:
        total_BX = total_BX / jnp.maximum(slot_sums(m_BT, batch["segment_ids_BT"], num_slots), 1.0)
    return total_BX.reshape(-1)
