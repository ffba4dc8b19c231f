"""Preference evaluation over a set whose size is not a multiple of the batch: the ragged last batch is
padded (one compiled shape, rows divisible by the mesh) and its pads never reach a metric."""

import os

import jax
import numpy as np
import pytest

from grpojax.config import load_config
from grpojax.data import padded_batches
from grpojax.train.tasks.preference import PreferenceTask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("n,bs", [(10, 4), (8, 4), (3, 4), (1, 1), (33, 8)])
def test_padded_batches_cover_every_row_once_in_order(n, bs):
    got = list(padded_batches(n, bs))
    assert all(len(idx) == bs and 1 <= real <= bs for idx, real in got)
    assert [i for idx, real in got for i in idx[:real]] == list(range(n))
    assert all(set(idx[real:]) <= {idx[0]} for idx, real in got)


def _evaluate(batch_size, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config("configs/tiny_dpo.yaml", [f"train.batch_size={batch_size}", "mesh.data=1",
                                                "data.eval_path=configs/data/tiny_preference.jsonl"])
    task = PreferenceTask(cfg)
    state = task.init_state()
    # move the policy off its reference (at init every pair has the same loss and pads would go unseen)
    leaves, tree = jax.tree.flatten(state.params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    moved = [x + 0.5 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return task.evaluate(state._replace(params=jax.tree.unflatten(tree, moved)))


def test_ragged_evaluation_equals_one_batch(monkeypatch):
    # 32 pairs in batches of 6: five full batches and one of 2 padded to 6; vs all 32 in one batch
    ragged, whole = _evaluate(6, monkeypatch), _evaluate(32, monkeypatch)
    assert set(ragged) == set(whole) and "eval/worst_group/loss" in whole
    assert len({round(v, 4) for k, v in whole.items() if k.startswith("eval/group_loss/")}) > 1
    for k in whole:
        np.testing.assert_allclose(ragged[k], whole[k], rtol=1e-5, atol=1e-6, err_msg=k)
