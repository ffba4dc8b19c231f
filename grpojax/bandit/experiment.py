"""The paper's synthetic experiment end to end: problems per seed, all methods, summary statistics.

Settings (Ramesh et al. 2024, arXiv 2405.20304, Table 1 / ALGORITHMS.md 2.4): 300 training pairs, 1,000
balanced validation pairs, 1,000 test states for the reward error, theta_0 ~ U[0, 5]^4, 20 seeds;
DPO family: lr 0.9, beta 1, eta 0.5, 20,000 full-batch iterations; IPO family: closed form, beta 0.1,
eta 0.01, 100 iterations. Run in float64 (``with jax.enable_x64(True)``) by the script and tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from grpojax.bandit.env import (
    FEATURE_DIM,
    NUM_GROUPS,
    SCENARIOS,
    STATE_DIM,
    group_sizes,
    make_preference_data,
    test_tables,
)
from grpojax.bandit.train import Curves, Problem, run_dpo_family, run_ipo_family


@dataclasses.dataclass(frozen=True)
class BanditSettings:
    """Every knob of one run; the defaults are the paper's Table 1."""

    num_train: int = 300
    num_val: int = 1000
    num_test_states: int = 1000
    theta_init_max: float = 5.0
    dpo_lr: float = 0.9
    dpo_beta: float = 1.0
    dpo_eta: float = 0.5
    dpo_iters: int = 20_000
    eval_every: int = 100
    ipo_beta: float = 0.1
    ipo_eta: float = 0.01
    ipo_iters: int = 100
    ipo_ridge: float = 0.0
    ipo_alpha_update: str = "paper"  # or "official" (mean divided by N_g again)
    gr_ipo_sample_weight: str = "alpha"  # "alpha" (official code) or "alpha_over_n" (paper text)
    chi_sweep: tuple = (0.25, 0.5, 0.75)  # extra GR-DPO runs with w = (1 - chi) / K + chi alpha

    def __post_init__(self):
        if self.gr_ipo_sample_weight not in ("alpha", "alpha_over_n"):
            raise ValueError("gr_ipo_sample_weight must be 'alpha' or 'alpha_over_n', "
                             f"got {self.gr_ipo_sample_weight!r}")
        for chi in self.chi_sweep:
            if not 0.0 < chi < 1.0:
                raise ValueError(f"chi_sweep values must lie strictly in (0, 1), got {chi!r}")


def make_problems(scenario: str, seeds, settings: BanditSettings) -> tuple:
    """Stacked :class:`Problem` (leading axis = seeds) and the training group sizes."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {sorted(SCENARIOS)}")
    spec = SCENARIOS[scenario]
    sizes = group_sizes(settings.num_train, spec.fractions)
    val_sizes = group_sizes(settings.num_val, (1.0 / NUM_GROUPS,) * NUM_GROUPS)

    def one(seed):
        k_train, k_val, k_test, k_theta = jax.random.split(jax.random.PRNGKey(seed), 4)
        dtype = jnp.result_type(float)
        # Random draws in float32 whatever the precision (same data for float32 and float64 runs).
        test_x_QX = jax.random.uniform(k_test, (settings.num_test_states, STATE_DIM)).astype(dtype)
        test_feat_MQAE, test_reward_MQA = test_tables(test_x_QX)
        return Problem(
            train=make_preference_data(k_train, sizes, uneven=spec.uneven),
            val=make_preference_data(k_val, val_sizes, uneven=spec.uneven),
            test_feat_MQAE=test_feat_MQAE,
            test_reward_MQA=test_reward_MQA,
            theta0_E=jax.random.uniform(k_theta, (FEATURE_DIM,), jnp.float32, maxval=settings.theta_init_max
                                        ).astype(dtype),
        )

    return jax.jit(jax.vmap(one))(jnp.asarray(list(seeds))), sizes


def dpo_methods(sizes, settings: BanditSettings) -> dict:
    """name -> (chi, mu_M) for the gradient-descent family."""
    n = np.asarray(sizes, np.float64)
    uniform = np.full(NUM_GROUPS, 1.0 / NUM_GROUPS)
    methods = {"DPO": (0.0, n / n.sum()), "IS-DPO": (0.0, uniform), "GR-DPO": (1.0, uniform)}
    for chi in settings.chi_sweep:
        methods[f"GR-DPO(chi={chi:g})"] = (float(chi), uniform)
    return methods


def ipo_methods(sizes, settings: BanditSettings) -> dict:
    """name -> (chi, base_M, scale_M) for the closed-form family (per-sample weights, see train.py)."""
    n = np.asarray(sizes, np.float64)
    ones = np.ones(NUM_GROUPS)
    scale = ones if settings.gr_ipo_sample_weight == "alpha" else 1.0 / n
    return {"IPO": (0.0, ones, ones), "IS-IPO": (0.0, 1.0 / n, ones), "GR-IPO": (1.0, ones, scale)}


def _stack(methods: dict, index: int) -> jnp.ndarray:
    return jnp.asarray(np.stack([np.asarray(m[index], np.float64) for m in methods.values()]))


def run_scenario(scenario: str, num_seeds: int, settings: BanditSettings = BanditSettings(), *,
                 progress: Optional[Callable[[str, int, int], None]] = None) -> dict:
    """Run every method on seeds ``0..num_seeds-1``; returns ``{method: Curves with [S, I, ...] arrays}``
    (NumPy) plus ``"_iterations"``: {"dpo": [I], "ipo": [I]} iteration numbers of the curve points."""
    problems, sizes = make_problems(scenario, range(num_seeds), settings)
    out = {}
    dpo = dpo_methods(sizes, settings)
    report = None if progress is None else (lambda done, total: progress("DPO family", done, total))
    _, curves = run_dpo_family(
        problems, _stack(dpo, 0), _stack(dpo, 1), group_sizes_M=sizes, beta=settings.dpo_beta,
        lr=settings.dpo_lr, eta=settings.dpo_eta, num_iters=settings.dpo_iters,
        eval_every=settings.eval_every, progress=report)
    for h, name in enumerate(dpo):
        out[name] = Curves(*[np.asarray(c[h]) for c in curves])
    ipo = ipo_methods(sizes, settings)
    _, curves = run_ipo_family(
        problems, _stack(ipo, 0), _stack(ipo, 1), _stack(ipo, 2), group_sizes_M=sizes,
        beta=settings.ipo_beta, eta=settings.ipo_eta, num_iters=settings.ipo_iters,
        ridge=settings.ipo_ridge, alpha_update=settings.ipo_alpha_update)
    if progress is not None:
        progress("IPO family", settings.ipo_iters, settings.ipo_iters)
    for h, name in enumerate(ipo):
        out[name] = Curves(*[np.asarray(c[h]) for c in curves])
    out["_iterations"] = {
        "dpo": np.arange(1, settings.dpo_iters // settings.eval_every + 1) * settings.eval_every,
        "ipo": np.arange(1, settings.ipo_iters + 1),
    }
    out["_group_sizes"] = sizes
    return out


def summarize(curves: Curves, robust: bool) -> dict:
    """Final-iteration ``[mean, std]`` over seeds (population std) of the contract metrics, and the mean
    final alpha (robust methods) or None."""

    def stat(values_S):
        values_S = np.asarray(values_S, np.float64)
        return [float(np.mean(values_S)), float(np.std(values_S))]

    return {
        "worst_group_val_loss": stat(curves.worst_val_loss_I[:, -1]),
        "max_reward_error": stat(curves.max_reward_error_I[:, -1]),
        "avg_val_loss": stat(curves.avg_val_loss_I[:, -1]),
        "alpha": [float(a) for a in np.mean(curves.alpha_IM[:, -1], axis=0)] if robust else None,
    }
