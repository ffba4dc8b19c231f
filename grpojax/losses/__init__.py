"""Pure loss functions of arrays (no model inside a loss).

GRPO side (``common``, ``grpo``, ``reward``)::

    token_logprobs, token_entropy, masked_sum, masked_mean, kl_penalty      # common building blocks
    group_advantages, group_reward_stats, grpo_loss, aggregate_token_loss   # GRPO (DeepSeekMath / TRL)
    reward_regression_loss, bradley_terry_loss, LabelAffine, ...            # reward-model training

Preference side (``dpo``, ``robust``): DPO / IPO per-pair losses and the group-robust weights;
``robust_grpo``: the group weights of group-robust GRPO.
"""

from grpojax.losses.common import (
    DPO_LOSS_TYPES,
    GRPO_LOSS_TYPES,
    KL_ESTIMATORS,
    kl_penalty,
    masked_mean,
    masked_sum,
    token_entropy,
    token_logprobs,
)

# --- preference-side losses (dpo.py, robust.py) ---
from grpojax.losses.dpo import (
    PreferenceMetrics,
    dpo_loss,
    preference_margin,
    preference_metrics,
    sequence_logprob,
)
from grpojax.losses.grpo import (
    ADVANTAGE_SCALES,
    IMPORTANCE_SAMPLING_LEVELS,
    GroupRewardStats,
    GRPOAux,
    aggregate_token_loss,
    group_advantages,
    group_reward_stats,
    grpo_loss,
)

# --- PPO-RLHF (ppo.py: the losses; ppo_rollout.py: rewards, GAE, whitening, KL controllers) ---
from grpojax.losses.ppo import (
    PPO_REDUCTIONS,
    PolicyLossAux,
    PPOLossAux,
    ValueLossAux,
    ppo_loss,
    ppo_policy_loss,
    ppo_value_loss,
)
from grpojax.losses.ppo_rollout import (
    KLController,
    KLControllerState,
    RunningMoments,
    RunningMomentsState,
    adaptive_kl_controller,
    fixed_kl_controller,
    gae_advantages,
    kl_penalized_rewards,
    masked_var,
    normalize_scores,
    rollout_kl,
    running_moments,
    running_std,
    whiten,
)
from grpojax.losses.reward import (
    BradleyTerryAux,
    LabelAffine,
    RegressionAux,
    bradley_terry_loss,
    label_affine_from_range,
    make_label_affine,
    regression_weight,
    reward_regression_loss,
)
from grpojax.losses.robust import (
    GroupMetrics,
    RobustAux,
    RobustWeights,
    RobustWeightsState,
    group_metrics,
    group_one_hot,
    group_sums,
    robust_weights,
)
from grpojax.losses.robust_grpo import (
    RobustGRPOAux,
    RobustGRPOState,
    RobustGRPOWeights,
    group_mean_scores,
    robust_grpo_weights,
)

__all__ = [
    "DPO_LOSS_TYPES", "GRPO_LOSS_TYPES", "KL_ESTIMATORS", "kl_penalty", "masked_mean", "masked_sum",
    "token_entropy", "token_logprobs", "PreferenceMetrics", "dpo_loss", "preference_margin",
    "preference_metrics", "sequence_logprob", "ADVANTAGE_SCALES", "IMPORTANCE_SAMPLING_LEVELS",
    "GroupRewardStats", "GRPOAux", "aggregate_token_loss", "group_advantages", "group_reward_stats",
    "grpo_loss", "PPO_REDUCTIONS", "PolicyLossAux", "PPOLossAux", "ValueLossAux", "ppo_loss",
    "ppo_policy_loss", "ppo_value_loss", "KLController", "KLControllerState", "RunningMoments",
    "RunningMomentsState", "adaptive_kl_controller", "fixed_kl_controller", "gae_advantages",
    "kl_penalized_rewards", "masked_var", "normalize_scores", "rollout_kl", "running_moments", "running_std",
    "whiten", "BradleyTerryAux", "LabelAffine", "RegressionAux", "bradley_terry_loss",
    "label_affine_from_range", "make_label_affine", "regression_weight", "reward_regression_loss",
    "GroupMetrics", "RobustAux", "RobustWeights", "RobustWeightsState", "group_metrics", "group_one_hot",
    "group_sums", "robust_weights", "RobustGRPOAux", "RobustGRPOState", "RobustGRPOWeights", "group_mean_scores",
    "robust_grpo_weights",
]
