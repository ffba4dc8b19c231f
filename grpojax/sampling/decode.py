"""KV-cache decoding: jitted prefill + ``lax.while_loop`` over a pytree state (DESIGN.md rule 11).

The model is any callable with the ``grpojax.models.Qwen`` interface::

    hidden_BTD, cache = model(tokens_BT, positions_BT, attn_mask_BT=slots_BS, cache=cache,
                              cache_pos=pos, return_hidden=True)
    logits_BTV = model.logits_from_hidden(hidden_BTD)

where ``cache`` is a plain pytree of ``[..., B, S, K, H]`` arrays (batch 4th from the end: per-layer or
stacked ``[L, B, S, K, H]``, see ``grpojax.models.kv_cache``), the T new tokens are written to cache slots
``[pos, pos + T)``, and query ``t`` attends to slot ``s`` iff ``s <= pos + t`` and ``slots_BS[b, s]``.

Prompts are normalised to **left padding** (a stable sort of each row by its mask, so right-, left- or
even middle-padded rows all work); RoPE positions are ``cumsum(mask) - 1`` (pads get 0). The i-th
completion token (i = 0..L-1, ``L`` = ``max_new_tokens``) has position ``n_b + i`` (``n_b`` = real prompt
length of row b). Two cache layouts (``cache_layout``, ``T`` = prompt length after padding):

* ``"shared"`` (for models with ``"shared"`` in their ``cache_layouts``, e.g. ``Qwen``): prefill writes the
  B prompts into a ``[.., B, T, K, H]`` cache; decoding uses it once per prompt for all G samples plus a
  ``[.., B * G, L, K, H]`` cache of generated tokens (:func:`grpojax.models.kv_cache.shared_prompt_cache`),
  the i-th completion token going to generated slot i. Each step reads the prompt keys once per group
  and only the filled chunks of the generated slots
  (:func:`grpojax.models.decode_attention.shared_prompt_attention`), so its cost does not depend on the
  unused part of the budget (``benchmarks/decode_cost.py``, ``docs/decode.md``).
* ``"dense"`` (any model with the interface above): one ``[.., B, T + L, K, H]`` cache; prefill writes
  slots ``[0, T)``, then the cache is repeated G times and the i-th completion token goes to slot
  ``T + i``; slot validity ``slots_BS = [prompt_mask_BT, ones_BC]`` hides the prompt pads, and decode
  slots are protected by the causal rule ``s <= pos + t`` until written. Every step attends over all
  ``T + L`` slots of all ``B * G`` rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from grpojax.models.kv_cache import CACHE_BATCH_AXIS, shared_prompt_cache
from grpojax.sampling import strategies
from grpojax.types import Array, PRNGKey, PyTree

DECODE_SCOPE = "decode_loop"  # jax.named_scope of the decoding while-loop
CACHE_LAYOUTS = ("shared", "dense")  # values of decode's cache_layout (module docstring)


class DecodeState(NamedTuple):
    """The ``lax.while_loop`` carry (rows are the ``B * G`` sequences being decoded).

    step: scalar int32, the completion index the next token will be written to (1..L).
    cache: the model's KV-cache pytree (``[..., B, S, K, H]`` leaves; shared-prompt: module docstring).
    last_B: int32 token sampled at ``step - 1``; it is fed to the model next.
    done_B: bool, the row has emitted an EOS (it then emits ``pad_id`` with mask 0).
    tokens_BC: int32 completion tokens (``pad_id`` where not generated).
    mask_BC: int32, 1 for generated tokens up to and including the EOS.
    logp_BC: float32 log-prob of each generated token at the sampling temperature (0 where mask is 0).
    """

    step: Array
    cache: PyTree
    last_B: Array
    done_B: Array
    tokens_BC: Array
    mask_BC: Array
    logp_BC: Array


class SampleOutput(NamedTuple):
    """What :func:`sample` returns. Rows are prompt-major: ``[b0g0, b0g1, ..., b1g0, ...]`` (B * G rows).

    completion_tokens_BC: ``[B*G, L]`` int32, ``pad_id`` after the EOS / for unused slots.
    completion_mask_BC: ``[B*G, L]`` int32, 1 for every generated token up to and including the EOS.
    completion_logp_BC: ``[B*G, L]`` float32, ``log_softmax(logits / temperature)`` of the sampled token
      (un-truncated by top-k / top-p; see ``grpojax.sampling.strategies``), 0 where the mask is 0.
    truncated_B: ``[B*G]`` bool, True when the row hit ``max_new_tokens`` without emitting an EOS.
    prompt_tokens_BT: ``[B*G, T]`` int32, the prompts as used: left-padded with ``pad_id``.
    prompt_mask_BT: ``[B*G, T]`` int32, 1 on real prompt tokens.
    num_steps: scalar int32, completion positions actually decoded (< L when every row stopped early).
    """

    completion_tokens_BC: Array
    completion_mask_BC: Array
    completion_logp_BC: Array
    truncated_B: Array
    prompt_tokens_BT: Array
    prompt_mask_BT: Array
    num_steps: Array


def left_pad(tokens_BT: Array, mask_BT: Array, pad_id: int | Array) -> tuple[Array, Array, Array]:
    """Moves each row's real tokens to the right end, keeping their order; returns tokens, mask, positions.

    ``positions_BT = max(cumsum(mask) - 1, 0)``: the RoPE positions of the real tokens are 0..n_b - 1.

    Args:
      tokens_BT: int token ids ``[B, T]``, any padding side.
      mask_BT: ``[B, T]`` bool / int, nonzero on real tokens.
      pad_id: id written into the pad slots.

    Returns:
      ``(tokens_BT int32, mask_BT int32, positions_BT int32)``, all ``[B, T]``.
    """
    chex.assert_rank([tokens_BT, mask_BT], 2)
    chex.assert_equal_shape([tokens_BT, mask_BT])
    real_BT = (mask_BT != 0).astype(jnp.int32)
    order_BT = jnp.argsort(real_BT, axis=-1, stable=True)  # pads (0) first, real tokens (1) in order after
    real_BT = jnp.take_along_axis(real_BT, order_BT, axis=-1)
    tokens_BT = jnp.take_along_axis(tokens_BT.astype(jnp.int32), order_BT, axis=-1)
    tokens_BT = jnp.where(real_BT == 1, tokens_BT, jnp.asarray(pad_id, jnp.int32))
    positions_BT = jnp.maximum(jnp.cumsum(real_BT, axis=-1) - 1, 0).astype(jnp.int32)
    return tokens_BT, real_BT, positions_BT


def forward_last(model: Any, tokens_BT: Array, positions_BT: Array, slots_BS: Array, cache: PyTree,
                 cache_pos: Array) -> tuple[Array, PyTree]:
    """Runs the model on T new tokens with the cache; returns the LAST position's logits ``[B, V]`` f32.

    Only the last hidden state goes through the LM head (no ``[B, T, V]`` logits at prefill).
    """
    hidden_BTD, cache = model(tokens_BT, positions_BT, attn_mask_BT=slots_BS, cache=cache,
                              cache_pos=cache_pos, return_hidden=True)
    logits_B1V = model.logits_from_hidden(hidden_BTD[:, -1:, :], vocab_major=True)
    return logits_B1V[:, 0, :].astype(jnp.float32), cache


def repeat_rows(tree: PyTree, num_samples: int, axis: int = 0) -> PyTree:
    """``jnp.repeat`` every leaf ``num_samples`` times along ``axis`` (prompt-major order b0g0, b0g1, ...)."""
    if num_samples == 1:
        return tree
    return jax.tree.map(lambda x: jnp.repeat(x, num_samples, axis=axis), tree)


def is_eos(tokens_B: Array, eos_ids_E: Array) -> Array:
    """``[B]`` bool: the token is one of the E ids in ``eos_ids_E`` (always False when E = 0)."""
    chex.assert_rank([tokens_B, eos_ids_E], 1)
    return jnp.any(tokens_B[:, None] == eos_ids_E[None, :].astype(tokens_B.dtype), axis=-1)


def decode(
    model: Any,
    init_cache_fn: Callable[[int, int], PyTree],
    prompt_tokens_BT: Array,
    prompt_mask_BT: Array,
    rng: PRNGKey,
    temperature: Array,
    top_p: Array | None,
    eos_ids_E: Array,
    pad_id: Array,
    *,
    max_new_tokens: int,
    top_k: int | None,
    use_greedy: bool,
    num_samples: int,
    cache_layout: str = "dense",
) -> SampleOutput:
    """Traceable body of :func:`grpojax.sampling.sample` (call it under ``jit``; arguments as there).

    ``eos_ids_E`` (int32 ``[E]``, E may be 0) and ``pad_id`` (int32 scalar) are arrays, so their values
    can change without recompiling; ``max_new_tokens``, ``top_k``, ``use_greedy``, ``num_samples`` are static.

    ``init_cache_fn(batch, max_len)`` builds a zero ``[.., batch, max_len, K, H]`` KV cache. Prefill runs
    once per prompt, so a GRPO group shares one prefill; ``cache_layout`` (static, module docstring) says
    whether its keys / values are then shared by the group (``"shared"``) or repeated ``num_samples``
    times (``"dense"``). Both give the same tokens and log-probs up to float rounding.
    """
    if cache_layout not in CACHE_LAYOUTS:
        raise ValueError(f"decode: cache_layout={cache_layout!r}; valid: {', '.join(CACHE_LAYOUTS)}")
    chex.assert_rank([prompt_tokens_BT, prompt_mask_BT], 2)
    chex.assert_equal_shape([prompt_tokens_BT, prompt_mask_BT])
    pad_id = jnp.asarray(pad_id, jnp.int32)
    eos_ids_E = jnp.asarray(eos_ids_E, jnp.int32)
    batch, prompt_len = prompt_tokens_BT.shape
    steps = max_new_tokens
    tokens_BT, mask_BT, positions_BT = left_pad(prompt_tokens_BT, prompt_mask_BT, pad_id)
    rows = batch * num_samples
    if cache_layout == "shared":
        slots_BS = mask_BT.astype(bool)  # [B, T]: the prompts' slots; generated slot i is fed at step i
        cache = init_cache_fn(batch, prompt_len)
        logits_BV, cache = forward_last(model, tokens_BT, positions_BT, slots_BS, cache, jnp.int32(0))
        cache = shared_prompt_cache(cache, init_cache_fn(rows, steps))
        first_slot = 0
    else:
        slots_BS = jnp.concatenate([mask_BT.astype(bool), jnp.ones((batch, steps), bool)], axis=1)
        cache = init_cache_fn(batch, prompt_len + steps)
        logits_BV, cache = forward_last(model, tokens_BT, positions_BT, slots_BS, cache, jnp.int32(0))
        cache = repeat_rows(cache, num_samples, axis=CACHE_BATCH_AXIS)  # [..., B, S, K, H] (stacked or not)
        slots_BS = repeat_rows(slots_BS, num_samples)
        first_slot = prompt_len
    logits_BV, tokens_BT, mask_BT = repeat_rows((logits_BV, tokens_BT, mask_BT), num_samples)
    prompt_lens_B = jnp.sum(mask_BT, axis=-1).astype(jnp.int32)

    def choose(step: Array, logits_BV: Array) -> tuple[Array, Array]:
        return strategies.next_token(jax.random.fold_in(rng, step), logits_BV, temperature=temperature,
                                     top_k=top_k, top_p=top_p, use_greedy=use_greedy)

    first_B, first_logp_B = choose(jnp.int32(0), logits_BV)
    state = DecodeState(
        step=jnp.int32(1),
        cache=cache,
        last_B=first_B,
        done_B=is_eos(first_B, eos_ids_E),
        tokens_BC=jnp.full((rows, steps), pad_id, jnp.int32).at[:, 0].set(first_B),
        mask_BC=jnp.zeros((rows, steps), jnp.int32).at[:, 0].set(1),
        logp_BC=jnp.zeros((rows, steps), jnp.float32).at[:, 0].set(first_logp_B),
    )

    def cond(s: DecodeState) -> Array:
        return (s.step < steps) & ~jnp.all(s.done_B)

    def body(s: DecodeState) -> DecodeState:
        fed = s.step - 1  # completion index of the token fed to the model now
        positions_B1 = (prompt_lens_B + fed)[:, None]
        logits_BV, cache = forward_last(model, s.last_B[:, None], positions_B1, slots_BS, s.cache,
                                        first_slot + fed)
        new_B, logp_B = choose(s.step, logits_BV)
        live_B = ~s.done_B
        new_B = jnp.where(live_B, new_B, pad_id)
        logp_B = jnp.where(live_B, logp_B, 0.0)
        write = lambda buf_BC, col_B: jax.lax.dynamic_update_slice(buf_BC, col_B[:, None], (0, s.step))  # noqa: E731
        return DecodeState(
            step=s.step + 1,
            cache=cache,
            last_B=new_B,
            done_B=s.done_B | (live_B & is_eos(new_B, eos_ids_E)),
            tokens_BC=write(s.tokens_BC, new_B),
            mask_BC=write(s.mask_BC, live_B.astype(jnp.int32)),
            logp_BC=write(s.logp_BC, logp_B),
        )

    with jax.named_scope(DECODE_SCOPE):  # names the loop in the HLO (grpojax.sharding.hlo.loop_collective_bytes)
        final = jax.lax.while_loop(cond, body, state)
    return SampleOutput(
        completion_tokens_BC=final.tokens_BC,
        completion_mask_BC=final.mask_BC,
        completion_logp_BC=final.logp_BC,
        truncated_B=~final.done_B,
        prompt_tokens_BT=tokens_BT,
        prompt_mask_BT=mask_BT,
        num_steps=final.step,
    )
