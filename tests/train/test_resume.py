"""Resume from a checkpoint is bit-identical to an uninterrupted run (GRPO, and GR-IPO with evaluation and
the LR-plateau / eta-decay counters). Its own file so that ``pytest -n 2 --dist loadfile`` can run it beside
the rest of ``test_runner.py`` (each takes minutes on 2 cores)."""

import os
import sys

import numpy as np
import pytest

from grpojax.cli import UserError
from grpojax.train.tasks import SFTTask
from grpojax.train.tasks.grpo import GRPOTask
from grpojax.train.tasks.preference import PreferenceTask

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pytest runs with --import-mode=importlib
from test_runner import _final_state_leaves, _metrics, _repo_root, _train  # noqa: E402,F401 (autouse fixture)


@pytest.mark.parametrize("kind,task_cls,extra", [
    ("grpo", GRPOTask, ["grpo.beta=0.04", "grpo.num_iterations=2", "train.batch_size=8"]),
    ("grpo", GRPOTask, ["grpo.num_iterations=2", "train.batch_size=8", "grpo.robust.group_column=group",  # alpha
                        "grpo.robust.eta_alpha=2.0", "data.path=tests/data/fixtures/tiny_prompt_groups.jsonl"]),
    ("dpo", PreferenceTask, ["train.eval_every=3", "data.eval_path=configs/data/tiny_preference.jsonl",
                             "train.plateau.enabled=true", "train.plateau.patience=1",
                             "train.plateau.factor=0.5", "preference.eta_alpha_decay_on_lr_cut=0.5"]),
])
def test_resume_is_bit_identical(tmp_path, kind, task_cls, extra):
    """A decaying LR (cosine with warm-up): the first leg runs 4 of the 8-step curve (train.schedule_steps=8),
    the resume runs to train.steps=8 (the same horizon), the reference runs 8 steps in one go."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = ["train.save_every=2", "train.schedule=cosine", "train.warmup_steps=1", *extra]
    _train(kind, task_cls, ["train.steps=4", "train.schedule_steps=8", f"run_dir={a}", *common])
    summary = _train(kind, task_cls, ["train.steps=8", f"run_dir={a}", *common])
    assert summary["start_step"] == 4 and summary["end_step"] == 8
    _train(kind, task_cls, ["train.steps=8", f"run_dir={b}", *common])
    ma, mb = _metrics(a), _metrics(b)
    assert [r["step"] for r in ma] == list(range(1, 9))
    assert ma == mb
    if "grpo.robust.group_column=group" in extra:  # alpha moved, is in the checkpoint, and resumed exactly
        assert ma[-1]["robust/alpha/minority"] != pytest.approx(0.25)
    if kind == "dpo":  # evaluation rows, and the plateau counters survive the resume
        assert {"eval/worst_group/loss", "eval/group_loss/casual", "robust/alpha/formal"} <= set(ma[2])
        assert [r["lr_scale"] for r in ma] == [r["lr_scale"] for r in mb]
    la, lb = _final_state_leaves(a), _final_state_leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


def test_resume_refuses_to_change_a_decaying_schedule(tmp_path):
    """train.steps sets a cosine / linear schedule's horizon: resuming a 2-step cosine run with
    train.steps=3 would bend the LR curve mid-run, so it is refused (one line naming the key to set);
    with train.schedule_steps=2 it resumes on the original curve, and a constant schedule resumes freely."""
    run_dir = str(tmp_path / "r")
    common = [f"run_dir={run_dir}", "train.save_every=1", "train.schedule=cosine"]
    _train("sft", SFTTask, ["train.steps=2", *common])
    with pytest.raises(UserError) as e:
        _train("sft", SFTTask, ["train.steps=3", *common])
    msg = str(e.value)
    assert "horizon from 2 to 3 steps" in msg and "train.schedule_steps=2" in msg and "\n" not in msg, msg
    assert _train("sft", SFTTask, ["train.steps=3", "train.schedule_steps=2", *common])["end_step"] == 3
    const = [f"run_dir={tmp_path / 'c'}", "train.save_every=1", "train.warmup_steps=1"]
    _train("sft", SFTTask, ["train.steps=1", *const])
    assert _train("sft", SFTTask, ["train.steps=2", *const])["start_step"] == 1
