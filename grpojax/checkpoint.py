"""Checkpoints of a training run: an Orbax ``CheckpointManager`` plus a preemption guard.

Layout: ``<run_dir>/checkpoints/<step>/{state, data, config}``:

- ``state``: any pytree of jax arrays (params or LoRA params, optimizer state, step, typed PRNG keys,
  robust group weights alpha ...), saved with ``StandardSave``; restored onto the shardings of an abstract
  target (``jax.ShapeDtypeStruct`` with ``sharding``), so a run may resume on a different mesh;
- ``data``: the data-iterator position (``BatchIterator.state()``, a small JSON dict);
- ``config``: the resolved run config as JSON; resuming with an incompatible config is refused.

Saving is asynchronous (Orbax writes in a background thread; call :meth:`Checkpointer.wait` before the
process exits, or use the checkpointer as a context manager). Orbax writes each step into a temporary
directory and renames it only when complete, so a process killed mid-save leaves a ``*.orbax-checkpoint-
tmp-*`` directory that is never listed as a step: the latest *finalised* checkpoint is restored.

Example::

    with Checkpointer(run_dir, save_every=100, keep=3, config=config_to_dict(cfg)) as ckpt, \\
            PreemptionGuard() as guard:
        restored = ckpt.restore_latest(abstract_state)
        ...
        for step in range(start, cfg.train.steps + 1):
            state, metrics = train_step(state, next(loader), rng)
            if ckpt.should_save(step) or guard.should_stop() or step == cfg.train.steps:
                ckpt.save(step, state, loader.state())
            if guard.should_stop():
                break
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp

from grpojax.cli import UserError, one_line
from grpojax.config import diff_configs

# Keys that may change between a run and its resumption (length, cadence, output places, mesh layout,
# activation checkpointing: none of them changes the saved state's tree). model.scan_layers does.
# train.schedule_steps is compared on its own (grpojax.train.runner: the schedule's horizon must not change).
RESUMABLE_KEYS = ("train.steps", "train.schedule_steps", "train.max_bad_steps", "train.log_every",
                  "train.save_every", "train.keep_checkpoints", "train.eval_every", "run_dir", "export_hf",
                  "mesh", "compilation_cache_dir", "model.remat")


class Restored(NamedTuple):
    """What :meth:`Checkpointer.restore_latest` returns: the step, the train state pytree, the data
    position dict and the config dict saved with it."""

    step: int
    state: Any
    data_position: dict
    config: dict


class Checkpointer:
    """Saves and restores train state + data position + config under ``<run_dir>/checkpoints``.

    Args:
      run_dir: the run directory (created if missing).
      save_every: :meth:`should_save` is true every ``save_every`` steps.
      keep: keep the last ``keep`` checkpoints (older ones are deleted by Orbax after a new save).
      config: the resolved config (``config_to_dict(cfg)``); stored with every checkpoint and compared
        with the latest one at construction: a difference outside ``RESUMABLE_KEYS`` raises UserError.
      async_save: background writes (Orbax async checkpointing).
    """

    def __init__(self, run_dir: str, save_every: int, keep: int, config: dict | None = None,
                 async_save: bool = True, ignore_keys: tuple[str, ...] = RESUMABLE_KEYS):
        if save_every <= 0 or keep <= 0:
            raise ValueError(f"save_every and keep must be > 0, got {save_every}, {keep}")
        self.directory = os.path.abspath(os.path.join(run_dir, "checkpoints"))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise UserError(f"{self.directory} exists and is not a directory; choose another run_dir")
        self.save_every, self.config = save_every, config
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot open checkpoint directory {self.directory}: {one_line(str(e))[:200]}") from None
        if config is not None:
            self.check_config(config, ignore_keys)

    # ---------------------------------------------------------------- queries
    def latest_step(self) -> int | None:
        """The newest finalised step (half-written temporary directories are never steps)."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        return step > 0 and step % self.save_every == 0

    def saved_config(self, step: int | None = None) -> dict | None:
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        return self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

    def check_config(self, config: dict, ignore_keys: tuple[str, ...] = RESUMABLE_KEYS) -> None:
        """UserError if the latest checkpoint was written by a run with an incompatible config."""
        saved = self.saved_config()
        if saved is None:
            return
        diffs = diff_configs(saved, config, ignore=ignore_keys)
        if diffs:
            shown = "; ".join(diffs[:6]) + (f"; ... ({len(diffs)} keys)" if len(diffs) > 6 else "")
            raise UserError(f"{self.directory} holds checkpoints of a different run (config differs at {shown}); "
                            "use a new run_dir, or resume with the original values")

    # ---------------------------------------------------------------- save / restore
    def save(self, step: int, state, data_position: dict | None = None) -> bool:
        """Starts saving ``state`` at ``step`` (asynchronously). Returns False (and writes nothing) if that
        step is already saved, so a resumed run never overwrites an existing checkpoint."""
        if step in self.all_steps():
            return False
        latest = self.latest_step()
        if latest is not None and step < latest:
            raise UserError(f"refusing to save step {step} below the latest checkpoint {latest} in {self.directory}")
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=ocp.args.JsonSave(dict(data_position or {})),
                                  config=ocp.args.JsonSave(self.config or {}))
        return bool(self._manager.save(step, args=args, force=True))

    def restore(self, step: int, abstract_state=None) -> Restored:
        """Restores ``step`` onto ``abstract_state``'s shapes, dtypes and shardings (None: as saved)."""
        state_args = ocp.args.StandardRestore(abstract_state)
        args = ocp.args.Composite(state=state_args, data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore())
        try:
            out = self._manager.restore(step, args=args)
        except FileNotFoundError as e:
            raise UserError(f"checkpoint step {step} in {self.directory} is missing files: "
                            f"{one_line(str(e))[:200]}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"checkpoint step {step} in {self.directory} does not match this run's train state "
                            f"(different model/optimizer?): {one_line(str(e))[:300]}") from None
        return Restored(step, out["state"], dict(out["data"] or {}), dict(out["config"] or {}))

    def restore_latest(self, abstract_state=None) -> Restored | None:
        """The latest finalised checkpoint restored onto ``abstract_state``, or None if there is none."""
        step = self.latest_step()
        return None if step is None else self.restore(step, abstract_state)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are finalised."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def abstract_like(state, shardings=None):
    """``jax.ShapeDtypeStruct`` pytree of ``state`` (arrays or structs), optionally with new ``shardings``
    (a matching pytree of ``jax.sharding.Sharding``) -- the target for :meth:`Checkpointer.restore`."""
    structs = jax.eval_shape(lambda s: s, state)
    if shardings is None:
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(s, "sharding", None)),
                            structs, state)
    return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), structs, shardings)


class PreemptionGuard:
    """Turns SIGTERM (TPU VM preemption, ``kill``) and SIGINT (Ctrl-C) into a flag the training loop polls.

    Inside ``with PreemptionGuard() as guard:`` the signals only set ``guard.requested``; the loop saves a
    checkpoint and leaves cleanly (exit status 0). A second SIGINT raises ``KeyboardInterrupt`` (the user
    insists). Previous handlers are restored on exit. :meth:`should_stop` agrees across processes on a
    multi-host run (any process signalled -> all stop at the same step).
    """

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = tuple(signals)
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("PreemptionGuard must be entered from the main thread (signal handlers)")
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def should_stop(self) -> bool:
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils
        import numpy as np

        flags = multihost_utils.process_allgather(np.array([self.requested]))
        return bool(np.any(flags))
