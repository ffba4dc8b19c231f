"""Offline preference training: DPO / IPO / hinge / GR-DPO / GR-IPO / IS-DPO (``scripts/train_dpo.py``).

A frozen reference's log-probs are computed per batch (or read from the dataset), the pure
``grpojax.train.steps.preference.preference_step`` updates the policy (and the group weights alpha of the robust
losses), and ``after_steps`` evaluates per group and applies LR-on-plateau (the GR-IPO paper's schedule). With
``data.packing`` a step's chosen and rejected sequences are packed into rows (:mod:`grpojax.data.packing`),
the reference log-probs computed from the same packed rows (or read from the precomputed table); evaluation
and the precomputed table stay unpacked.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from grpojax import sharding as shd
from grpojax.cli import UserError
from grpojax.data import COLLATE, load_from_config, padded_batches
from grpojax.data.packing import pack_preference
from grpojax.losses.dpo import dpo_loss, preference_metrics
from grpojax.losses.robust import group_metrics
from grpojax.metrics import format_duration
from grpojax.train.steps.optim import Plateau
from grpojax.train.steps.preference import (
    BASE_LOSS,
    PreferenceSettings,
    init_robust_state,
    jitted_pair_logprobs,
    preference_step,
)
from grpojax.train.steps.settings import from_section
from grpojax.train.tasks.base import BaseTask, host_row, packing_metrics, rows_multiple, split_sequences


class PreferenceTask(BaseTask):
    """DPO / IPO / hinge / GR-DPO / GR-IPO / IS-DPO with a frozen reference and per-group evaluation."""

    kind = "dpo"

    def __init__(self, cfg):
        super().__init__(cfg)
        pc = cfg.preference
        self.group_names = list(self.dataset.features["group"].names)
        counts = np.bincount(np.asarray(self.dataset["group"]), minlength=len(self.group_names))
        if pc.loss.startswith(("gr_", "is_")) and np.any(counts == 0):
            empty = [g for g, c in zip(self.group_names, counts) if c == 0]
            raise UserError(f"{cfg.data.path}: groups {empty} have no training pairs")
        self.settings = from_section(PreferenceSettings, pc, num_groups=len(self.group_names),
                                     group_sizes=tuple(int(c) for c in counts),
                                     plateau_factor=cfg.train.plateau.factor)
        if pc.shared_prefix:  # a pair's two responses sit on the device of its prompt (docs/shared_prefix.md)
            self.placement.check_rows(cfg.train.batch_size // cfg.train.grad_accum,
                                      "preference.shared_prefix: pairs per micro-batch")
        p = cfg.train.plateau
        self.plateau = Plateau(p.factor, p.patience, p.min_delta) if p.enabled else None
        self.eval_set, self._eval_metrics = None, None
        if cfg.data.eval_split or cfg.data.eval_path:
            self.eval_set = load_from_config(cfg.data, self.kind, split=cfg.data.eval_split or "validation")
        elif cfg.train.eval_every:
            raise UserError("train.eval_every > 0 needs evaluation data: set data.eval_split or data.eval_path")

    def init_state(self):
        state = super().init_state(robust=init_robust_state(self.settings))
        self._ref = self.frozen_reference(state)
        self._ref_logps = jitted_pair_logprobs(self._ref[0], self.settings, self.mesh)
        self._ref_table = {}
        return state

    def _ref_rows(self, table: str, state) -> str | None:
        """With ``preference.precompute_ref_logps``: the name of the precomputed table of the ``"train"`` /
        ``"eval"`` pairs, computed on first use (so ``scripts/evaluate.py`` never runs the training pairs);
        once every table a run needs exists, the reference's weights are freed. None without the option."""
        if not self.cfg.preference.precompute_ref_logps:
            return None
        if table not in self._ref_table:
            data, name = (self.dataset, "training") if table == "train" else (self.eval_set, "evaluation")
            self._ref_table[table] = self._precompute(data, state, name)
            if "train" in self._ref_table and (self.eval_set is None or "eval" in self._ref_table):
                self._ref = None  # every reference log-prob a step or an evaluation needs is in the tables
        return table

    def _precompute(self, dataset, state, name: str) -> np.ndarray:
        """``[N, 2]`` float32 reference log-probs (chosen, rejected) of every pair of ``dataset``: one
        forward over it in batches of ``train.batch_size`` (progress every ~10% on process 0)."""
        d, bs, n = self.cfg.data, self.cfg.train.batch_size, len(dataset)
        table, done, t0, shown = np.zeros((n, 2), np.float32), 0, time.time(), 0
        for idx, real in padded_batches(n, bs):
            raw = COLLATE[self.kind](self.tok, dataset[idx], max_prompt_length=d.max_prompt_length,
                                     max_length=d.max_length)
            chosen, rejected = shd.to_host(self._ref_logps(*self.ref_arrays(state), self._pairs(raw, local=False)))
            table[idx[:real], 0], table[idx[:real], 1] = chosen[:real], rejected[:real]
            done += real
            if shd.is_main_process() and (10 * done >= (shown + 1) * n or done == n):
                shown, rate = 10 * done // n, done / max(time.time() - t0, 1e-9)
                print(f"reference log-probs ({name} pairs): {done}/{n}, {rate:.1f} pairs/s, "
                      f"ETA {format_duration((n - done) / rate)}", flush=True)
        return table

    def _pairs(self, raw: dict, *, local: bool) -> dict:
        """Collated pairs -> the step's sequence arrays on the mesh (this host's rows when ``local``)."""
        P = self.cfg.data.max_prompt_length
        c, r = split_sequences(raw, P, "chosen_"), split_sequences(raw, P, "rejected_")
        batch = {"prompt_BQ": c["prompt_BQ"], "prompt_mask_BQ": c["prompt_mask_BQ"],
                 "chosen_BC": c["completion_BC"], "chosen_mask_BC": c["completion_mask_BC"],
                 "rejected_BC": r["completion_BC"], "rejected_mask_BC": r["completion_mask_BC"],
                 "group_id_B": np.asarray(raw["group_B"], np.int32)}
        return self.placement.global_rows(batch) if local else self.placement.full_rows(batch)

    def _compile(self, graphdef):
        self._step = self.jit_step(functools.partial(preference_step, graphdef=graphdef, tx=self.tx,
                                                     settings=self.settings,
                                                     num_micro=self.cfg.train.grad_accum),
                                   self.cfg.train.batch_size)
        self._policy_logps = jitted_pair_logprobs(graphdef, self.settings, self.mesh)

    def make_batch(self, raw: dict, state, *, local: bool = True, rows=None, table: str | None = None) -> dict:
        """Collated pairs -> the step's batch on the mesh, with the frozen reference's log-probs. ``raw``
        holds this host's rows of a training batch (``local``) or a whole evaluation batch; the log-probs
        are the dataset rows ``rows`` of a precomputed ``table`` (:meth:`_ref_rows`), else one reference
        forward of the batch."""
        d = self.cfg.data
        if d.packing and local:  # training pairs: chosen and rejected sequences packed into rows
            self._packed = pack_preference(raw, d.max_length, self.tok.pad_id, rows_multiple=rows_multiple(self),
                                           names=rows)
            batch = self.placement.global_rows({**self._packed, "group_id_B": np.asarray(raw["group_B"], np.int32)})
        else:
            batch = self._pairs(raw, local=local)
        if table is not None:
            ref = self._ref_table[table][np.asarray(rows)]
            ref = {"c": ref[:, 0], "r": ref[:, 1]}
            ref = self.placement.global_rows(ref) if local else self.placement.full_rows(ref)
            batch["ref_chosen_logp_B"], batch["ref_rejected_logp_B"] = ref["c"], ref["r"]
            return batch
        if self._ref is None:
            raise UserError("preference.precompute_ref_logps: the reference was freed after its log-probs of "
                            "the training and evaluation pairs were precomputed; other pairs need it off")
        ref = self._ref_logps(*self.ref_arrays(state), batch)
        batch["ref_chosen_logp_B"], batch["ref_rejected_logp_B"] = self.placement.full_rows(ref)
        return batch

    def train_steps(self, state, step, rngs):
        raw = next(self.loader)
        batch = self.make_batch(raw, state, rows=self.loader.last_indices, table=self._ref_rows("train", state))
        state, metrics = self._step(state, batch, rngs[0])
        row = host_row(metrics, self.group_names) | packing_metrics(self.cfg.data, getattr(self, "_packed", {}))
        row["lr_scale"] = float(state.lr_scale)
        return state, [row]

    def evaluate(self, state) -> dict:
        """Per-group loss / reward accuracy / log-prob accuracy over the whole evaluation set."""

        if self.eval_set is None:
            raise UserError("no evaluation data: set data.eval_path or data.eval_split")
        d, bs, s = self.cfg.data, self.cfg.train.batch_size, self.settings
        if self._eval_metrics is None:
            @jax.jit
            def pair_metrics(pw, pl, rw, rl):
                pm = preference_metrics(pw, pl, rw, rl, beta=s.beta)
                return (dpo_loss(pw, pl, rw, rl, beta=s.beta, loss_type=BASE_LOSS[s.loss],
                                 label_smoothing=s.label_smoothing), pm.reward_accuracy, pm.logprob_accuracy)

            self._eval_metrics = pair_metrics
        losses, racc, lacc, groups = [], [], [], []
        for idx, real in padded_batches(len(self.eval_set), bs):  # every pair once
            batch = self.make_batch(COLLATE[self.kind](self.tok, self.eval_set[idx],
                                                       max_prompt_length=d.max_prompt_length,
                                                       max_length=d.max_length), state, local=False,
                                    rows=idx, table=self._ref_rows("eval", state))
            pw, pl = self._policy_logps(state.params, state.frozen, batch)
            out = self._eval_metrics(pw, pl, batch["ref_chosen_logp_B"], batch["ref_rejected_logp_B"])
            # on the host: eager slicing / concatenation of batch-sharded arrays runs cross-device
            # collectives op by op (XLA:CPU's all-to-all rendezvous timed out on 8 fake devices)
            host = shd.to_host((*out, batch["group_id_B"]))
            for acc, x in zip((losses, racc, lacc, groups), host):
                acc.append(x[:real])
        cat = lambda xs: jnp.asarray(np.concatenate(xs))  # noqa: E731
        gm = group_metrics(cat(losses), cat(racc), cat(lacc), cat(groups),
                           num_groups=self.settings.num_groups)
        out = {"eval/loss": jnp.mean(cat(losses)), "eval/reward_accuracy": jnp.mean(cat(racc)),
               "eval/worst_group/loss": gm.worst_loss,
               "eval/worst_group/reward_accuracy": gm.worst_reward_accuracy,
               "eval/worst_group/logprob_accuracy": gm.worst_logprob_accuracy,
               "eval/group_loss": gm.loss_M, "eval/group_reward_accuracy": gm.reward_accuracy_M}
        return host_row(out, self.group_names)

    def after_steps(self, state, step, rows):
        every = self.cfg.train.eval_every
        if not every or step % every:
            return state
        ev = self.evaluate(state)
        rows[-1].update(ev)
        if self.plateau is not None:
            key = "eval/worst_group/loss" if self.settings.weighted else "eval/loss"
            if self.plateau.update(ev[key]):
                print(f"step {step}: {key} plateaued; LR x{self.plateau.factor} "
                      f"(cut {self.plateau.cuts})", flush=True)
            state = state._replace(lr_scale=jnp.asarray(self.plateau.scale, jnp.float32))
        return state

    def position(self) -> dict:
        d = super().position()
        if self.plateau is not None:
            d["plateau"] = self.plateau.state()
        return d

    def restore_position(self, d: dict) -> None:
        super().restore_position(d)
        if self.plateau is not None and "plateau" in d:
            self.plateau.restore(d["plateau"])
