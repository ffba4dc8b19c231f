"""The GRPO task: rollouts with the current policy, then ``num_iterations`` GRPO updates on each rollout.

One optimizer step consumes ``train.batch_size`` completions = ``batch_size / num_generations`` prompts.
With ``num_iterations`` (mu) > 1 the same scored rollout is reused for mu consecutive optimizer steps;
checkpoints are written at rollout boundaries. The old log-probs are the trainer's, never the sampler's
(ALGORITHMS.md 1.4): the first update on a rollout is on-policy (ratio exactly 1, also in bf16) and
returns its forward's log-probs, which are the old log-probs of the mu - 1 updates that follow. The
sampler / trainer mismatch is logged on the first update (``sampler/logp_max_abs_diff`` / ``_mean_abs_diff``).
The reference for the KL term is the initial policy (``model.ref_path`` to use another checkpoint; under
LoRA the initial adapters are zero, so the reference is the base model). With ``grpo.robust.group_column``
the run is group-robust GRPO (:mod:`grpojax.rollout.groups`, :mod:`grpojax.train.steps.robust_grpo`):
each rollout carries its completions' groups and scores, and the step weights the groups' losses by
alpha / mu.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from grpojax.rollout import text_rewards
from grpojax.rollout.dynamic_sampling import dynamic_sample
from grpojax.rollout.groups import drop_absent, prompt_groups, robust_batch, score_column
from grpojax.rollout.records import completion_records
from grpojax.rollout.scoring import Scorer
from grpojax.train.steps.forward import reference_logp_fn
from grpojax.train.steps.grpo import GRPOSettings, grpo_step
from grpojax.train.steps.settings import from_section
from grpojax.train.tasks.base import BaseTask, host_row


class GRPOTask(BaseTask):
    kind = "grpo"

    def __init__(self, cfg, *, reward_model_scorer=None):
        super().__init__(cfg)
        g = cfg.grpo
        self.G = g.num_generations
        self.scorer = Scorer(cfg, self.tok, reward_model_scorer, mesh=self.mesh)
        text_rewards.check_columns(self.scorer.funcs, self.dataset.column_names, cfg.data.path or cfg.data.format)
        self.group_names, robust = None, None
        if g.robust.group_column is not None:
            self.group_names, _, robust = prompt_groups(cfg, self.dataset)
            self.score_col = score_column(cfg, self.scorer.names)
        self.settings = from_section(GRPOSettings, g, emit_logp=g.num_iterations > 1, group_robust=robust)
        if g.shared_prefix:  # a prompt's G rows must sit on the device of its prompt (docs/shared_prefix.md)
            self.placement.check_rows(cfg.train.batch_size // cfg.train.grad_accum // self.G,
                                      "grpo.shared_prefix: prompts per micro-batch")
        self._rollout = None
        self._samples = None  # (prompts, Rollout, host advantages) of the latest rollout, for sample_records

    def data_options(self) -> dict:
        return {"prompt_groups": self.cfg.grpo.robust.group_column}

    def loader_rows(self) -> int:
        return self.cfg.train.batch_size // self.cfg.grpo.num_generations  # prompts per step

    def init_state(self):
        robust = self.settings.group_robust
        state = super().init_state(robust=None if robust is None else robust.weights().init())
        if self.settings.beta > 0:
            self._ref = self.frozen_reference(state)
            self._ref_logp = reference_logp_fn(self._ref.graphdef, self.settings.temperature, mesh=self.mesh,
                                               shared_group=self.G if self.settings.shared_prefix else None)
        return state

    def _compile(self, graphdef):
        self._step = self.jit_step(functools.partial(grpo_step, graphdef=graphdef, tx=self.tx,
                                                     settings=self.settings, num_micro=self.cfg.train.grad_accum),
                                   self.cfg.train.batch_size)

    def rollout(self, state, rng):
        """The next prompts (every host reads the whole rollout's prompts: reward functions score all
        completions, with the prompts' other data columns) -> sampled with the sharded policy and a sharded
        KV cache -> scored -> the step's batch with rows over the batch axes. With
        ``grpo.dynamic_sampling_max_rounds`` > 0, DAPO's dynamic sampling
        (:mod:`grpojax.rollout.dynamic_sampling`): rounds of further prompts replace the groups whose
        rewards have no spread."""
        g, holder = self.cfg.grpo, {"model": self.model_of(state)}

        def sample_round(round_rng):
            rows = self.next_rows()
            holder["model"], ro = self.sample_prompts(holder["model"], list(rows["prompt"]), round_rng, g, self.scorer,
                                                      columns=rows, scale_rewards=g.scale_rewards,
                                                      mask_truncated_completions=g.mask_truncated_completions)
            if self.settings.group_robust is not None:
                ids = np.repeat([self.group_names.index(str(v)) for v in rows["group"]], self.G)
                ro.batch.update(robust_batch(ro.scores_NR, ids, aggregation=g.aggregation,
                                             weights=g.reward_weights or None, column=self.score_col))
            return ro

        if g.dynamic_sampling_max_rounds:
            rngs = iter(jax.random.split(rng, g.dynamic_sampling_max_rounds))
            ro = dynamic_sample(lambda: sample_round(next(rngs)), self.loader_rows(), self.G,
                                g.dynamic_sampling_max_rounds)
        else:
            ro = sample_round(rng)
        prompts = ro.prompts[::self.G]  # each group's prompt (dynamic sampling mixes the rounds' groups)
        self._samples = (prompts, ro, np.asarray(ro.batch["advantages_B"], np.float32))  # host copies
        ro = ro._replace(batch=self.placement.full_rows(ro.batch))
        if self.settings.beta > 0:
            ro.batch["ref_logp_BC"] = self.placement.full_rows(self._ref_logp(*self.ref_arrays(state), ro.batch))
        return ro

    def steps_per_call(self, step: int, total: int) -> int:
        return min(self.cfg.grpo.num_iterations, total - step)

    def sample_records(self, limit: int = 8):
        """``(key, records)`` of the latest rollout for ``completions.jsonl``
        (:func:`grpojax.rollout.records.completion_records` with each completion's advantage); ``key``
        identifies the rollout (written once)."""
        if self._samples is None:
            return None, []
        prompts, ro, adv = self._samples
        return ro, completion_records(prompts, ro.completions, ro.scores_NR, self.scorer.names, ro.rewards_N,
                                      self.G, limit, advantage=adv)

    def train_steps(self, state, step, rngs):
        ro = self.rollout(state, jax.random.fold_in(rngs[0], 1))
        self._rollout = ro
        rows, batch = [], ro.batch
        for i, rng in enumerate(rngs):
            state, metrics = self._step(state, batch, rng)
            old_logp = metrics.pop("old_logp_BC", None)
            if i == 0 and len(rngs) > 1:  # the later updates reuse the first (pre-update) forward's log-probs
                keep = self.settings.sampler_is_cap is not None  # the IS correction needs the sampler's
                batch = {k: v for k, v in ro.batch.items() if keep or k != "sampler_logp_BC"}
                batch["old_logp_BC"] = self.placement.full_rows(old_logp)
            row = drop_absent(host_row(metrics, self.group_names))
            if i > 0:  # the sampler / trainer mismatch is the rollout's, measured before its first update
                row = {k: v for k, v in row.items() if k not in ("sampler/logp_max_abs_diff",
                                                                 "sampler/logp_mean_abs_diff")}
            rows.append({**ro.metrics, **row})
        return state, rows

    def evaluate(self, state, prompts: list, *, batch_prompts: int | None = None, seed: int = 0,
                 columns: dict | None = None) -> dict:
        """Mean reward and per-aspect scores of the policy in ``state`` on ``prompts`` (G samples each,
        the training sampling settings; ``columns``: their other data columns, one value per prompt); no
        update (:meth:`BaseTask.evaluate_policy`)."""
        return self.evaluate_policy(state, prompts, self.cfg.grpo, self.scorer,
                                    batch_prompts=batch_prompts, seed=seed, columns=columns)

