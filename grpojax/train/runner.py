"""The outer training loop, shared by every script: plain Python around one jitted step (nanodo style).

    run(cfg, task)      # task: SFTTask / PreferenceTask / GRPOTask / RewardTask / PPOTask / OnlineDPOTask

What it does, in order: write the resolved config to ``run_dir``; build the task's initial train state;
restore the latest finalised checkpoint of ``run_dir`` if there is one (train state + data position +
plateau counters; a config that differs outside the resumable keys is refused); then for each step
``rng = fold_in(key(seed), step)`` -> ``task.train_steps`` -> metrics to JSONL / TensorBoard / a progress
line; save every ``save_every`` steps, at the end, and when SIGTERM / SIGINT arrives (then exit 0);
optionally export the final policy to a HF directory. A step the jitted step skipped as non-finite is
counted in ``train/nonfinite_steps``; ``train.max_bad_steps`` of them in a row stop the run with a
:class:`UserError`. A resume that would change a decaying LR schedule's horizon is refused
(:func:`check_schedule_horizon`). Because the step RNG is derived from the step
number and the data order from the saved position, a resumed run is bit-identical to an uninterrupted one.

Sharding: the task's constructor has already started ``jax.distributed`` (``mesh.distributed: true``) and
built ``task.mesh`` from ``cfg.mesh`` (data / fsdp / tensor, ``-1`` = the rest); ``init_state`` returns the
state placed by the logical-axis rules and every step is jitted with those shardings (see
:mod:`grpojax.train.tasks`). The checkpoint is restored onto the shardings of that state, so a run saved
on one mesh resumes on another (Orbax re-shards). Multi-host: every process runs this loop in lockstep
on its own rows; only process 0 prints, writes ``config.yaml``, ``metrics.jsonl`` and TensorBoard events,
and exports; Orbax coordinates the checkpoint writes across processes.
"""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

import jax

from grpojax.checkpoint import Checkpointer, PreemptionGuard, abstract_like
from grpojax.cli import UserError
from grpojax.config import config_to_dict, dump_config, write_config
from grpojax.metrics import MetricsWriter
from grpojax.sharding import is_main_process


class Task(Protocol):
    """What :func:`run` needs of a task (:mod:`grpojax.train.tasks`): the initial state, ``n`` optimizer
    steps at a time, the data position to save and restore (JSON), a hook after each call (evaluation,
    LR-on-plateau) and the export of the trained policy; ``mesh`` (optional) is only printed."""

    def init_state(self) -> Any: ...

    def position(self) -> dict: ...

    def restore_position(self, d: dict) -> None: ...

    def steps_per_call(self, step: int, total: int) -> int: ...

    def train_steps(self, state, step: int, rngs: list) -> tuple[Any, list[dict]]: ...

    def after_steps(self, state, step: int, rows: list[dict]) -> Any: ...

    def export(self, state, out_dir: str) -> str | None: ...


def run(cfg, task: Task, *, stream=None) -> dict:
    """Train ``task`` for ``cfg.train.steps`` steps in ``cfg.run_dir`` (resuming if possible).

    Returns a summary dict: ``{"start_step", "end_step", "stopped_early", "seconds"}``.
    """
    t0 = time.perf_counter()
    tc = cfg.train
    main = is_main_process()
    say = (lambda *a, **k: print(*a, file=stream, flush=True, **k)) if main else (lambda *a, **k: None)
    mesh = getattr(task, "mesh", None)
    say(dump_config(cfg), end="")
    if mesh is not None and mesh.size > 1:
        say(f"mesh: {dict(mesh.shape)} over {mesh.size} devices ({jax.process_count()} processes)")
    os.makedirs(cfg.run_dir, exist_ok=True)
    with Checkpointer(cfg.run_dir, tc.save_every, tc.keep_checkpoints, config_to_dict(cfg)) as ckpt:
        if main:
            write_config(cfg, cfg.run_dir)
        check_schedule_horizon(ckpt.saved_config(), tc)
        state = task.init_state()
        restored = ckpt.restore_latest(abstract_like(state), set_aside=True)  # onto this run's shardings
        start, bad = 0, BadSteps(tc.max_bad_steps)
        if restored is not None:
            state, start = restored.state, restored.step
            task.restore_position(restored.data_position)
            bad.restore(restored.data_position)
            say(f"resumed from {ckpt.directory}/{start}")
        exported = bool(cfg.export_hf) and os.path.isdir(cfg.export_hf) and bool(os.listdir(cfg.export_hf))
        if exported and start < tc.steps:  # refused before training: an earlier export is never replaced
            raise UserError(f"export_hf: {cfg.export_hf} exists and is not empty (an earlier export); move it "
                            f"away or set export_hf to another directory before training to step {tc.steps}")
        if start >= tc.steps:
            say(f"nothing to do: the run is at step {start} >= train.steps={tc.steps}"
                + (f"; its export {cfg.export_hf} is there" if exported else ""))
        base = jax.random.key(tc.seed)
        stopped = False
        with MetricsWriter(cfg.run_dir, total_steps=tc.steps, resume_step=start,
                           log_every=tc.log_every, stream=stream) as log, PreemptionGuard() as guard:
            step = start
            while step < tc.steps:
                n = task.steps_per_call(step, tc.steps)
                state, rows = task.train_steps(state, step, [jax.random.fold_in(base, step + i + 1)
                                                              for i in range(n)])
                state = task.after_steps(state, step + n, rows)
                for i, row in enumerate(rows):
                    bad.count(row)
                    log.write(step + i + 1, row)
                step += n
                bad.check(step, ckpt)  # UserError after max_bad_steps skipped steps in a row
                stop = guard.should_stop()
                if ckpt.should_save(step) or step == tc.steps or stop or _crosses_save(step, n, tc):
                    ckpt.save(step, state, {**task.position(), **bad.position()})
                if stop:
                    say(f"{guard.signal_name or 'signal on another process'}: saved step {step}; exiting")
                    stopped = True
                    break
        ckpt.wait()
    if cfg.export_hf and not stopped and not exported:
        task.export(state, cfg.export_hf)
    return {"start_step": start, "end_step": step, "stopped_early": stopped,
            "seconds": time.perf_counter() - t0}


class BadSteps:
    """Counts the steps the jitted step skipped as non-finite (metric ``nonfinite`` = 1, see
    :func:`grpojax.train.steps.accumulate.apply_gradients`): each row gets ``train/nonfinite_steps`` (the run's
    total so far) in place of the flag, and :meth:`check` stops the run after ``limit`` in a row. Both
    counts travel with the data position, so a resumed run continues them."""

    def __init__(self, limit: int):
        self.limit, self.total, self.in_a_row = limit, 0, 0

    def count(self, row: dict) -> None:
        skipped = row.pop("nonfinite", 0.0) > 0
        self.total += skipped
        self.in_a_row = self.in_a_row + 1 if skipped else 0
        row["train/nonfinite_steps"] = float(self.total)

    def check(self, step: int, ckpt) -> None:
        if self.in_a_row >= self.limit:
            last = ckpt.latest_step()
            last = "no checkpoint" if last is None else f"last checkpoint: step {last}"
            raise UserError(
                f"steps {step - self.in_a_row + 1}-{step}: {self.in_a_row} non-finite steps in a row (NaN or inf "
                f"loss / gradient; train.max_bad_steps={self.limit}); their updates were skipped and the run "
                f"stopped without saving them ({last}); lower train.learning_rate, set train.max_grad_norm, or "
                "check the data and rewards")

    def position(self) -> dict:
        return {"nonfinite_steps": self.total, "nonfinite_in_a_row": self.in_a_row}

    def restore(self, d: dict) -> None:
        self.total, self.in_a_row = int(d.get("nonfinite_steps", 0)), int(d.get("nonfinite_in_a_row", 0))


def check_schedule_horizon(saved: dict | None, tc) -> None:
    """UserError when resuming would change a decaying LR schedule: the horizon (``train.schedule_steps``,
    else ``train.steps``) of the saved run ``saved`` (its config dict; None = a new run) differs from
    ``tc``'s. A ``constant`` schedule has no horizon (its warm-up does not depend on it)."""
    if not saved or tc.schedule == "constant":
        return
    old = saved.get("train", {})
    before = old.get("schedule_steps") or old.get("steps")
    if before is None or before == tc.horizon:
        return
    raise UserError(
        f"resuming with train.steps={tc.steps}, train.schedule_steps={tc.schedule_steps or 'null'} would change the "
        f"{tc.schedule} LR schedule's horizon from {before} to {tc.horizon} steps (the saved run's curve would "
        f"jump); resume with "
        f"train.schedule_steps={before} to keep the original curve (the LR stays at its final value past "
        "it), or start a new run_dir")


def _crosses_save(step: int, n: int, tc) -> bool:
    """A multi-step call (GRPO num_iterations) that jumped over a save_every multiple saves at its end."""
    return n > 1 and (step // tc.save_every) > ((step - n) // tc.save_every)
