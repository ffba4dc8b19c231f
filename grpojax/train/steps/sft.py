"""The pure SFT step: next-token cross-entropy on response tokens only.

Batch: ``prompt_BQ, prompt_mask_BQ`` (left-padded) and ``completion_BC, completion_mask_BC`` (the
response, right-padded, EOS included). Loss = ``-Σ m log p / Σ m`` over the whole step's response tokens
(token-mean over the full batch, so gradient accumulation does not change it). ``sft_nll_sums``: the
same loss's sums (the step's micro-batches and the held-out pairs of ``train.eval_every``).

A packed batch (``data.packing``: ``input_ids_BT, positions_BT, segment_ids_BT, loss_mask_BT``, see
:mod:`grpojax.data.packing`) sums the same response tokens' log-probs
(:func:`grpojax.train.steps.packed.packed_logprobs`) over the same count, so loss and gradient are the
unpacked run's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from grpojax.train.steps.accumulate import Sum, accumulate, apply_gradients
from grpojax.train.steps.forward import completion_logprobs
from grpojax.train.steps.packed import packed_logprobs
from grpojax.train.steps.state import TrainState, merge_model


def sft_step(state: TrainState, batch: dict, rng: jax.Array, *, graphdef, tx,
             num_micro: int = 1, logprob_chunk: int | None = 128):
    del rng
    num_items = jnp.maximum(jnp.sum(_loss_mask(batch).astype(jnp.float32)), 1.0)

    def loss_fn(params, mb):
        nll_sum, tokens = sft_nll_sums(params, state.frozen, mb, graphdef=graphdef, logprob_chunk=logprob_chunk)
        return nll_sum / num_items, {"tokens": Sum(tokens)}

    loss, grads, metrics = accumulate(loss_fn, state.params, batch, num_micro)
    state, opt_metrics = apply_gradients(state, tx, grads, loss)
    return state, {"loss": loss, "perplexity": jnp.exp(loss), **metrics, **opt_metrics}


def sft_nll_sums(params, frozen, batch: dict, *, graphdef, logprob_chunk: int | None = 128):
    """``(Σ -log p · m, Σ m)`` over the response tokens of ``batch`` (no update): the evaluation sums whose
    ratio over a whole held-out set is its token-mean loss, the training loss's definition."""
    model = merge_model(graphdef, params, frozen)
    mask = _loss_mask(batch).astype(jnp.float32)
    if "segment_ids_BT" in batch:  # packed rows
        logp = packed_logprobs(model, batch["input_ids_BT"], batch["positions_BT"], batch["segment_ids_BT"],
                               chunk_size=logprob_chunk)
    else:
        logp = completion_logprobs(model, batch["prompt_BQ"], batch["prompt_mask_BQ"], batch["completion_BC"],
                                   batch["completion_mask_BC"], chunk_size=logprob_chunk, with_entropy=False).logp_BC
    return -jnp.sum(jnp.where(mask > 0, logp, 0.0) * mask), jnp.sum(mask)


def _loss_mask(batch: dict):
    return batch["loss_mask_BT"] if "segment_ids_BT" in batch else batch["completion_mask_BC"]
