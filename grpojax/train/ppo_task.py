"""The PPO-RLHF task: rollout -> scores -> KL-shaped rewards -> values -> GAE -> epochs of mini-batches.

Per rollout (``train.batch_size`` completions = ``batch_size / ppo.num_generations`` prompts):

1. sample with the current policy (:func:`sample_and_score`), score every aspect with the multi-label
   reward model and/or reward functions, aggregate into one score per completion (``missing_eos_penalty``
   subtracted from truncated completions);
2. one forward pass: rollout log-probs and values (the trainer's, as TRL), reference log-probs;
3. :func:`grpojax.train.ppo.rollout_targets`: ``-kl_coef KL`` per token (``kl_mode="reward"``) + score at
   the last token, GAE (gamma, lam), whitening;
4. ``ppo_epochs`` x ``num_mini_batches`` optimizer steps of :func:`grpojax.train.ppo.ppo_step` on shuffled
   mini-batches (one runner step each; checkpoints fall on rollout boundaries);
5. the KL controller (fixed or adaptive, Ziegler et al. 2019) updates ``kl_coef`` from the rollout's mean
   per-sequence KL; the coefficient is host state saved with the data position, so resumes are exact.

The trainable state is an :class:`grpojax.models.value_head.ActorCritic` (policy + value head [+ critic]);
under LoRA the adapters and the value head train. The reference is the initial policy (``model.ref_path``
for another checkpoint). The shared pieces (scoring, sampling) are reused by the online DPO task.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax.cli import UserError
from grpojax.losses.ppo_rollout import adaptive_kl_controller, fixed_kl_controller
from grpojax.models.value_head import ActorCritic, ValueHead
from grpojax.rollout import reward_math
from grpojax.sampling import sample
from grpojax.sharding import to_host, traced_on_mesh
from grpojax.train import reward_funcs
from grpojax.train.forward import reference_logp_fn
from grpojax.train.ppo import PPOSettings, policy_and_values, ppo_step, rollout_targets
from grpojax.train.runner import build_model, maybe_lora
from grpojax.train.state import TrainState, merge_model, split_model
from grpojax.train.tasks import BaseTask, host_row


class RewardScorer:
    """``(sample_batch, prompts_N, texts_N) -> [N, R]`` aspect scores: reward-model aspects first, then one
    column per reward function (the column order of ``names``, as GRPO)."""

    def __init__(self, rc, cfg, tok, reward_model_scorer=None, *, mesh=None):
        self.rc = rc
        self.funcs = [reward_funcs.resolve(s, f"{cfg.kind}.reward_funcs") for s in rc.reward_funcs]
        self.rm = reward_model_scorer
        if rc.reward_model is not None and self.rm is None:
            from grpojax.train.reward_task import load_reward_scorer

            self.rm = load_reward_scorer(rc.reward_model, cfg, tok, mesh=mesh, section=cfg.kind)
        names = list(rc.aspects) + reward_funcs.reward_names(self.funcs)
        if len(set(names)) != len(names):
            names = list(rc.aspects) + [f"func{i}_{s}" for i, s in enumerate(rc.reward_funcs)]
        self.names = names

    def __call__(self, batch, prompts, texts) -> np.ndarray:
        cols = []
        if self.rm is not None:
            cols.append(np.asarray(to_host(self.rm(batch, prompts, texts)), np.float32))
        if self.funcs:
            cols.append(reward_funcs.score(self.funcs, self.rc.reward_funcs, prompts, texts))
        return np.concatenate(cols, axis=-1)


class Sampled(NamedTuple):
    batch: dict              # prompt_BP, prompt_mask_BP, completion_BL, completion_mask_BL, sampler_logp_BL
    rewards_N: np.ndarray    # aggregated reward per completion (NaN = no applicable aspect)
    truncated_N: np.ndarray  # hit the length limit without EOS
    texts: list              # decoded completions, prompt-major
    metrics: dict            # host floats: reward, reward_std, rewards/<aspect>/..., completions/...


def sample_and_score(policy, task: BaseTask, rc, scorer: RewardScorer, rng) -> Sampled:
    """Next prompts of ``task.loader`` -> ``rc.num_generations`` samples each -> aggregated rewards.

    Every host reads the rollout's prompts whole; ``task.sampling_inputs`` puts the policy and the prompts
    on the rollout mesh (rows over the batch axes where they divide) with a sharded KV cache; the sampled
    arrays in ``batch`` are global (on the rollout mesh), the decoded texts and rewards are whole on every
    host."""
    rows = task.loader.dataset[next(task.loader.iterator).tolist()]
    prompts = list(rows["prompt"])
    pb = task.tok.prompt_batch(prompts, task.cfg.data.max_prompt_length)
    policy, ids, mask, cache_fn = task.sampling_inputs(policy, pb.prompt_ids_BT, pb.prompt_mask_BT)
    G = rc.num_generations
    out = sample(policy, ids, mask, rng,
                 max_new_tokens=rc.max_completion_length, temperature=rc.temperature, top_k=rc.top_k,
                 top_p=None if rc.top_p >= 1.0 else rc.top_p, eos_ids=task.tok.eos_ids, pad_id=task.tok.pad_id,
                 num_samples=G, cache_fn=cache_fn)
    tokens, mask, truncated = to_host((out.completion_tokens_BT, out.completion_mask_BT, out.truncated_B))
    texts = [task.tok.decode(r[: int(m.sum())]) for r, m in zip(tokens, mask)]
    batch = {"prompt_BP": out.prompt_tokens_BT, "prompt_mask_BP": out.prompt_mask_BT,
             "completion_BL": out.completion_tokens_BT, "completion_mask_BL": out.completion_mask_BT}
    scores_NR = np.asarray(scorer(batch, [p for p in prompts for _ in range(G)], texts), np.float32)
    if scores_NR.shape != (len(texts), len(scorer.names)):
        raise ValueError(f"reward scores have shape {scores_NR.shape}, expected ({len(texts)}, "
                         f"{len(scorer.names)}) for aspects {scorer.names}")
    rewards_BG, _, reward_metrics = reward_math(jnp.asarray(scores_NR.reshape(len(prompts), G, -1)),
                                                aggregation=rc.aggregation, weights=rc.reward_weights,
                                                names=scorer.names)
    rewards_N = np.asarray(rewards_BG, np.float32).reshape(-1)
    batch["sampler_logp_BL"] = out.completion_logp_BT
    lengths = mask.sum(axis=1)
    valid = rewards_N[~np.isnan(rewards_N)]
    metrics = {"reward": float(valid.mean()) if valid.size else float("nan"),
               "reward_std": float(valid.std(ddof=1)) if valid.size > 1 else 0.0,
               "completions/mean_length": float(lengths.mean()), "completions/max_length": float(lengths.max()),
               "completions/min_length": float(lengths.min()),
               "completions/clipped_ratio": float(truncated.mean()),
               **{k: float(v) for k, v in jax.device_get(reward_metrics).items() if k.startswith("rewards/")}}
    return Sampled(batch, rewards_N, truncated, texts, metrics)


class PPOTask(BaseTask):
    kind = "grpo"  # prompt data, as GRPO

    def __init__(self, cfg, *, reward_model_scorer=None):
        super().__init__(cfg)
        p = cfg.ppo
        self.G = p.num_generations
        self.scorer = RewardScorer(p, cfg, self.tok, reward_model_scorer, mesh=self.mesh)
        self.settings = PPOSettings(clip_eps=p.cliprange, clip_value=p.cliprange_value, vf_coef=p.vf_coef,
                                    gamma=p.gamma, lam=p.lam, kl_in_loss=p.kl_mode == "loss",
                                    kl_estimator=p.kl_estimator, whiten_rewards=p.whiten_rewards,
                                    whiten_advantages=p.whiten_advantages, reduction=p.reduction,
                                    temperature=p.temperature)
        self.controller = (adaptive_kl_controller(p.kl_coef, target=p.kl_target, horizon=p.kl_horizon)
                           if p.adaptive_kl else fixed_kl_controller(p.kl_coef))
        self.kl_state = self.controller.init()
        self.use_ref = p.kl_coef > 0 or p.adaptive_kl
        self.mini = cfg.train.batch_size // p.num_mini_batches
        self.check_rows(self.mini, "train.batch_size / ppo.num_mini_batches")
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

        state, graphdef, self.state_sh = self.place(build)
        self.graphdef = graphdef
        if self.use_ref:
            if self.cfg.model.ref_path:
                self._ref = self.frozen_reference(state)
            else:  # the initial policy, from the placed state (same shardings; params copied)
                model = merge_model(graphdef, state.params, state.frozen)
                g, ref_params, _ = split_model(model.policy, self.lora)
                self._ref = (g, jax.tree.map(jnp.copy, ref_params), None)  # frozen: ref_frozen_of(state)
            self._ref_logp = reference_logp_fn(self._ref[0], self.settings.temperature, mesh=self.mesh)
        self._compile(graphdef)
        return state

    def _compile(self, graphdef):
        s = self.settings
        self._step = self.jit_step(functools.partial(ppo_step, graphdef=graphdef, tx=self.tx, settings=s,
                                                     num_micro=self.num_micro), self.mini)

        def evaluate(params, frozen, b):
            out = policy_and_values(merge_model(graphdef, params, frozen), b["prompt_BP"], b["prompt_mask_BP"],
                                    b["completion_BL"], b["completion_mask_BL"], temperature=s.temperature,
                                    chunk_size=s.logprob_chunk, with_entropy=False)
            return out.logp_BL, out.values_BL

        self._evaluate = jax.jit(traced_on_mesh(evaluate, self.mesh))
        self._targets = jax.jit(functools.partial(rollout_targets, settings=s))

    def model_of(self, state):
        return merge_model(self.graphdef, state.params, state.frozen).policy

    def ref_frozen_of(self, state):
        return split_model(self.model_of(state), self.lora)[2]

    def steps_per_call(self, step: int, total: int) -> int:
        p = self.cfg.ppo
        return min(p.ppo_epochs * p.num_mini_batches, total - step)

    def rollout(self, state, rng):
        """One scored rollout with every PPO target; returns ``(batch, metrics)``."""
        p = self.cfg.ppo
        ro = sample_and_score(self.model_of(state), self, p, self.scorer, rng)
        scores = np.nan_to_num(ro.rewards_N, nan=0.0)
        if p.missing_eos_penalty is not None:
            scores = scores - p.missing_eos_penalty * ro.truncated_N
        b = self.full_rows({k: v for k, v in ro.batch.items() if k != "sampler_logp_BL"})
        mask = b["completion_mask_BL"]
        logp, values = self.full_rows(self._evaluate(state.params, state.frozen, b))
        if self.use_ref:
            ref_logp = self.full_rows(self._ref_logp(*self.ref_arrays(state), b))
        else:
            ref_logp = logp
        kl_coef = self.kl_state.kl_coef
        targets, obj = self._targets(self.full_rows(np.asarray(scores, np.float32)), logp, ref_logp, values,
                                     mask, kl_coef=kl_coef)
        targets = self.full_rows(targets)
        b.update(old_logp_BL=logp, old_values_BL=values, advantages_BL=targets["advantages_BL"],
                 returns_BL=targets["returns_BL"])
        if self.settings.kl_in_loss:
            b.update(ref_logp_BL=ref_logp,
                     kl_coef_B=self.full_rows(np.full((mask.shape[0],), float(kl_coef), np.float32)))
        # on the host: the sampler's log-probs may live on the rollout mesh, the trainer's on the training mesh
        logp_h, sampler_h, mask_h = to_host((logp, ro.batch["sampler_logp_BL"], mask))
        diff = np.max(np.abs(logp_h - sampler_h) * mask_h)
        metrics = {**ro.metrics, **host_row(obj), "kl_coef": float(kl_coef),
                   "frac_reward_nan": float(np.isnan(ro.rewards_N).mean()),
                   "sampler/logp_max_abs_diff": float(diff)}
        self.kl_state = self.controller.update(jnp.asarray(obj["objective/kl"]), self.kl_state,
                                               n_steps=mask.shape[0])
        return b, metrics

    def train_steps(self, state, step, rngs):
        p = self.cfg.ppo
        batch, ro_metrics = self.rollout(state, jax.random.fold_in(rngs[0], 1))
        N = batch["completion_BL"].shape[0]
        shuffle_key = jax.random.fold_in(rngs[0], 2)
        host = to_host(batch)  # mini-batches are cut on the host: an eager gather of sharded rows is a collective
        rows = []
        for i, rng in enumerate(rngs):
            epoch, k = divmod(i, p.num_mini_batches)
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), N))
            idx = perm[k * self.mini:(k + 1) * self.mini]
            state, metrics = self._step(state, self.full_rows({key: v[idx] for key, v in host.items()}), rng)
            rows.append({**ro_metrics, **host_row(metrics), "ppo/epoch": float(epoch)})
        return state, rows

    def evaluate(self, state, prompts: list, *, batch_prompts: int | None = None, seed: int = 0) -> dict:
        """Mean reward and per-aspect scores of the policy on held-out ``prompts`` with the ``ppo``
        section's sampling and reward, as GRPO's evaluation (:meth:`BaseTask.evaluate_policy`)."""
        return self.evaluate_policy(state, prompts, self.cfg.ppo, self.scorer, self.scorer.names,
                                    batch_prompts=batch_prompts, seed=seed)

    def position(self) -> dict:
        return {**super().position(), "kl_coef": float(self.kl_state.kl_coef)}

    def restore_position(self, d: dict) -> None:
        super().restore_position(d)
        if "kl_coef" in d:
            self.kl_state = self.kl_state._replace(kl_coef=jnp.asarray(d["kl_coef"], jnp.float32))
