"""The synthetic group bandit: features / data / reward error against a direct NumPy re-implementation,
the closed-form GR-IPO step against np.linalg.lstsq, a short direction-of-effect run and the script."""

import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.bandit import (
    THETA_STAR_ME,
    BanditSettings,
    make_preference_data,
    make_problems,
    reward_error_M,
    run_scenario,
    weighted_least_squares,
)
from grpojax.bandit.train import ipo_family_block
from grpojax.losses.robust import robust_weights

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))


def np_features(x, y, g):
    """Direct transcription of ALGORITHMS.md 2.4."""
    phi = np.zeros(4)
    for i in range(4):
        k = i // 2
        a = y / 8 + 1
        phi[i] = a * math.cos(math.pi * x[k]) if i % 2 == g else math.sin(math.pi * x[k]) / a
    return phi


def np_reward(x, y, g):
    return float(np_features(x, y, g) @ THETA_STAR_ME[g])


@pytest.mark.parametrize("uneven", [True, False])
def test_data_generation_matches_numpy_reimplementation(uneven):
    with jax.enable_x64(True):
        data = jax.tree.map(np.asarray, make_preference_data(jax.random.PRNGKey(7), (20, 80), uneven=uneven))
    assert np.bincount(data.group_ids_P).tolist() == [20, 80]
    for p in range(100):
        x, g, y1, y2 = data.x_PX[p], int(data.group_ids_P[p]), int(data.first_P[p]), int(data.second_P[p])
        assert 0 <= x.min() and x.max() <= 1 and 0 <= y1 < 8 and 0 <= y2 < 8 and y1 != y2
        if uneven and g == 0:
            assert abs(y1 - y2) == 1
        elif uneven:
            assert y2 == (y1 + 4) % 8
        win, lose = (y1, y2) if np_reward(x, y1, g) > np_reward(x, y2, g) else (y2, y1)
        assert (int(data.chosen_P[p]), int(data.rejected_P[p])) == (win, lose)
        np.testing.assert_allclose(data.chosen_feat_PE[p], np_features(x, win, g), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(data.rejected_feat_PE[p], np_features(x, lose, g), rtol=1e-12, atol=1e-12)
    if uneven:  # both neighbour directions occur, including the reflections at the ends
        g0 = data.group_ids_P == 0
        assert set(np.unique(data.second_P[g0] - data.first_P[g0])) == {-1, 1}


def test_reward_error_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(50, 2))
    theta = np.array([2.0, 0.5, -1.0, 3.0])
    with jax.enable_x64(True):
        got = np.asarray(reward_error_M(jnp.asarray(theta), jnp.asarray(x)))
        at_star = np.asarray(reward_error_M(jnp.asarray(THETA_STAR_ME[0]), jnp.asarray(x)))
    for g in range(2):
        best = np.mean([max(np_reward(xq, y, g) for y in range(8)) for xq in x])
        greedy = [int(np.argmax([np_features(xq, y, g) @ theta for y in range(8)])) for xq in x]
        got_r = np.mean([np_reward(xq, y, g) for xq, y in zip(x, greedy)])
        np.testing.assert_allclose(got[g], (best - got_r) / best, rtol=1e-10)
    assert at_star[0] == 0.0 and at_star[1] > 0.0  # theta*_0 is optimal for group 0 only


def test_weighted_least_squares_matches_lstsq():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(40, 4))
    v = rng.uniform(0.1, 2.0, size=40)
    with jax.enable_x64(True):
        theta = np.asarray(weighted_least_squares(jnp.asarray(s), jnp.asarray(v), 5.0))
        ridge = np.asarray(weighted_least_squares(jnp.asarray(s), jnp.asarray(v), 5.0, ridge=0.3))
    ref = np.linalg.lstsq(np.sqrt(v)[:, None] * s, np.sqrt(v) * 5.0, rcond=None)[0]
    np.testing.assert_allclose(theta, ref, rtol=1e-10)
    a = np.vstack([np.sqrt(v)[:, None] * s, np.sqrt(0.3) * np.eye(4)])
    np.testing.assert_allclose(ridge, np.linalg.lstsq(a, np.r_[np.sqrt(v) * 5.0, np.zeros(4)], rcond=None)[0],
                               rtol=1e-10)


def test_gr_ipo_step_solves_weighted_normal_equations():
    beta, eta = 0.1, 0.01
    with jax.enable_x64(True):
        problems, sizes = make_problems("uneven_imbalanced", [3], BanditSettings(num_val=4, num_test_states=4))
        problem = jax.tree.map(lambda a: a[0], problems)
        rw = robust_weights(2, group_sizes_M=sizes, eta=eta, mode="full_batch")
        carry = (problem.theta0_E, rw.init())
        (theta, _), curves = ipo_family_block(carry, problem, 1.0, jnp.ones(2), jnp.ones(2), beta=beta, eta=eta,
                                              num_iters=1, group_sizes_M=sizes)
    train = jax.tree.map(np.asarray, problem.train)
    s = train.chosen_feat_PE - train.rejected_feat_PE
    g = train.group_ids_P
    h0 = s @ np.asarray(problem.theta0_E)  # paper Algorithm 2: alpha from the group mean IPO losses
    means = np.array([np.mean((h0[g == k] - 1 / (2 * beta)) ** 2) for k in range(2)])
    alpha = np.exp(eta * means) / np.exp(eta * means).sum()
    np.testing.assert_allclose(curves.alpha_IM[0], alpha, rtol=1e-10)
    w = alpha[g]
    residual = s.T @ (w * (s @ np.asarray(theta) - 1 / (2 * beta)))
    np.testing.assert_allclose(residual, 0.0, atol=1e-8)
    ref = np.linalg.lstsq(np.sqrt(w)[:, None] * s, np.sqrt(w) / (2 * beta), rcond=None)[0]
    np.testing.assert_allclose(theta, ref, rtol=1e-8)


# Paper settings, shortened; the script test below uses the same ones so the compiled programs are reused.
SHORT = BanditSettings(dpo_iters=2000, eval_every=1000, ipo_iters=3, chi_sweep=(0.5,))
SHORT_ARGV = ["--scenario", "uneven_imbalanced", "--seeds", "4", "--dpo-iters", "2000", "--eval-every", "1000",
              "--ipo-iters", "3", "--chi-sweep", "0.5"]


def test_gr_dpo_lowers_worst_group_loss_vs_dpo():
    """Direction of effect on uneven_imbalanced (4 seeds, 2,000 paper-setting iterations, float32)."""
    out = run_scenario("uneven_imbalanced", 4, SHORT)
    dpo, gr = out["DPO"], out["GR-DPO"]
    assert np.all(np.isfinite(dpo.worst_val_loss_I)) and np.all(np.isfinite(gr.worst_val_loss_I))
    assert np.all(gr.worst_val_loss_I[:, -1] < dpo.worst_val_loss_I[:, -1])  # every seed
    assert gr.max_reward_error_I[:, -1].mean() < dpo.max_reward_error_I[:, -1].mean()
    assert np.all(gr.alpha_IM[:, -1, 0] > 0.5)  # alpha moves to the hard group (group 0)
    # IS-DPO sits between: it reweights the small hard group up, but not adaptively.
    assert out["IS-DPO"].worst_val_loss_I[:, -1].mean() < dpo.worst_val_loss_I[:, -1].mean()


def test_script_contract_and_refuses_to_overwrite(tmp_path, capsys):
    import reproduce_robust_bandit as script

    out = tmp_path / "run"
    argv = SHORT_ARGV + ["--out", str(out)]
    assert script.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"DPO", "IS-DPO", "GR-DPO", "GR-DPO(chi=0.5)", "IPO", "IS-IPO", "GR-IPO"}
    for name, r in results.items():
        assert set(r) == {"worst_group_val_loss", "max_reward_error", "avg_val_loss", "alpha"}
        for key in ("worst_group_val_loss", "max_reward_error", "avg_val_loss"):
            assert len(r[key]) == 2 and all(math.isfinite(v) for v in r[key])
        assert (r["alpha"] is None) == (not name.startswith("GR"))
        if r["alpha"] is not None:
            assert len(r["alpha"]) == 2 and abs(sum(r["alpha"]) - 1) < 1e-5
    for png in ("dpo_curves.png", "ipo_curves.png", "chi_tradeoff.png"):
        assert (out / png).stat().st_size > 1000
    assert "GR-DPO" in capsys.readouterr().out
    before = (out / "results.json").read_text()
    assert script.main(argv) == 2  # no --overwrite: refuse, leave the file alone
    assert "already exists" in capsys.readouterr().err
    assert (out / "results.json").read_text() == before
