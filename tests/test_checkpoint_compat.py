"""A checkpoint written by grpojax at ed115dc (before the train/ restructuring) restores with today's code.

``tests/fixtures/main_checkpoint`` is a 2-step tiny GRPO run written by
``tests/fixtures/write_main_checkpoint.py`` with that code: today's task builds the state template from
the saved ``config.yaml``, Orbax restores onto it, and every leaf's float64 sum and sum of squares, the
step and the data position equal the values recorded when it was written."""

import importlib.util
import json
import os
import shutil

import numpy as np

from grpojax.checkpoint import Checkpointer, abstract_like
from grpojax.config import load_config
from grpojax.train.tasks.grpo import GRPOTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "main_checkpoint")
_spec = importlib.util.spec_from_file_location(
    "write_main_checkpoint", os.path.join(ROOT, "tests", "fixtures", "write_main_checkpoint.py"))
_writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_writer)
leaf_sums = _writer.leaf_sums


def test_checkpoint_written_before_the_restructuring_restores(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the saved config's tokenizer / data paths are repo-relative
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    with open(run_dir / "expected.json") as f:
        expected = json.load(f)
    cfg = load_config(str(run_dir / "config.yaml"), [f"run_dir={run_dir}"], kind="grpo")
    template = GRPOTask(cfg).init_state()
    with Checkpointer(str(run_dir), save_every=1, keep=10) as ck:
        restored = ck.restore_latest(abstract_like(template))
    assert restored.step == expected["step"] == 2
    assert restored.data_position == expected["data_position"]
    got = leaf_sums(restored.state)
    assert sorted(got) == sorted(expected["leaves"])
    for key, sums in expected["leaves"].items():
        np.testing.assert_array_equal(got[key], sums, err_msg=key)
