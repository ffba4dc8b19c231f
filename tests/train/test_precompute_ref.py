"""``preference.precompute_ref_logps``: the reference runs once over the training and evaluation pairs, the
run logs the same losses / evaluation metrics and ends with the same parameters as computing the
reference per batch, and the reference's weights are freed."""

import io
import json
import os

import jax
import numpy as np
import pytest

from grpojax.checkpoint import Checkpointer
from grpojax.cli import UserError
from grpojax.config import load_config
from grpojax.train.runner import run
from grpojax.train.tasks.preference import PreferenceTask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def _run(run_dir, precompute, mesh=("mesh.data=1",)):
    cfg = load_config("configs/tiny_dpo.yaml", [
        f"run_dir={run_dir}", "train.steps=4", "train.eval_every=2", "train.save_every=4",
        "data.eval_path=configs/data/tiny_preference.jsonl", "train.batch_size=6", "train.adam_eps=1e-4",
        f"preference.precompute_ref_logps={str(precompute).lower()}", *mesh])
    task = PreferenceTask(cfg)
    calls = []
    task_init = task.init_state

    def init_state():
        state = task_init()
        ref_logps = task._ref_logps

        def counting(*args):
            calls.append(args[-1]["prompt_BQ"].shape[0])
            return ref_logps(*args)

        task._ref_logps = counting
        return state

    task.init_state = init_state
    run(cfg, task, stream=io.StringIO())
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    with Checkpointer(run_dir, save_every=1, keep=2) as ck:
        params = [np.asarray(x) for x in jax.tree.leaves(ck.restore(4).state["params"])]
    return rows, params, calls, task


def test_precomputed_reference_equals_per_batch_reference(tmp_path):
    """tiny_dpo (GR-IPO over two groups, 32 training and 32 evaluation pairs, batches of 6), 4 steps with
    evaluations after steps 2 and 4: the same loss, group weights and evaluation metrics at every step and
    the same final parameters; the reference ran over 32 + 32 pairs (6 + 6 padded batches of 6) before
    its first use and never again, and its weights are gone."""
    rows_b, params_b, calls_b, _ = _run(str(tmp_path / "per_batch"), False)
    rows_p, params_p, calls_p, task = _run(str(tmp_path / "pre"), True)
    n_train, n_eval = len(task.dataset), len(task.eval_set)
    assert calls_p == [6] * (-(-n_train // 6) + -(-n_eval // 6))
    assert len(calls_b) == 4 + 2 * -(-n_eval // 6)  # one forward per step, one per evaluation batch
    assert task._ref is None and task._ref_table["train"].shape == (n_train, 2)
    keys = ["loss", "eval/loss", "eval/worst_group/loss", "eval/reward_accuracy"]
    assert [r["step"] for r in rows_p] == [1, 2, 3, 4]
    for rp, rb in zip(rows_p, rows_b):
        for k in [k for k in keys if k in rb] + [k for k in rb if k.startswith("alpha")]:
            np.testing.assert_allclose(rp[k], rb[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert "eval/loss" in rows_p[1] and "eval/loss" in rows_p[3]
    for a, b in zip(params_p, params_b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_precomputed_reference_on_a_mesh_equals_one_device(tmp_path):
    """The same run on fsdp=2 x tensor=4: table rows go onto the mesh like the batch rows they belong to."""
    rows_1, params_1, _, _ = _run(str(tmp_path / "one"), True)
    rows_8, params_8, _, _ = _run(str(tmp_path / "eight"), True, ("mesh.data=1", "mesh.fsdp=2", "mesh.tensor=4"))
    np.testing.assert_allclose([r["loss"] for r in rows_8], [r["loss"] for r in rows_1], rtol=1e-4, atol=1e-5)
    for a, b in zip(params_8, params_1):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_online_dpo_refuses_precompute():
    with pytest.raises(UserError, match="preference.precompute_ref_logps: online DPO samples new pairs"):
        load_config("configs/tiny_online_dpo.yaml", ["preference.precompute_ref_logps=true"])
