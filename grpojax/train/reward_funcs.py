"""Python reward functions of the online methods (GRPO, PPO, online DPO), resolved from the names in
``<method>.reward_funcs`` by :mod:`grpojax.rewards.functions` (the names, TRL's call convention
``fn(prompts, completions, **columns)``, built-ins such as ``exact_match`` / ``format``, files and modules).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from grpojax.rewards import functions
from grpojax.rewards.functions import (
    BUILTINS,
    RewardFunction,
    char_fraction,
    check_columns,
    data_columns,
    reward_names,
)

__all__ = ["BUILTINS", "RewardFunction", "char_fraction", "check_columns", "data_columns", "resolve", "reward_names", "score"]


def resolve(spec: str, key: str = "grpo.reward_funcs") -> RewardFunction:
    """The reward function named by ``spec``; UserError naming ``key`` when it cannot be resolved."""
    return functions.resolve(spec, key)


def score(funcs: Sequence[RewardFunction], names: Sequence[str], prompts: Sequence[str],
          completions: Sequence[str], columns: Mapping[str, Sequence] | None = None) -> np.ndarray:
    """``[N, len(funcs)]`` float32 scores; ``columns``: the prompt data's other columns, N values each."""
    return functions.score(funcs, prompts, completions, columns, names=names)
