"""scripts/robust_demo_seeds.py: seed parsing and the paired table's statistics against hand-computed
float64 values (the runs themselves are the demo's opinion stages, tested in tests/demo)."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

import robust_demo_seeds as R

from grpojax.cli import UserError


def test_parse_seeds():
    assert R.parse_seeds("10-12,20,11") == [10, 11, 12, 20]
    for text, match in [("x", "'x' is not a seed"), ("5-3", "first <= last"), (",", "no seed")]:
        with pytest.raises(UserError, match=match):
            R.parse_seeds(text)


def _run(groups, alpha=None):
    r = {"worst_group_test_loss": max(groups.values()), "group_test_loss": groups,
         "worst_group_test_reward_accuracy": 0.5}
    return dict(r, alpha=alpha) if alpha else r


def test_paired_statistics_and_table(tmp_path):
    # three seeds; the robust run is lower on seeds 0 and 2, higher on seed 1
    plain = [{"a": 0.3, "b": 0.9}, {"a": 0.2, "b": 0.4}, {"a": 0.5, "b": 1.5}]
    robust = [{"a": 0.5, "b": 0.6}, {"a": 0.7, "b": 0.3}, {"a": 0.6, "b": 0.8}]
    rows = {s: R.seed_row({"ipo": _run(p), "gr_ipo": _run(q, {"a": 0.4, "b": 0.6})}, "ipo", "gr_ipo")
            for s, (p, q) in enumerate(zip(plain, robust))}
    d_w = np.array([0.6 - 0.9, 0.7 - 0.4, 0.8 - 1.5])
    d_m = np.array([0.55 - 0.6, 0.5 - 0.3, 0.7 - 1.0])
    st = R.summarise(rows)
    assert st["robust_lower_worst"] == 2 and st["robust_lower_mean"] == 2 and st["seeds"] == 3
    np.testing.assert_allclose([st["diff_worst"][k] for k in ("mean", "std", "min", "max", "median")],
                               [d_w.mean(), d_w.std(ddof=1), d_w.min(), d_w.max(), np.median(d_w)], rtol=1e-12)
    np.testing.assert_allclose([st["diff_mean"]["mean"], st["diff_mean"]["std"]], [d_m.mean(), d_m.std(ddof=1)],
                               rtol=1e-12)
    assert st["diff_worst"]["sem"] == pytest.approx(d_w.std(ddof=1) / np.sqrt(3), rel=1e-12)
    assert st["diff_worst"]["sign_test_p"] == pytest.approx(1.0)  # 2 of 3: P(|k - 1.5| >= 0.5) = 1
    assert R.sign_test_p(7, 10) == pytest.approx(2 * (1 + 10 + 45 + 120) / 1024)  # = 0.34375
    assert R.sign_test_p(10, 10) == pytest.approx(2 / 1024) and R.sign_test_p(0, 0) == 1.0
    np.testing.assert_allclose(st["plain_worst"]["mean"], np.mean([0.9, 0.4, 1.5]), rtol=1e-12)
    table = R.pair_table(rows, "ipo", "gr_ipo")
    assert "| 1 | 0.400 | 0.700 | +0.300 | 0.300 | 0.500 | +0.200 |" in table
    assert "lower worst-group test loss on 2 of 3 seeds" in table
    json.dumps(st)  # the numbers file must serialise
