"""Model forward passes shared by every train step: completion log-probs without full [B, T, V] logits.

A batch row is a left-padded prompt of width P followed by a right-padded completion of width L, so every
completion starts at column P. Token ``completion[:, j]`` is predicted by the hidden state at column
``P - 1 + j``. We run the backbone once (``return_hidden=True``), slice the L predicting positions, and
apply the LM head chunk by chunk along L under ``jax.checkpoint``: the forward never holds more than
``[B, chunk, V]`` float32 logits and the backward recomputes them instead of storing them.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from grpojax.losses import token_entropy, token_logprobs


class CompletionLogprobs(NamedTuple):
    logp_BL: jax.Array      # log p(completion token) at the given temperature, float32
    entropy_BL: jax.Array   # entropy of the temperature-scaled next-token distribution, float32


def sequence_inputs(prompt_BP, prompt_mask_BP, completion_BL, completion_mask_BL):
    """Concatenate prompt + completion; returns ``(tokens_BT, mask_BT, positions_BT)``."""
    chex.assert_rank([prompt_BP, prompt_mask_BP, completion_BL, completion_mask_BL], 2)
    chex.assert_equal_shape([prompt_BP, prompt_mask_BP])
    chex.assert_equal_shape([completion_BL, completion_mask_BL])
    tokens = jnp.concatenate([prompt_BP, completion_BL], axis=1)
    mask = jnp.concatenate([prompt_mask_BP, completion_mask_BL], axis=1).astype(bool)
    positions = jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)
    return tokens, mask, positions


def _chunk_size(length: int, chunk: int | None) -> int:
    if chunk is None or chunk >= length:
        return length
    # the largest divisor of length not above ``chunk`` keeps shapes static and equal
    return max(c for c in range(1, chunk + 1) if length % c == 0)


def completion_logprobs(model, prompt_BP, prompt_mask_BP, completion_BL, completion_mask_BL, *,
                        temperature: float = 1.0, chunk_size: int | None = 128,
                        with_entropy: bool = True) -> CompletionLogprobs:
    """Per-token log-probs (and entropies) of ``completion_BL`` given ``prompt_BP`` under ``model``."""
    tokens, mask, positions = sequence_inputs(prompt_BP, prompt_mask_BP, completion_BL,
                                              completion_mask_BL)
    P, L = prompt_BP.shape[1], completion_BL.shape[1]
    hidden_BTD = model(tokens, positions, attn_mask_BT=mask, return_hidden=True)
    hidden_BLD = jax.lax.slice_in_dim(hidden_BTD, P - 1, P - 1 + L, axis=1)
    c = _chunk_size(L, chunk_size)
    n = L // c

    @jax.checkpoint
    def one_chunk(h_BcD, tok_Bc):
        logits = model.logits_from_hidden(h_BcD)
        logp = token_logprobs(logits, tok_Bc, temperature=temperature)
        ent = token_entropy(logits, temperature=temperature) if with_entropy else jnp.zeros_like(logp)
        return logp, ent

    if n == 1:
        logp, ent = one_chunk(hidden_BLD, completion_BL)
    else:
        B, D = hidden_BLD.shape[0], hidden_BLD.shape[2]
        h_nBcD = hidden_BLD.reshape(B, n, c, D).transpose(1, 0, 2, 3)
        t_nBc = completion_BL.reshape(B, n, c).transpose(1, 0, 2)
        logp, ent = jax.lax.map(lambda xs: one_chunk(*xs), (h_nBcD, t_nBc))
        logp = logp.transpose(1, 0, 2).reshape(B, L)
        ent = ent.transpose(1, 0, 2).reshape(B, L)
    return CompletionLogprobs(logp_BL=logp, entropy_BL=ent)
