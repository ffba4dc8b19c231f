"""Hooks into the training loop: ``grpojax.train.runner.run(cfg, task, callbacks=[...])``.

A callback subclasses :class:`Callback` and overrides what it needs:

    on_step_end(step, row, ctx)     after each optimizer step's metric row is logged (``row``: the dict
                                    written to metrics.jsonl, without ``step``)
    on_train_end(step, state, ctx)  once after the loop (the final train state, before the HF export)

``ctx`` is a :class:`LoopContext`: the config, the task and the run's ``MetricsWriter``. Only process 0
calls them. :class:`CompletionsLogger` (always on in the runner) is one: every ``train.log_every`` steps it
writes a few of the step's sampled completions -- prompt, completion, every aspect's score, the reward and
the advantage -- from ``task.sample_records(limit)`` (tasks that sample define it, with
:func:`grpojax.rollout.records.completion_records`) through
``MetricsWriter.write_completions`` to ``run_dir/completions.jsonl``, TensorBoard text and W&B.

Example::

    class StopAtReward(Callback):
        def on_step_end(self, step, row, ctx):
            print(step, row["reward"])

    run(cfg, task, callbacks=[StopAtReward()])
"""

from __future__ import annotations

from typing import Any, NamedTuple


class LoopContext(NamedTuple):
    """What a callback sees besides the step: the run's ``cfg``, its ``task`` and the metrics writer ``log``."""

    cfg: Any
    task: Any
    log: Any


class Callback:
    """Base class of the loop's hooks (every method does nothing by default)."""

    def on_step_end(self, step: int, row: dict, ctx: LoopContext) -> None:
        """After optimizer step ``step``; ``row`` is its logged metric row."""

    def on_train_end(self, step: int, state, ctx: LoopContext) -> None:
        """After the loop, with the final train state at ``step``."""


class CompletionsLogger(Callback):
    """Every ``train.log_every`` steps, up to ``limit`` sampled completions of the latest rollout (the first
    prompts' groups, whole) -> ``MetricsWriter.write_completions``; each rollout is written once."""

    def __init__(self, limit: int = 8):
        self.limit, self._last = limit, None

    def on_step_end(self, step: int, row: dict, ctx: LoopContext) -> None:
        records = getattr(ctx.task, "sample_records", None)
        if records is None or step % ctx.cfg.train.log_every:
            return
        key, recs = records(self.limit)
        if recs and key is not self._last:
            self._last = key
            ctx.log.write_completions(step, recs)

