"""A damaged latest checkpoint (issue 17 item 10): the resume says which step is unreadable, falls back to
the newest readable one with one warning line (the damaged step moved aside), and exits 2 with one line
when none is readable; no traceback either way. Through the script, on a real tiny SFT run."""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pytest runs with --import-mode=importlib
from test_runner import ENV, ROOT, _metrics, _repo_root, _train  # noqa: E402,F401 (autouse fixture)

from grpojax.train.tasks import SFTTask  # noqa: E402


def _overwrite_arrays(step_dir):
    """Overwrites every array data file of a checkpoint step (the OCDBT chunks under state/) with junk."""
    n = 0
    for root, _, files in os.walk(os.path.join(step_dir, "state")):
        for f in files:
            if os.path.basename(root) == "d":
                with open(os.path.join(root, f), "wb") as out:
                    out.write(b"not an array" * 3)
                n += 1
    assert n > 0


def _sft_script(run_dir, steps):
    return subprocess.run([sys.executable, "scripts/sft.py", "configs/tiny_sft.yaml", f"train.steps={steps}",
                           f"run_dir={run_dir}", "train.save_every=1", "train.keep_checkpoints=5"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    """A finished 2-step tiny SFT run with checkpoints 1 and 2 (copied by each test before damaging it)."""
    run_dir = str(tmp_path_factory.mktemp("sft") / "run")
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        _train("sft", SFTTask, ["train.steps=2", f"run_dir={run_dir}", "train.save_every=1",
                                "train.keep_checkpoints=5"])
    finally:
        os.chdir(cwd)
    return run_dir


def _copy(src, tmp_path):
    import shutil

    dst = str(tmp_path / "run")
    shutil.copytree(src, dst)
    return dst


def test_resume_falls_back_past_an_unreadable_latest_step(two_step_run, tmp_path):
    run_dir = _copy(two_step_run, tmp_path)
    _overwrite_arrays(os.path.join(run_dir, "checkpoints", "2"))
    proc = _sft_script(run_dir, 3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]  # one warning line, no traceback, no asyncio echoes
    assert lines[0].startswith("warning: checkpoint step 2 in ") and "is unreadable" in lines[0], lines[0]
    assert "does not match" not in lines[0] and "resuming from step 1" in lines[0], lines[0]
    assert f"resumed from {os.path.join(run_dir, 'checkpoints')}/1" in proc.stdout
    assert [r["step"] for r in _metrics(run_dir)] == [1, 2, 3]
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == ["1", "2", "3"]  # step 2 saved anew
    assert os.listdir(os.path.join(run_dir, "unreadable_checkpoints")) == ["2"]


def test_resume_with_no_readable_step_exits_2_in_one_line(two_step_run, tmp_path):
    run_dir = _copy(two_step_run, tmp_path)
    for step in ("1", "2"):
        _overwrite_arrays(os.path.join(run_dir, "checkpoints", step))
    proc = _sft_script(run_dir, 3)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no readable checkpoint in "), proc.stderr[-3000:]
    assert "step 2 in" in lines[0] and "step 1 in" in lines[0] and "is unreadable" in lines[0], lines[0]
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == ["1", "2"]  # nothing moved
