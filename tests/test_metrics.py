"""grpojax.metrics (JSONL contract, TensorBoard, resume without duplicates, process 0 only, progress line)
and scripts/plot_metrics.py."""

import glob
import importlib.util
import io
import json
import os
import struct
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from grpojax import metrics as M
from grpojax.cli import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLOT = os.path.join(ROOT, "scripts", "plot_metrics.py")


def lines(path):
    return [json.loads(x) for x in open(path).read().splitlines()]


def tb_scalars(run_dir):
    """(tag, step, value) of every scalar in the TensorBoard event files (TFRecord framing, Event protos)."""
    from tensorboardX.proto import event_pb2

    out = []
    for path in sorted(glob.glob(os.path.join(run_dir, "tb", "events.out.tfevents.*"))):
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos: pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12: pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                out.append((v.tag, event.step, v.simple_value))
    return out


def test_jsonl_lines_are_flushed_and_typed(tmp_path):
    w = M.MetricsWriter(str(tmp_path), total_steps=3, stream=io.StringIO())
    row = w.write(1, {"loss": jnp.float32(0.5), "reward": np.float64(0.25), "n": np.int32(7), "flag": True,
                      "rewards/safety/mean": jnp.array([0.125]), "note": "warmup"})
    assert row == {"step": 1, "loss": 0.5, "reward": 0.25, "n": 7, "flag": True, "rewards/safety/mean": 0.125,
                   "note": "warmup"}
    assert lines(tmp_path / "metrics.jsonl") == [row]  # readable while the writer is still open
    w.write(2, {"loss": 0.25, "reward": float("nan")})
    with pytest.raises(ValueError, match="metrics step 2 is not after the last logged step 2"):
        w.write(2, {"loss": 1.0})
    with pytest.raises(ValueError, match=r"metric 'loss' must be a scalar, got shape \(2,\)"):
        w.write(3, {"loss": jnp.ones(2)})
    w.close()
    got = lines(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in got] == [1, 2] and np.isnan(got[1]["reward"])
    scalars = tb_scalars(str(tmp_path))
    assert ("loss", 1, 0.5) in scalars and ("loss", 2, 0.25) in scalars and ("n", 1, 7.0) in scalars
    assert ("rewards/safety/mean", 1, 0.125) in scalars
    assert not any(tag in ("flag", "note", "step") for tag, _, _ in scalars)


def test_resume_continues_without_duplicates(tmp_path):
    with M.MetricsWriter(str(tmp_path), tensorboard=False, stream=io.StringIO()) as w:
        for s in range(1, 6):
            w.write(s, {"loss": float(s)})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # torn line of a killed run
    # Resume from the checkpoint at step 3: steps 4, 5 (and the torn 6) are recomputed by the new run.
    with M.MetricsWriter(str(tmp_path), resume_step=3, tensorboard=False, stream=io.StringIO()) as w:
        with pytest.raises(ValueError):
            w.write(3, {"loss": 0.0})
        for s in range(4, 8):
            w.write(s, {"loss": 10.0 * s})
    got = lines(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["loss"] for r in got] == [1, 2, 3, 40, 50, 60, 70]
    assert lines(tmp_path / "metrics.jsonl.discarded") == [{"step": 4, "loss": 4.0}, {"step": 5, "loss": 5.0}]
    # A restart from scratch (crash before the first checkpoint) keeps the old rows aside, never deletes.
    with M.MetricsWriter(str(tmp_path), tensorboard=False, stream=io.StringIO()) as w:
        w.write(1, {"loss": -1.0})
    assert lines(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": -1.0}]
    assert len(lines(tmp_path / "metrics.jsonl.discarded")) == 2 + 7


def test_only_process_zero_writes(tmp_path):
    w = M.MetricsWriter(str(tmp_path / "run"), process_index=1, stream=io.StringIO())
    assert w.write(1, {"loss": 1.0}) == {"step": 1, "loss": 1.0}
    w.close()
    assert not (tmp_path / "run").exists()


def test_wandb_requested_but_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(UserError, match="W&B logging was requested but wandb is not installed: pip install wandb"):
        M.MetricsWriter(str(tmp_path), tensorboard=False, wandb={"project": "x"})


def test_progress_line_rate_and_eta(tmp_path, monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 3.0, 4.0])
    monkeypatch.setattr(M.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    with M.MetricsWriter(str(tmp_path), total_steps=10, resume_step=2, log_every=2, tensorboard=False,
                         stream=out) as w:
        for s in (3, 4, 5, 6):  # perf_counter: start 0.0, then 1 per progress line (writes 2 and 4)
            w.write(s, {"loss": 0.123456, "reward": 2, "other": 1.0})
    assert out.getvalue().splitlines() == [
        "step 4/10 | 2.00 steps/s | ETA 0:00:03 | loss 0.1235 | reward 2",
        "step 6/10 | 2.00 steps/s | ETA 0:00:02 | loss 0.1235 | reward 2",
    ]
    assert M.format_duration(float("nan")) == "?" and M.format_duration(3725.4) == "1:02:05"


def test_read_metrics_names_bad_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl: line 2: invalid JSON"):
        M.read_metrics(str(tmp_path / "metrics.jsonl"))


def _plot_module():
    spec = importlib.util.spec_from_file_location("plot_metrics", PLOT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plot_metrics_script(tmp_path):
    with M.MetricsWriter(str(tmp_path), tensorboard=False, stream=io.StringIO()) as w:
        for s in range(1, 6):
            w.write(s, {"loss": 1.0 / s, "rewards/safety/mean": 0.1 * s, "note": "x"})
    r = subprocess.run([sys.executable, PLOT, str(tmp_path), "--out", str(tmp_path / "png")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    pngs = sorted(os.listdir(tmp_path / "png"))
    assert pngs == ["loss.png", "rewards_safety_mean.png"]
    for p in pngs:
        assert open(tmp_path / "png" / p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    r = subprocess.run([sys.executable, PLOT, str(tmp_path), "--keys", "los"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ")
    assert "no metric 'los'; available metrics: loss, rewards/safety/mean" in r.stderr
    mod = _plot_module()
    assert mod.run([str(tmp_path), "--keys", "loss"]) == 0
    assert os.path.exists(tmp_path / "plots" / "loss.png")
    with pytest.raises(UserError, match=r"no metrics file at .*nowhere/metrics.jsonl"):
        mod.run([str(tmp_path / "nowhere")])
    with pytest.raises(UserError, match=r"unrecognized arguments: --bogus; usage: plot_metrics.py RUN_DIR"):
        mod.run([str(tmp_path), "--bogus"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text('{"step": 1, "note": "x"}\n')
    with pytest.raises(UserError, match="no numeric metrics to plot"):
        mod.run([str(tmp_path / "empty")])
