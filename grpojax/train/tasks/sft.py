"""The SFT task: (prompt, response) pairs -> token-mean response NLL, one jitted step per optimizer step;
held-out ``eval/loss`` and ``eval/perplexity`` every ``train.eval_every`` steps. With ``data.packing`` a
step's pairs are packed several per row (:mod:`grpojax.data.packing`); the held-out pass stays unpacked."""

from __future__ import annotations

import functools

import jax
import numpy as np

from grpojax import sharding as shd
from grpojax.data import COLLATE, padded_batches
from grpojax.data.packing import pack_sft
from grpojax.train.steps.sft import sft_nll_sums, sft_step
from grpojax.train.tasks.base import BaseTask, host_row, packing_metrics, rows_multiple, split_sequences


class SFTTask(BaseTask):
    kind = "sft"

    def _compile(self, graphdef):
        self._step = self.jit_step(functools.partial(sft_step, graphdef=graphdef, tx=self.tx,
                                                     num_micro=self.cfg.train.grad_accum),
                                   self.cfg.train.batch_size)

    def train_steps(self, state, step, rngs):
        raw, d = next(self.loader), self.cfg.data
        if d.packing:
            local = pack_sft(raw, d.max_length, self.tok.pad_id, rows_multiple=rows_multiple(self),
                             names=self.loader.last_indices)
        else:
            local = split_sequences(raw, d.max_prompt_length)
        state, metrics = self._step(state, self.placement.global_rows(local), rngs[0])
        return state, [host_row(metrics) | packing_metrics(d, local)]

    def periodic_eval(self, state) -> dict:
        """The training loss on the held-out pairs: token-mean response NLL over every pair once
        (``eval/loss``, ``eval/perplexity``), in batches of ``train.batch_size`` (padding rows masked)."""
        d, bs = self.cfg.data, self.cfg.train.batch_size
        if getattr(self, "_eval_nll", None) is None:
            fn = functools.partial(sft_nll_sums, graphdef=self.graphdef)
            self._eval_nll = jax.jit(shd.traced_on_mesh(fn, self.mesh))
        nll = tokens = 0.0
        for idx, real in padded_batches(len(self._eval_data), bs):
            raw = COLLATE[self.kind](self.tok, self._eval_data[idx], max_prompt_length=d.max_prompt_length,
                                     max_length=d.max_length)
            b = split_sequences(raw, d.max_prompt_length)
            b["completion_mask_BC"] = b["completion_mask_BC"].copy()
            b["completion_mask_BC"][real:] = 0
            s, t = shd.to_host(self._eval_nll(state.params, state.frozen, self.placement.full_rows(b)))
            nll, tokens = nll + float(s), tokens + float(t)
        loss = nll / max(tokens, 1.0)
        return {"eval/loss": loss, "eval/perplexity": float(np.exp(loss))}
