"""Model forward passes shared by every train step: completion log-probs without full [B, T, V] logits.

A batch row is a left-padded prompt of width P followed by a right-padded completion of width L, so every
completion starts at column P. Token ``completion[:, j]`` is predicted by the hidden state at column
``P - 1 + j``. We run the backbone once (``return_hidden=True``), slice the L predicting positions, and
apply the LM head chunk by chunk along L under ``jax.checkpoint``: the forward never holds more than
``[B, chunk, V]`` float32 logits and the backward recomputes them instead of storing them.

Sharding: under a mesh context (``jax.set_mesh`` / ``jax.sharding.use_abstract_mesh``, which
:func:`grpojax.sharding.jit_step` enters while tracing a step) the hidden chunk and its logits are pinned
to the batch layout (B over ``(data, fsdp)``, V over ``tensor``, :data:`grpojax.sharding.ACTIVATION_AXES`).
Without the pin GSPMD may split the head's contraction over the FSDP-sharded ``D`` of the embedding
instead, leaving every device with float32 logits for the WHOLE global batch: per-device memory per
sequence then grows with the device count. Without a mesh context the pins are no-ops.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from grpojax.losses import token_entropy, token_logprobs
from grpojax.sharding.jit import traced_on_mesh
from grpojax.sharding.rules import ACTIVATION_AXES
from grpojax.sharding.rules import pin as _pin
from grpojax.train.steps.state import merge_model


class CompletionLogprobs(NamedTuple):
    logp_BC: jax.Array      # log p(completion token) at the given temperature, float32
    entropy_BC: jax.Array   # entropy of the temperature-scaled next-token distribution, float32


def sequence_inputs(prompt_BQ, prompt_mask_BQ, completion_BC, completion_mask_BC):
    """Concatenate prompt + completion; returns ``(tokens_BT, mask_BT, positions_BT)``."""
    chex.assert_rank([prompt_BQ, prompt_mask_BQ, completion_BC, completion_mask_BC], 2)
    chex.assert_equal_shape([prompt_BQ, prompt_mask_BQ])
    chex.assert_equal_shape([completion_BC, completion_mask_BC])
    tokens = jnp.concatenate([prompt_BQ, completion_BC], axis=1)
    mask = jnp.concatenate([prompt_mask_BQ, completion_mask_BC], axis=1).astype(bool)
    positions = jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)
    return tokens, mask, positions


def _chunk_size(length: int, chunk: int | None) -> int:
    if chunk is None or chunk >= length:
        return length
    # the largest divisor of length not above ``chunk`` keeps shapes static and equal
    return max(c for c in range(1, chunk + 1) if length % c == 0)


_H = ACTIVATION_AXES["x_BTD"]        # hidden [B, T, D]: batch, length, D whole
_LOGITS = ACTIVATION_AXES["logits_BTV"]  # logits [B, T, V]: batch, length, vocab
_TOK = _H[:2]                        # per-token [B, T]


def completion_logprobs(model, prompt_BQ, prompt_mask_BQ, completion_BC, completion_mask_BC, *,
                        temperature: float = 1.0, chunk_size: int | None = 128,
                        with_entropy: bool = True) -> CompletionLogprobs:
    """Per-token log-probs (and entropies) of ``completion_BC`` given ``prompt_BQ`` under ``model``.

    ``log p(y_j | x, y_<j) = log_softmax(E h_{P-1+j} / temperature)[y_j]`` with ``h`` the final hidden
    states and ``E`` the LM head, computed ``chunk_size`` completion tokens at a time.

    Args:
      model: a :class:`grpojax.models.Qwen` (anything with ``__call__(..., return_hidden=True)`` and
        ``logits_from_hidden``).
      prompt_BQ, prompt_mask_BQ: left-padded prompts ``[B, P]`` and their 0/1 mask.
      completion_BC, completion_mask_BC: right-padded completions ``[B, L]`` and their 0/1 mask.
      temperature: divides the logits (the sampler's temperature).
      chunk_size: completion tokens per LM-head chunk (the largest divisor of L not above it); None =
        one chunk.
      with_entropy: also return the per-token entropy (zeros otherwise).

    Returns:
      :class:`CompletionLogprobs` with ``logp_BC`` and ``entropy_BC``, float32 ``[B, L]``.
    """
    tokens, mask, positions = sequence_inputs(prompt_BQ, prompt_mask_BQ, completion_BC,
                                              completion_mask_BC)
    P, L = prompt_BQ.shape[1], completion_BC.shape[1]
    hidden_BTD = model(tokens, positions, attn_mask_BT=mask, return_hidden=True)
    hidden_BCD = _pin(jax.lax.slice_in_dim(hidden_BTD, P - 1, P - 1 + L, axis=1), _H)
    return head_logprobs(model, hidden_BCD, completion_BC, temperature=temperature, chunk_size=chunk_size,
                         with_entropy=with_entropy)


def head_logprobs(model, hidden_BCD, completion_BC, *, temperature: float = 1.0, chunk_size: int | None = 128,
                  with_entropy: bool = True) -> CompletionLogprobs:
    """Log-probs (and entropies) of ``completion_BC`` from the hidden states that predict them
    (``hidden_BCD[:, j]`` predicts ``completion_BC[:, j]``), the LM head applied ``chunk_size`` tokens at a
    time under ``jax.checkpoint`` (module docstring)."""
    L = completion_BC.shape[1]
    c = _chunk_size(L, chunk_size)
    n = L // c

    @jax.checkpoint
    def one_chunk(h_BcD, tok_Bc):
        h_BcD, tok_Bc = _pin(h_BcD, _H), _pin(tok_Bc, _TOK)
        logits = _pin(model.logits_from_hidden(h_BcD), _LOGITS)
        logp = token_logprobs(logits, tok_Bc, temperature=temperature)
        ent = token_entropy(logits, temperature=temperature) if with_entropy else jnp.zeros_like(logp)
        return _pin(logp, _TOK), _pin(ent, _TOK)

    if n == 1:
        logp, ent = one_chunk(hidden_BCD, completion_BC)
    else:
        B, D = hidden_BCD.shape[0], hidden_BCD.shape[2]
        h_nBcD = _pin(hidden_BCD.reshape(B, n, c, D).transpose(1, 0, 2, 3), (None,) + _H)
        t_nBc = _pin(completion_BC.reshape(B, n, c).transpose(1, 0, 2), (None,) + _TOK)
        logp, ent = jax.lax.map(lambda xs: one_chunk(*xs), (h_nBcD, t_nBc))
        logp = _pin(logp.transpose(1, 0, 2).reshape(B, L), _TOK)
        ent = _pin(ent.transpose(1, 0, 2).reshape(B, L), _TOK)
    return CompletionLogprobs(logp_BC=logp, entropy_BC=ent)


def shared_prefix_logprobs(model, prompt_BQ, prompt_mask_BQ, completion_BGC, completion_mask_BGC, *,
                           temperature: float = 1.0, chunk_size: int | None = 128,
                           with_entropy: bool = True) -> CompletionLogprobs:
    """:func:`completion_logprobs` of B prompts with G completions each, every prompt computed once
    (:meth:`grpojax.models.Qwen.forward_shared_prefix`): row ``b * G + g`` of the ``[B * G, C]`` result is
    completion ``completion_BGC[b, g]``, the values of ``completion_logprobs`` on the prompt repeated G
    times. Completion token 0 is predicted by the prompt's last hidden state (column Q - 1; prompts are
    left-padded), token j > 0 by the completion stream's column j - 1."""
    B, G, C = completion_BGC.shape
    prompt_BQD, comp_BCD = model.forward_shared_prefix(prompt_BQ, prompt_mask_BQ, completion_BGC,
                                                       completion_mask_BGC)
    first_B1D = jnp.repeat(prompt_BQD[:, -1:, :], G, axis=0)
    hidden_BCD = _pin(jnp.concatenate([first_B1D, comp_BCD[:, :C - 1, :]], axis=1), _H)
    return head_logprobs(model, hidden_BCD, completion_BGC.reshape(B * G, C), temperature=temperature,
                         chunk_size=chunk_size, with_entropy=with_entropy)


def shares_prompts(prompt_BQ, prompt_mask_BQ, group: int):
    """True (a bool scalar) when every run of ``group`` consecutive rows holds one prompt: equal masks and
    equal tokens where the mask is 1."""
    B, Q = prompt_BQ.shape
    if B % group:
        raise ValueError(f"shared prefix: {B} rows are not a multiple of the group size {group}")
    m = prompt_mask_BQ.astype(bool).reshape(B // group, group, Q)
    t = jnp.where(m, prompt_BQ.reshape(B // group, group, Q), 0)
    return jnp.all(m == m[:, :1]) & jnp.all(t == t[:, :1])


def grouped_completion_logprobs(model, prompt_BQ, prompt_mask_BQ, completion_BC, completion_mask_BC, *,
                                group: int, temperature: float = 1.0, chunk_size: int | None = 128,
                                with_entropy: bool = True):
    """:func:`completion_logprobs` of prompt-major rows (``group`` consecutive rows per prompt, as the
    sampler lays out a GRPO rollout) through the shared-prefix forward, each prompt computed once from the
    first row of its group. The rows are checked (:func:`shares_prompts`): when a group's rows hold
    different prompts the log-probs and entropies are NaN, so a train step built on them is not applied
    (``grpojax.train.steps.accumulate.apply_gradients`` skips non-finite steps) instead of training on
    the wrong prompts. Returns ``(CompletionLogprobs [B, C], shared)`` with ``shared`` the bool scalar."""
    B, Q = prompt_BQ.shape
    C = completion_BC.shape[1]
    shared = shares_prompts(prompt_BQ, prompt_mask_BQ, group)
    first = lambda x: x.reshape(B // group, group, Q)[:, 0]  # noqa: E731
    out = shared_prefix_logprobs(model, first(prompt_BQ), first(prompt_mask_BQ),
                                 completion_BC.reshape(B // group, group, C),
                                 completion_mask_BC.reshape(B // group, group, C), temperature=temperature,
                                 chunk_size=chunk_size, with_entropy=with_entropy)
    poison = lambda x: jnp.where(shared, x, jnp.nan)  # noqa: E731
    return CompletionLogprobs(poison(out.logp_BC), poison(out.entropy_BC)), shared


def reference_logp_fn(graphdef, temperature: float, chunk: int | None = 128, mesh=None,
                      shared_group: int | None = None):
    """Jitted ``(params, frozen, batch) -> [B, L]`` completion log-probs of a plain policy (the reference).

    ``shared_group`` = G runs :func:`grouped_completion_logprobs` (each prompt once for its G rows).

    With a ``mesh`` the forward is traced under it (:func:`grpojax.sharding.traced_on_mesh`), so the LM-head
    chunks are pinned to the batch layout exactly as in the train step."""

    def ref_logp(params, frozen, b):
        model = merge_model(graphdef, params, frozen)
        args = (model, b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"], b["completion_mask_BC"])
        kw = dict(temperature=temperature, chunk_size=chunk, with_entropy=False)
        if shared_group:
            return grouped_completion_logprobs(*args, group=shared_group, **kw)[0].logp_BC
        return completion_logprobs(*args, **kw).logp_BC

    return jax.jit(traced_on_mesh(ref_logp, mesh))
