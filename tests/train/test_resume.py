"""Resume from a checkpoint is bit-identical to an uninterrupted run (GRPO, and GR-IPO with evaluation and
the LR-plateau / eta-decay counters). Its own file so that ``pytest -n 2 --dist loadfile`` can run it beside
the rest of ``test_runner.py`` (each takes minutes on 2 cores)."""

import os
import sys

import numpy as np
import pytest

from grpojax.train.grpo_task import GRPOTask
from grpojax.train.preference_task import PreferenceTask

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pytest runs with --import-mode=importlib
from test_runner import _final_state_leaves, _metrics, _repo_root, _train  # noqa: E402,F401 (autouse fixture)


@pytest.mark.parametrize("kind,task_cls,extra", [
    ("grpo", GRPOTask, ["grpo.beta=0.04", "grpo.num_iterations=2", "train.batch_size=8"]),
    ("dpo", PreferenceTask, ["train.eval_every=3", "data.eval_path=configs/data/tiny_preference.jsonl",
                             "train.plateau.enabled=true", "train.plateau.patience=1",
                             "train.plateau.factor=0.5", "preference.eta_alpha_decay_on_lr_cut=0.5"]),
])
def test_resume_is_bit_identical(tmp_path, kind, task_cls, extra):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = ["train.save_every=2", *extra]
    _train(kind, task_cls, ["train.steps=4", f"run_dir={a}", *common])
    summary = _train(kind, task_cls, ["train.steps=8", f"run_dir={a}", *common])
    assert summary["start_step"] == 4 and summary["end_step"] == 8
    _train(kind, task_cls, ["train.steps=8", f"run_dir={b}", *common])
    ma, mb = _metrics(a), _metrics(b)
    assert [r["step"] for r in ma] == list(range(1, 9))
    assert ma == mb
    if kind == "dpo":  # evaluation rows, and the plateau counters survive the resume
        assert {"eval/worst_group/loss", "eval/group_loss/casual", "robust/alpha/formal"} <= set(ma[2])
        assert [r["lr_scale"] for r in ma] == [r["lr_scale"] for r in mb]
    la, lb = _final_state_leaves(a), _final_state_leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)
