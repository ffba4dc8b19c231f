"""Metrics logging for training runs: JSONL (the contract), TensorBoard, optional W&B, a progress line.

``MetricsWriter(run_dir)`` appends one JSON object per logged step to ``<run_dir>/metrics.jsonl``
(``{"step": 12, "loss": 0.53, "reward": 0.1, ...}``), flushed line by line so other tools can tail it.
On resume from a checkpoint at step n (``resume_step=n``) the file is continued: lines with ``step > n``
(written after that checkpoint by the interrupted run, and about to be recomputed) are moved to
``metrics.jsonl.discarded`` -- never deleted -- so every step appears once. Only process 0 writes
(``jax.process_index() == 0``); other processes get a writer that does nothing.

Example::

    with MetricsWriter(run_dir, total_steps=1000, resume_step=start - 1) as log:
        for step in range(start, 1001):
            ...
            log.write(step, {"loss": loss, "reward": reward})   # jax / numpy scalars are fine
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np

from grpojax.cli import UserError

PROGRESS_KEYS = ("loss", "reward", "kl", "accuracy", "lr")


def _scalar(key: str, v: Any) -> float | int | bool | str:
    if isinstance(v, (bool, int, str)):
        return v
    arr = np.asarray(v)
    if arr.size != 1:
        raise ValueError(f"metric {key!r} must be a scalar, got shape {arr.shape}")
    x = arr.reshape(()).item()
    return x if isinstance(x, (bool, int)) else float(x)


def read_metrics(path: str) -> list[dict]:
    """All complete JSON lines of a metrics file (a torn last line from a crash is skipped)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i >= len(lines) - 1:  # the last (unterminated) line of a killed run
                continue
            raise UserError(f"{path}: line {i}: invalid JSON") from None
    return rows


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    return str(datetime.timedelta(seconds=int(round(seconds))))


class MetricsWriter:
    """Per-step metrics to ``metrics.jsonl`` + TensorBoard (``tb/``) + optional W&B, with a progress line.

    Args:
      run_dir: the run directory (created if missing).
      total_steps: for the progress line's ``step/total`` and ETA.
      resume_step: the step of the checkpoint the run resumes from (None = fresh run, i.e. 0). Existing
        lines with a larger step are moved to ``metrics.jsonl.discarded`` (a restart from scratch after
        a crash before the first checkpoint moves them all), so each step is logged once.
      log_every: print the progress line every ``log_every`` writes.
      tensorboard: also write TensorBoard scalars (tensorboardX) under ``run_dir/tb``.
      wandb: ``None`` (off) or a dict of ``wandb.init`` kwargs (needs ``pip install wandb``).
      process_index: defaults to ``jax.process_index()``; only 0 writes anything.
      stream: where the progress line goes (default stdout).
    """

    def __init__(self, run_dir: str, total_steps: int | None = None, resume_step: int | None = None,
                 log_every: int = 1, tensorboard: bool = True, wandb: Mapping | None = None,
                 process_index: int | None = None, stream: TextIO | None = None,
                 progress_keys: Sequence[str] = PROGRESS_KEYS):
        if process_index is None:
            import jax

            process_index = jax.process_index()
        self.active = process_index == 0
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.total_steps, self.log_every, self.progress_keys = total_steps, max(1, log_every), progress_keys
        self.stream = stream or sys.stdout
        self._file = self._tb = self._wandb = None
        self._writes, self._t0, self._step0 = 0, time.perf_counter(), resume_step or 0
        self.last_step = resume_step
        if not self.active:
            return
        os.makedirs(run_dir, exist_ok=True)
        self._prepare_file(resume_step)
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(run_dir, "tb"), flush_secs=10)
        if wandb is not None:
            try:
                import wandb as wandb_lib
            except ImportError:
                raise UserError("W&B logging was requested but wandb is not installed: pip install wandb") from None
            self._wandb = wandb_lib.init(**dict(wandb))

    def _prepare_file(self, resume_step: int | None) -> None:
        if not os.path.exists(self.path):
            return
        rows = read_metrics(self.path)
        resume_step = 0 if resume_step is None else resume_step
        keep = [r for r in rows if r.get("step", -1) <= resume_step]
        drop = [r for r in rows if r.get("step", -1) > resume_step]
        with open(self.path, encoding="utf-8") as f:
            torn = not f.read().endswith("\n") and os.path.getsize(self.path) > 0
        if drop or torn:
            if drop:
                with open(self.path + ".discarded", "a", encoding="utf-8") as f:
                    f.writelines(json.dumps(r) + "\n" for r in drop)
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in keep)
            os.replace(tmp, self.path)

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict:
        """Logs ``metrics`` (scalars: python, numpy or jax) for ``step``; returns the JSON row written.

        Steps must increase; writing a step at or below the last logged one raises ValueError."""
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(f"metrics step {step} is not after the last logged step {self.last_step}")
        row = {"step": int(step), **{k: _scalar(k, v) for k, v in metrics.items() if k != "step"}}
        self.last_step = step
        self._writes += 1
        if not self.active:
            return row
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                if self._tb is not None:
                    self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(row, step=step)
        if self._writes % self.log_every == 0:
            print(self.progress_line(step, row), file=self.stream, flush=True)
        return row

    def progress_line(self, step: int, row: Mapping[str, Any]) -> str:
        """``step 12/100 | 3.41 steps/s | ETA 0:00:26 | loss 0.5312 | reward 0.1000``."""
        elapsed = time.perf_counter() - self._t0
        done = step - self._step0
        rate = done / elapsed if elapsed > 0 and done > 0 else float("nan")
        total = f"/{self.total_steps}" if self.total_steps else ""
        eta = (self.total_steps - step) / rate if self.total_steps and rate > 0 else float("nan")
        parts = [f"step {step}{total}", f"{rate:.2f} steps/s", f"ETA {format_duration(eta)}"]
        parts += [f"{k} {row[k]:.4g}" for k in self.progress_keys
                  if isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool)]
        return " | ".join(parts)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
