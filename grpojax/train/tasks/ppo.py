"""The PPO-RLHF task: rollout -> scores -> KL-shaped rewards -> values -> GAE -> epochs of mini-batches.

Per rollout (``train.batch_size`` completions = ``batch_size / ppo.num_generations`` prompts):

1. sample with the current policy (:func:`grpojax.rollout.sample_and_score`), score every aspect with the multi-label
   reward model and/or reward functions, aggregate into one score per completion (``missing_eos_penalty``
   subtracted from truncated completions);
2. one forward pass: rollout log-probs and values (the trainer's, as TRL), reference log-probs;
3. :func:`grpojax.train.steps.ppo.rollout_targets`: ``-kl_coef KL`` per token (``kl_mode="reward"``) + score at
   the last token, GAE (gamma, lam), whitening;
4. ``ppo_epochs`` x ``num_mini_batches`` optimizer steps of :func:`grpojax.train.steps.ppo.ppo_step` on shuffled
   mini-batches (one runner step each; checkpoints fall on rollout boundaries);
5. the KL controller (fixed or adaptive, Ziegler et al. 2019) updates ``kl_coef`` from the rollout's mean
   per-sequence KL; the coefficient is host state saved with the data position, so resumes are exact.

The trainable state is an :class:`grpojax.models.value_head.ActorCritic` (policy + value head [+ critic]);
under LoRA the adapters and the value head train. The reference is the initial policy (``model.ref_path``
for another checkpoint).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax.cli import UserError
from grpojax.losses.ppo_rollout import adaptive_kl_controller, fixed_kl_controller
from grpojax.models.value_head import ActorCritic, ValueHead
from grpojax.rollout import completion_reward_metrics, text_rewards
from grpojax.rollout.records import completion_records
from grpojax.rollout.scoring import Scorer
from grpojax.sharding import to_host, traced_on_mesh
from grpojax.train.build import build_model, maybe_lora
from grpojax.train.steps.forward import reference_logp_fn
from grpojax.train.steps.ppo import PPOSettings, policy_and_values, ppo_step, rollout_targets
from grpojax.train.steps.settings import from_section
from grpojax.train.steps.state import TrainState, merge_model, split_model
from grpojax.train.tasks.base import BaseTask, host_row
from grpojax.train.tasks.reference import Reference


class PPOTask(BaseTask):
    kind = "grpo"  # prompt data, as GRPO

    def __init__(self, cfg, *, reward_model_scorer=None):
        super().__init__(cfg)
        p = cfg.ppo
        self.G = p.num_generations
        self.scorer = Scorer(cfg, self.tok, reward_model_scorer, mesh=self.mesh)
        text_rewards.check_columns(self.scorer.funcs, self.dataset.column_names, cfg.data.path or cfg.data.format)
        self.settings = from_section(PPOSettings, p)
        self.controller = (adaptive_kl_controller(p.kl_coef, target=p.kl_target, horizon=p.kl_horizon)
                           if p.adaptive_kl else fixed_kl_controller(p.kl_coef))
        self.kl_state = self.controller.init()
        self.use_ref = p.kl_coef > 0 or p.adaptive_kl
        self.mini = cfg.train.batch_size // p.num_mini_batches
        self.placement.check_rows(self.mini, "train.batch_size / ppo.num_mini_batches")
        self.num_micro = 1 if cfg.train.micro_batch_size is None else self.mini // cfg.train.micro_batch_size

    def loader_rows(self) -> int:
        return self.cfg.train.batch_size // self.cfg.ppo.num_generations  # prompts per rollout

    def new_actor_critic(self) -> ActorCritic:
        cfg, p, seed = self.cfg, self.cfg.ppo, self.cfg.train.seed
        policy = self.new_model()
        critic = None
        if p.critic == "separate":  # critic_path None: the same weights as the initial policy
            critic = build_model(cfg.model, seed=seed, path=p.critic_path)
            if self.tok.vocab_size > critic.config.vocab_size:
                raise UserError(f"ppo.critic_path {p.critic_path}: vocab_size {critic.config.vocab_size} < "
                                f"the tokenizer's {self.tok.vocab_size}")
            critic = maybe_lora(critic, cfg.model, seed=seed + 2)
        width = (critic if critic is not None else policy).config.hidden_size
        head = ValueHead(width, init_std=p.value_head_init_std, rngs=nnx.Rngs(seed + 3))
        return ActorCritic(policy, head, critic)

    def born_sharded(self) -> bool:
        return self.cfg.model.path is None and self.cfg.ppo.critic_path is None

    def init_state(self):
        trainable = nnx.Any(nnx.LoRAParam, nnx.PathContains("value_head")) if self.lora else nnx.Param

        def build():
            graphdef, params, frozen = nnx.split(self.new_actor_critic(), trainable, ...)
            state = TrainState(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen,
                               opt_state=self.tx.init(params), rng=jax.random.key(self.cfg.train.seed),
                               lr_scale=jnp.ones((), jnp.float32))
            return state, graphdef

        state, graphdef, self.state_sh = self.placement.place(build, on_disk=self.cfg.model.path is not None)
        self.graphdef = graphdef
        if self.use_ref:
            if self.cfg.model.ref_path:
                self._ref = self.frozen_reference(state)
            else:  # the initial policy, from the placed state (same shardings; params copied)
                model = merge_model(graphdef, state.params, state.frozen)
                g, ref_params, _ = split_model(model.policy, self.lora)
                self._ref = Reference(g, jax.tree.map(jnp.copy, ref_params), None)  # frozen: ref_frozen_of(state)
            self._ref_logp = reference_logp_fn(self._ref.graphdef, self.settings.temperature, mesh=self.mesh)
        self._compile(graphdef)
        return state

    def _compile(self, graphdef):
        s = self.settings
        self._step = self.jit_step(functools.partial(ppo_step, graphdef=graphdef, tx=self.tx, settings=s,
                                                     num_micro=self.num_micro), self.mini)

        def evaluate(params, frozen, b):
            out = policy_and_values(merge_model(graphdef, params, frozen), b["prompt_BQ"], b["prompt_mask_BQ"],
                                    b["completion_BC"], b["completion_mask_BC"], temperature=s.temperature,
                                    chunk_size=s.logprob_chunk, with_entropy=False)
            return out.logp_BC, out.values_BC

        self._evaluate = jax.jit(traced_on_mesh(evaluate, self.mesh))
        self._targets = jax.jit(functools.partial(rollout_targets, settings=s))

    def model_of(self, state):
        return merge_model(self.graphdef, state.params, state.frozen).policy

    def ref_frozen_of(self, state):
        return split_model(self.model_of(state), self.lora)[2]

    def sample_records(self, limit: int = 8):
        """``(key, records)`` of the latest rollout for ``completions.jsonl``
        (:func:`grpojax.rollout.records.completion_records`; ``reward`` is the aggregated score before
        the KL shaping and the EOS penalty)."""
        if getattr(self, "_samples", None) is None:
            return None, []
        prompts, ro = self._samples
        return ro, completion_records(prompts, ro.completions, ro.scores_NR, self.scorer.names, ro.rewards_N,
                                      self.G, limit)

    def steps_per_call(self, step: int, total: int) -> int:
        p = self.cfg.ppo
        return min(p.ppo_epochs * p.num_mini_batches, total - step)

    def rollout(self, state, rng):
        """One scored rollout with every PPO target; returns ``(batch, metrics)``."""
        p = self.cfg.ppo
        rows = self.next_rows()
        prompts = list(rows["prompt"])
        _, ro = self.sample_prompts(self.model_of(state), prompts, rng, p, self.scorer, columns=rows)
        self._samples = (prompts, ro)
        scores = np.nan_to_num(ro.rewards_N, nan=0.0)
        if p.missing_eos_penalty is not None:
            scores = scores - p.missing_eos_penalty * ro.truncated_N
        sampled = {k: v for k, v in ro.batch.items() if k not in ("sampler_logp_BC", "advantages_B")}
        b = self.placement.full_rows(sampled)
        mask = b["completion_mask_BC"]
        logp, values = self.placement.full_rows(self._evaluate(state.params, state.frozen, b))
        if self.use_ref:
            ref_logp = self.placement.full_rows(self._ref_logp(*self.ref_arrays(state), b))
        else:
            ref_logp = logp
        kl_coef = self.kl_state.kl_coef
        targets, obj = self._targets(self.placement.full_rows(np.asarray(scores, np.float32)), logp, ref_logp, values,
                                     mask, kl_coef=kl_coef)
        targets = self.placement.full_rows(targets)
        b.update(old_logp_BC=logp, old_values_BC=values, advantages_BC=targets["advantages_BC"],
                 returns_BC=targets["returns_BC"])
        if self.settings.kl_in_loss:
            b.update(ref_logp_BC=ref_logp,
                     kl_coef_B=self.placement.full_rows(np.full((mask.shape[0],), float(kl_coef), np.float32)))
        # on the host: the sampler's log-probs may live on the rollout mesh, the trainer's on the training mesh
        logp_h, sampler_h, mask_h = to_host((logp, ro.batch["sampler_logp_BC"], mask))
        diff = np.max(np.abs(logp_h - sampler_h) * mask_h)
        metrics = {**completion_reward_metrics(ro), **host_row(obj), "kl_coef": float(kl_coef),
                   "frac_reward_nan": float(np.isnan(ro.rewards_N).mean()),
                   "sampler/logp_max_abs_diff": float(diff)}
        self.kl_state = self.controller.update(jnp.asarray(obj["objective/kl"]), self.kl_state,
                                               n_steps=mask.shape[0])
        return b, metrics

    def train_steps(self, state, step, rngs):
        p = self.cfg.ppo
        batch, ro_metrics = self.rollout(state, jax.random.fold_in(rngs[0], 1))
        N = batch["completion_BC"].shape[0]
        shuffle_key = jax.random.fold_in(rngs[0], 2)
        host = to_host(batch)  # mini-batches are cut on the host: an eager gather of sharded rows is a collective
        rows = []
        for i, rng in enumerate(rngs):
            epoch, k = divmod(i, p.num_mini_batches)
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), N))
            idx = perm[k * self.mini:(k + 1) * self.mini]
            state, metrics = self._step(state, self.placement.full_rows({key: v[idx] for key, v in host.items()}), rng)
            rows.append({**ro_metrics, **host_row(metrics), "ppo/epoch": float(epoch)})
        return state, rows

    def evaluate(self, state, prompts: list, *, batch_prompts: int | None = None, seed: int = 0,
                 columns: dict | None = None) -> dict:
        """Mean reward and per-aspect scores of the policy on held-out ``prompts`` with the ``ppo``
        section's sampling and reward, as GRPO's evaluation (:meth:`BaseTask.evaluate_policy`)."""
        return self.evaluate_policy(state, prompts, self.cfg.ppo, self.scorer,
                                    batch_prompts=batch_prompts, seed=seed, columns=columns)

    def position(self) -> dict:
        return {**super().position(), "kl_coef": float(self.kl_state.kl_coef)}

    def restore_position(self, d: dict) -> None:
        super().restore_position(d)
        if "kl_coef" in d:
            self.kl_state = self.kl_state._replace(kl_coef=jnp.asarray(d["kl_coef"], jnp.float32))
