"""The method sections: ``GRPOConfig``, ``PreferenceConfig`` (offline and online preference losses),
``RewardConfig`` (reward-model training), ``PPOConfig`` and ``OnlineDPOConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

from grpojax.config.checks import check, non_negative, positive


@dataclass(frozen=True)
class RobustGRPOConfig:
    """Group-robust GRPO (ALGORITHMS.md 3; ``grpojax.losses.robust_grpo``), on when ``group_column`` is set:
    the prompts' groups come from that column of the prompt data (``harm_category`` with
    ``data.format: pku_saferlhf``: the first harm category flagged in the prompt's responses, else
    ``none``); alpha starts at the groups' shares mu and moves by exponentiated gradient with step
    ``eta_alpha`` on each rollout's per-group mean ``score`` (``reward`` = the aggregated reward, or one
    name of ``grpo.aspects`` / ``grpo.reward_funcs``); each completion's loss is weighted by
    ``((1 - chi) mu_g + chi alpha_g) / mu_g``."""

    group_column: Union[str, None] = None
    """Prompt-data column naming each prompt's group (null = plain GRPO)."""
    eta_alpha: float = 0.1
    """Step size of alpha's exponentiated-gradient update on the groups' mean scores."""
    chi: float = 1.0
    """Trade-off: 1 = weights from alpha alone, 0 = plain GRPO (weights from the group shares mu)."""
    score: str = "reward"
    """What alpha follows: reward (the aggregated reward) or one aspect / reward function name."""

    def __post_init__(self):
        non_negative(self, "eta_alpha")
        check(0.0 <= self.chi <= 1.0, "chi", f"must be in [0, 1], got {self.chi}")


@dataclass(frozen=True)
class GRPOConfig:
    """Multi-objective GRPO (ALGORITHMS.md 1.2-1.4); TRL names. ``epsilon_high`` None = ``epsilon``;
    ``delta`` None = no two-sided ratio cap; ``top_k`` None = off. Rewards: a multi-label
    ``reward_model`` scoring ``aspects`` and/or rule-based ``reward_funcs`` (names in
    ``grpojax.rewards``), combined by ``aggregation`` with ``reward_weights`` (aspects first, then funcs;
    empty = all 1). ``scale_rewards`` null = ``group``; with ``aggregation: normalize_then_sum`` (GDPO) the
    aggregation itself is the advantage and ``scale_rewards`` must stay unset (ALGORITHMS.md 1.2).
    ``sampler_is_cap`` (null = off): truncated importance-sampling correction of the sampler / trainer
    log-prob mismatch, each token's loss weighted by ``min(pi_old / pi_sampler, cap)`` (TRL's
    ``vllm_importance_sampling_correction`` with ``vllm_importance_sampling_mode: token_truncate`` and
    ``vllm_importance_sampling_cap``). ``use_bias_correction_kl`` (TRL's name; TRL 1.16 defaults it to
    true, here false): each token's KL term multiplied by the differentiated ratio pi_theta / pi_old
    (DeepSeek-V3.2; ALGORITHMS.md 1.4). ``dynamic_sampling_max_rounds`` (0 = off): DAPO's dynamic sampling,
    groups whose rewards have no spread are replaced by groups of further prompts, at most that many
    rollouts per step (``grpojax.rollout.dynamic_sampling``)."""

    num_generations: int = 8
    """Completions sampled per prompt (the group size G)."""
    num_iterations: int = 1
    """Optimizer steps per rollout (mu; >1 reuses the samples with importance ratios)."""
    epsilon: float = 0.2
    """Lower clip range of the importance ratio (1 - epsilon)."""
    epsilon_high: Union[float, None] = None
    """Upper clip range (1 + epsilon_high; null = epsilon)."""
    delta: Union[float, None] = None
    """Two-sided cap on the ratio of negative-advantage tokens (null = off; > 1)."""
    beta: float = 0.04
    """KL coefficient against the reference (0 = no KL, no reference model)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Per-token KL estimator: k1, k2 or k3."""
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "grpo"
    """Loss normalisation: grpo, bnpo, dr_grpo or dapo (TRL's)."""
    scale_rewards: Union[Literal["group", "batch", "none"], None] = None
    """Divide advantages by the reward std of the group, the batch, or none (null = group)."""
    importance_sampling_level: Literal["token", "sequence"] = "token"
    """Importance ratio per token or per sequence (GSPO)."""
    mask_truncated_completions: bool = False
    """Exclude completions that hit max_completion_length from the loss."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest token set with this much probability (1 = off)."""
    top_k: Union[int, None] = None
    """Sample among the k most likely tokens (null = off)."""
    max_completion_length: int = 256
    """Tokens sampled per completion at most."""
    reward_model: Union[str, None] = None
    """Multi-label reward model run directory / export scoring the aspects (null = none)."""
    reward_funcs: tuple[str, ...] = ()
    """Rule-based reward functions by name (grpojax.rewards, e.g. char_frac:aeiou)."""
    aspects: tuple[str, ...] = ()
    """Names of the reward model's output scores, in order."""
    reward_weights: tuple[float, ...] = ()
    """Weight of each aspect, then of each reward function (empty = all 1)."""
    aggregation: Literal["weighted_sum", "normalize_then_sum", "min", "soft_min"] = "weighted_sum"
    """How the scores combine into one reward: weighted_sum, normalize_then_sum (GDPO), min or soft_min."""
    sampler_is_cap: Union[float, None] = None
    """Cap of the truncated importance-sampling correction of the sampler's log-probs (null = off)."""
    use_bias_correction_kl: bool = False
    """Multiply each token's KL term by the differentiated ratio pi_theta / pi_old (TRL's name; DeepSeek-V3.2)."""
    dynamic_sampling_max_rounds: int = 0
    """DAPO dynamic sampling: up to this many rollouts per step to replace zero-spread groups (0 = off)."""
    shared_prefix: bool = False
    """Compute each prompt once for its G completions in the training and reference forwards (same numbers)."""
    robust: RobustGRPOConfig = field(default_factory=RobustGRPOConfig)
    """Group-robust GRPO (ALGORITHMS.md 3): groups from a data column, alpha by exponentiated gradient."""

    def __post_init__(self):
        check(self.num_generations >= 2, "num_generations",
              f"must be >= 2 (group-relative advantages need a group), got {self.num_generations}")
        positive(self, "num_iterations", "epsilon", "epsilon_high", "delta", "temperature", "top_k",
                 "max_completion_length", "sampler_is_cap")
        non_negative(self, "beta", "dynamic_sampling_max_rounds")
        check(self.delta is None or self.delta > 1.0, "delta", f"must be > 1 (a cap on the ratio), got {self.delta}")
        check(0.0 < self.top_p <= 1.0, "top_p", f"must be in (0, 1], got {self.top_p}")
        check(self.reward_model is not None or len(self.reward_funcs) > 0, "reward_model",
              "GRPO needs a reward: set grpo.reward_model and/or grpo.reward_funcs")
        check(self.reward_model is None or len(self.aspects) > 0, "aspects",
              "name the reward model's aspects (one per output score)")
        check(len(set(self.aspects)) == len(self.aspects), "aspects", "has duplicates")
        check(self.aggregation != "normalize_then_sum" or self.scale_rewards is None, "scale_rewards",
              f"{self.scale_rewards} cannot follow grpo.aggregation=normalize_then_sum: GDPO z-scores each aspect "
              "in its group and the weighted sum over the batch, and that is the advantage (a group re-scaling "
              "would undo it); remove grpo.scale_rewards")
        check(self.robust.group_column is None or not self.dynamic_sampling_max_rounds, "dynamic_sampling_max_rounds",
              "cannot be combined with grpo.robust (the group weights are computed per rollout of the step's own "
              "prompts); set one of them")


@dataclass(frozen=True)
class PreferenceConfig:
    """Offline preference losses (ALGORITHMS.md 2). ``eta_alpha``: robust step size; ``chi``: trade-off
    (1 = fully robust); ``eta_alpha_decay_on_lr_cut``: factor applied to eta_alpha at each LR-on-plateau
    cut (1 = unchanged); ``average_logprobs``: length-averaged instead of summed sequence log-probs.
    ``precompute_ref_logps`` (TRL's ``precompute_ref_log_probs``): one reference forward over the training
    and evaluation pairs before the first step, then none per step, and the reference's weights are freed
    (offline preference runs only)."""

    loss: Literal["dpo", "ipo", "hinge", "gr_dpo", "gr_ipo", "is_dpo"] = "dpo"
    """Preference loss: dpo, ipo, hinge, gr_dpo, gr_ipo or is_dpo."""
    beta: float = 0.1
    """Inverse temperature of the implicit reward (DPO beta / IPO tau)."""
    label_smoothing: float = 0.0
    """Assumed label-flip probability (cDPO; sigmoid losses only)."""
    eta_alpha: float = 0.01
    """Step size of the group-weight update (group-robust losses)."""
    chi: float = 1.0
    """Robust trade-off: 1 = worst-group only, 0 = the plain average."""
    eta_alpha_decay_on_lr_cut: float = 1.0
    """eta_alpha is multiplied by this at each LR-on-plateau cut (1 = unchanged)."""
    average_logprobs: bool = False
    """Length-averaged instead of summed sequence log-probs."""
    precompute_ref_logps: bool = False
    """Compute the reference log-probs once before training and free the reference."""
    shared_prefix: bool = False
    """Compute each prompt once for its chosen and rejected responses (policy and reference; same numbers)."""

    def __post_init__(self):
        positive(self, "beta")
        non_negative(self, "eta_alpha")
        check(0.0 <= self.label_smoothing < 0.5, "label_smoothing", f"must be in [0, 0.5), got {self.label_smoothing}")
        check(0.0 <= self.chi <= 1.0, "chi", f"must be in [0, 1], got {self.chi}")
        check(0.0 < self.eta_alpha_decay_on_lr_cut <= 1.0, "eta_alpha_decay_on_lr_cut",
              f"must be in (0, 1], got {self.eta_alpha_decay_on_lr_cut}")


@dataclass(frozen=True)
class RewardConfig:
    """Reward-model training (ALGORITHMS.md 1.1). ``label_affine`` = (scale, offset): labels are mapped
    ``y' = scale * y + offset`` before the loss (stored with the model to map scores back)."""

    aspects: tuple[str, ...] = ()
    """Names of the reward model's output scores (one head per aspect)."""
    loss: Literal["regression", "bradley_terry"] = "regression"
    """regression on labels (multi-label) or bradley_terry on pairs (one score)."""
    aspect_weights: tuple[float, ...] = ()
    """Loss weight of each aspect (empty = all 1)."""
    label_affine: Union[tuple[float, float], None] = None
    """(scale, offset) mapping labels y -> scale * y + offset before the loss (null = identity)."""
    margin: float = 0.0
    """Bradley-Terry margin subtracted from the chosen - rejected score difference."""

    def __post_init__(self):
        check(len(self.aspects) > 0, "aspects", "name at least one aspect (one score per aspect)")
        check(len(set(self.aspects)) == len(self.aspects), "aspects", "has duplicates")
        check(not self.aspect_weights or len(self.aspect_weights) == len(self.aspects), "aspect_weights",
              f"needs one weight per aspect ({len(self.aspects)}), got {len(self.aspect_weights)}")
        check(all(w >= 0 for w in self.aspect_weights), "aspect_weights", "must be >= 0")
        check(self.label_affine is None or self.label_affine[0] != 0, "label_affine", "scale must be non-zero")
        check(self.loss != "bradley_terry" or len(self.aspects) == 1, "aspects",
              "bradley_terry trains one score: give exactly one aspect")


@dataclass(frozen=True)
class _RolloutFields:
    """Sampling and reward fields shared by the online methods other than GRPO (same names and meaning as
    in :class:`GRPOConfig`): ``num_generations`` completions per prompt, sampled at ``temperature`` /
    ``top_p`` / ``top_k`` up to ``max_completion_length`` tokens, scored by a multi-label ``reward_model``
    (``aspects``) and/or ``reward_funcs``, combined by ``aggregation`` with ``reward_weights``."""

    num_generations: int = 1
    """Completions sampled per prompt."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest token set with this much probability (1 = off)."""
    top_k: Union[int, None] = None
    """Sample among the k most likely tokens (null = off)."""
    max_completion_length: int = 256
    """Tokens sampled per completion at most."""
    reward_model: Union[str, None] = None
    """Multi-label reward model run directory / export scoring the aspects (null = none)."""
    reward_funcs: tuple[str, ...] = ()
    """Rule-based reward functions by name (grpojax.rewards, e.g. char_frac:aeiou)."""
    aspects: tuple[str, ...] = ()
    """Names of the reward model's output scores, in order."""
    reward_weights: tuple[float, ...] = ()
    """Weight of each aspect, then of each reward function (empty = all 1)."""
    aggregation: Literal["weighted_sum", "normalize_then_sum", "min", "soft_min"] = "weighted_sum"
    """How the scores combine into one reward: weighted_sum, normalize_then_sum (GDPO), min or soft_min."""

    def __post_init__(self):
        positive(self, "num_generations", "temperature", "top_k", "max_completion_length")
        check(0.0 < self.top_p <= 1.0, "top_p", f"must be in (0, 1], got {self.top_p}")
        check(self.reward_model is not None or len(self.reward_funcs) > 0, "reward_model",
              "needs a reward: set reward_model and/or reward_funcs")
        check(self.reward_model is None or len(self.aspects) > 0, "aspects",
              "name the reward model's aspects (one per output score)")
        check(len(set(self.aspects)) == len(self.aspects), "aspects", "has duplicates")
        r, f = len(self.aspects), len(self.reward_funcs)
        check(not self.reward_weights or len(self.reward_weights) == r + f, "reward_weights",
              f"needs one weight per aspect ({r}) plus one per reward_func ({f}), got {len(self.reward_weights)}")


@dataclass(frozen=True)
class PPOConfig(_RolloutFields):
    """PPO-RLHF (Ziegler et al. 2019; TRL ``PPOConfig`` names where TRL has one). Each rollout of
    ``train.batch_size`` completions is reused for ``ppo_epochs`` passes of ``num_mini_batches`` shuffled
    mini-batches (one optimizer step each). ``kl_mode``: ``reward`` puts ``-kl_coef * KL`` in the per-token
    rewards, ``loss`` adds ``kl_coef * KL`` to the loss; ``adaptive_kl`` adapts ``kl_coef`` toward
    ``kl_target`` (per-sequence KL) over ``kl_horizon`` samples. ``critic``: ``shared`` = a value head on
    the policy backbone, ``separate`` = its own backbone loaded from ``critic_path`` (e.g. the reward model's
    backbone as a HF directory; None = a copy of the initial policy). ``missing_eos_penalty``: subtracted
    from the score of completions that hit the length limit (None = off)."""

    ppo_epochs: int = 4
    """Passes over each rollout."""
    num_mini_batches: int = 1
    """Shuffled mini-batches per pass (one optimizer step each)."""
    cliprange: float = 0.2
    """Clip range of the policy ratio."""
    cliprange_value: Union[float, None] = 0.2
    """Clip range of the value update (null = unclipped)."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    gamma: float = 1.0
    """Discount factor of the returns."""
    lam: float = 0.95
    """GAE lambda."""
    kl_mode: Literal["reward", "loss"] = "reward"
    """reward: -kl_coef * KL in the per-token rewards; loss: kl_coef * KL added to the loss."""
    kl_coef: float = 0.05
    """KL coefficient (the initial one when adaptive_kl)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    """Per-token KL estimator: k1, k2 or k3."""
    adaptive_kl: bool = False
    """Adapt kl_coef toward kl_target (Ziegler et al.)."""
    kl_target: float = 6.0
    """Per-sequence KL the adaptive controller aims at."""
    kl_horizon: float = 10000.0
    """Samples over which the adaptive controller moves kl_coef."""
    whiten_rewards: bool = False
    """Whiten the per-token rewards over the batch."""
    whiten_advantages: bool = True
    """Whiten the advantages over the batch."""
    reduction: Literal["token_mean", "sequence_mean"] = "token_mean"
    """Loss reduction: token_mean or sequence_mean."""
    missing_eos_penalty: Union[float, None] = None
    """Subtracted from the score of completions without an end token (null = off)."""
    critic: Literal["shared", "separate"] = "shared"
    """shared: a value head on the policy backbone; separate: its own backbone."""
    critic_path: Union[str, None] = None
    """HF directory of the separate critic's backbone (null = a copy of the initial policy)."""
    value_head_init_std: float = 0.0
    """Std of the value head's initial weights (0 = zeros)."""

    def __post_init__(self):
        super().__post_init__()
        positive(self, "ppo_epochs", "num_mini_batches", "kl_target", "kl_horizon")
        non_negative(self, "cliprange", "cliprange_value", "vf_coef", "kl_coef", "missing_eos_penalty",
                      "value_head_init_std")
        for n in ("gamma", "lam"):
            check(0.0 <= getattr(self, n) <= 1.0, n, f"must be in [0, 1], got {getattr(self, n)}")
        check(self.critic == "separate" or self.critic_path is None, "critic_path",
              "a critic checkpoint needs critic: separate (the shared critic is the policy backbone)")


@dataclass(frozen=True)
class OnlineDPOConfig(_RolloutFields):
    """Online / iterative DPO from the reward model: per prompt, the best and the worst of the policy's
    ``num_generations`` samples under the aggregated reward form a (chosen, rejected) pair, trained with the
    ``preference`` section's loss against the initial policy as reference; groups whose best and worst
    rewards are equal give no pair."""

    num_generations: int = 4
    """Completions sampled per prompt; the best and the worst form a pair."""

    def __post_init__(self):
        super().__post_init__()
        check(self.num_generations >= 2, "num_generations",
              f"must be >= 2 (a pair needs two samples), got {self.num_generations}")
