"""DAPO dynamic sampling (grpojax.rollout.dynamic_sampling): zero-spread groups are dropped and the batch is
refilled from further rounds, up to a cap; rows stay aligned; counts are logged."""

import numpy as np
import pytest

from grpojax.cli import UserError
from grpojax.config import load_config
from grpojax.rollout import Rollout
from grpojax.rollout.dynamic_sampling import dynamic_sample, informative_groups

G = 2


def _rounds(*informative):
    """Fake scored rollouts, one per argument: group b informative iff informative[b]; rows carry ids."""
    made = []

    def sample_round():
        r = len(made)
        good = informative[r]
        adv = np.concatenate([[0.5, -0.5] if ok else [0.0, 0.0] for ok in good]).astype(np.float32)
        ids = np.array([100 * r + i for i in range(len(good) * G)])
        ro = Rollout(batch={"advantages_B": adv, "row_id": ids, "completion_BC": np.stack([ids, ids], 1)},
                     metrics={"reward": float(r)}, completions=[f"c{i}" for i in ids],
                     prompts=[f"p{i // G}" for i in ids],
                     scores_NR=ids[:, None].astype(np.float32), rewards_N=ids.astype(np.float32),
                     truncated_N=ids % 3 == 0)
        made.append(ro)
        return ro
    return sample_round, made


def _groups(ro):
    return [int(i) // G for i in ro.batch["row_id"][::G]], ro.batch["row_id"]


def test_zero_spread_groups_are_replaced_from_later_rounds():
    sample_round, made = _rounds([True, False, True, False], [False, True, True, True])
    ro = dynamic_sample(sample_round, 4, G, max_rounds=5)
    assert len(made) == 2
    # round 0 groups 0 and 2, then round 1 groups 1 and 2 (row ids 100 + 2g, 100 + 2g + 1)
    np.testing.assert_array_equal(ro.batch["row_id"], [0, 1, 4, 5, 102, 103, 104, 105])
    np.testing.assert_array_equal(ro.batch["completion_BC"][:, 0], ro.batch["row_id"])
    assert ro.completions == [f"c{i}" for i in ro.batch["row_id"]]
    assert ro.prompts == [f"p{i // G}" for i in ro.batch["row_id"]]  # each row keeps its own prompt
    np.testing.assert_array_equal(ro.scores_NR[:, 0], ro.batch["row_id"])
    np.testing.assert_array_equal(ro.rewards_N, ro.batch["row_id"])
    np.testing.assert_array_equal(ro.truncated_N, ro.batch["row_id"] % 3 == 0)
    assert informative_groups(ro.batch["advantages_B"], G).all()
    assert ro.metrics == {"reward": 0.0, "dynamic_sampling/rounds": 2.0, "dynamic_sampling/dropped_groups": 3.0,
                          "dynamic_sampling/filled_groups": 0.0}


def test_the_cap_fills_with_zero_spread_groups_and_all_informative_needs_one_round():
    sample_round, made = _rounds([False, True, False], [False, False, False], [True, True, True])
    ro = dynamic_sample(sample_round, 3, G, max_rounds=2)
    assert len(made) == 2  # the third round is never sampled
    np.testing.assert_array_equal(ro.batch["row_id"], [2, 3, 0, 1, 4, 5])  # informative first, then the fill
    assert ro.metrics["dynamic_sampling/filled_groups"] == 2.0
    assert ro.metrics["dynamic_sampling/dropped_groups"] == 3.0 and ro.metrics["dynamic_sampling/rounds"] == 2.0
    sample_round, made = _rounds([True, True])
    assert dynamic_sample(sample_round, 2, G, max_rounds=3).metrics["dynamic_sampling/rounds"] == 1.0
    with pytest.raises(ValueError, match="max_rounds must be >= 1"):
        dynamic_sample(sample_round, 2, G, max_rounds=0)


def test_config_key():
    cfg = load_config("configs/tiny_grpo.yaml", ["grpo.dynamic_sampling_max_rounds=3"])
    assert cfg.grpo.dynamic_sampling_max_rounds == 3
    with pytest.raises(UserError, match="grpo.dynamic_sampling_max_rounds: must be >= 0"):
        load_config("configs/tiny_grpo.yaml", ["grpo.dynamic_sampling_max_rounds=-1"])
