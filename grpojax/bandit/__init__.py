"""The group-robust synthetic bandit experiment (Ramesh et al. 2024, arXiv 2405.20304, section 5.1).

- ``env``: features, true rewards, preference data, reward error of the greedy policy.
- ``train``: DPO / IS-DPO / GR-DPO (gradient descent) and IPO / IS-IPO / GR-IPO (closed form), vmapped
  over seeds and methods, ``lax.scan`` over iterations.
- ``experiment``: the paper's settings, all methods of one scenario, summary statistics.

Entry point: ``python scripts/reproduce_robust_bandit.py --scenario uneven_imbalanced --seeds 20 --out DIR``.
"""

from grpojax.bandit.env import (
    NUM_ACTIONS,
    NUM_GROUPS,
    SCENARIOS,
    THETA_STAR_ME,
    PreferenceData,
    Scenario,
    action_features,
    features,
    group_sizes,
    make_preference_data,
    reward_error_from_tables,
    reward_error_M,
    test_tables,
    true_rewards,
)
from grpojax.bandit.experiment import BanditSettings, make_problems, run_scenario, summarize
from grpojax.bandit.train import (
    Curves,
    Problem,
    dpo_family_block,
    ipo_family_block,
    pair_losses,
    run_dpo_family,
    run_ipo_family,
    weighted_least_squares,
)

__all__ = [
    "NUM_ACTIONS", "NUM_GROUPS", "SCENARIOS", "THETA_STAR_ME", "PreferenceData", "Scenario",
    "action_features", "features", "group_sizes", "make_preference_data", "reward_error_M",
    "reward_error_from_tables", "test_tables",
    "true_rewards", "BanditSettings", "make_problems", "run_scenario", "summarize", "Curves", "Problem",
    "dpo_family_block", "ipo_family_block", "pair_losses", "run_dpo_family", "run_ipo_family",
    "weighted_least_squares",
]
