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
tmp-*`` directory that is never listed as a step: the latest *finalised* checkpoint is restored. A
finalised step whose files were damaged later (overwritten, truncated) is reported as unreadable in one
warning line and the newest readable step is restored instead (the training loop moves the damaged ones to
``<run_dir>/unreadable_checkpoints``); none readable is a one-line ``UserError``; a step saved by another
model / optimizer is told apart from damage by its metadata (:meth:`Checkpointer.restore`).

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

import logging
import os
import signal
import sys
import threading
import warnings
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
        """The config saved with ``step``; None = the newest step whose config is readable (None if none)."""
        def read(s):
            return self._manager.restore(s, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

        if step is not None:
            return read(step)
        for s in reversed(self.all_steps()):
            try:
                return read(s)
            except Exception:  # an unreadable step: restore_latest reports it
                continue
        return None

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
        """Restores ``step`` onto ``abstract_state``'s shapes, dtypes and shardings (None: as saved).

        Raises :class:`UnreadableCheckpoint` (a UserError) when it cannot: ``mismatch`` is true when the
        step's saved tree (its metadata) has other leaves or shapes than ``abstract_state`` (another
        model / optimizer), false when the files themselves are missing, truncated or corrupt."""
        state_args = ocp.args.StandardRestore(abstract_state)
        args = ocp.args.Composite(state=state_args, data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore())
        _quiet_failed_reads()  # before the read: the echoes of a failure start before it reaches us
        try:
            out = self._manager.restore(step, args=args)
        except Exception as e:  # noqa: BLE001 -- classified and reported in one line, never a traceback
            _collect_abandoned_reads()
            diff = self._tree_difference(step, abstract_state)
            if diff:
                raise UnreadableCheckpoint(step, f"checkpoint step {step} in {self.directory} does not match this "
                                           f"run's train state (different model/optimizer?): {diff}",
                                           mismatch=True) from None
            raise UnreadableCheckpoint(step, f"checkpoint step {step} in {self.directory} is unreadable "
                                       f"(missing, truncated or corrupt files): {_reason(e)}") from None
        return Restored(step, out["state"], dict(out["data"] or {}), dict(out["config"] or {}))

    def _tree_difference(self, step: int, abstract_state) -> str | None:
        """The first leaf whose path or shape differs between ``step``'s saved state (its metadata) and
        ``abstract_state``; None when they agree or the metadata itself cannot be read."""
        if abstract_state is None:
            return None
        absl = logging.getLogger("absl")  # Orbax warns that a step's item has no step-level metadata file
        level = absl.level
        try:
            absl.setLevel(logging.ERROR)
            with ocp.StandardCheckpointer() as reader:
                saved = reader.metadata(os.path.join(self.directory, str(step), "state")).item_metadata
            saved = {_path(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(saved)}
        except Exception:  # noqa: BLE001 -- unreadable metadata: the step is unreadable, not different
            return None
        finally:
            absl.setLevel(level)
        if not saved:
            return None
        want = {_path(p): _stored_shape(x) for p, x in jax.tree_util.tree_leaves_with_path(abstract_state)}
        for key in sorted(set(saved) | set(want)):
            if saved.get(key) != want.get(key):
                return (f"{key} is {saved.get(key, 'absent')} in the checkpoint, "
                        f"{want.get(key, 'absent')} in this run")
        return None

    def restore_latest(self, abstract_state=None, *, set_aside: bool = False) -> Restored | None:
        """The newest *readable* finalised checkpoint restored onto ``abstract_state``; None if there is none.

        A step whose files cannot be read (array files overwritten or truncated, metadata unreadable) is
        skipped for the next older one, with ONE warning line on stderr naming the unreadable step(s) and
        why. ``set_aside`` (the training loop, which saves those step numbers again) moves them to
        ``<run_dir>/unreadable_checkpoints/<step>``, so they are neither listed nor in the way. When no
        step is readable, or the newest one holds another model / optimizer (:meth:`restore`),
        :class:`UserError` in one line, nothing moved."""
        failed = []
        for step in reversed(self.all_steps()):
            try:
                restored = self.restore(step, abstract_state)
            except UnreadableCheckpoint as e:
                if e.mismatch:
                    raise
                failed.append((step, e.reason))
                continue
            if failed:
                moved = self._set_aside([s for s, _ in failed]) if set_aside else None
                where = f"; moved to {moved}" if moved else ""
                _warn(f"warning: {'; '.join(r for _, r in failed)}{where}; resuming from step {step}, the newest "
                      "readable checkpoint")
            return restored
        if failed:
            raise UserError(f"no readable checkpoint in {self.directory}: " + "; ".join(r for _, r in failed)
                            + "; move the checkpoints away (or use a new run_dir) to start over")
        return None

    def _set_aside(self, steps: list[int]) -> str:
        """Moves step directories out of the checkpoint directory (process 0; every process waits)."""
        dest = os.path.join(os.path.dirname(self.directory), "unreadable_checkpoints")
        _sync("grpojax_set_aside_start")
        if jax.process_index() == 0:
            os.makedirs(dest, exist_ok=True)
            for step in steps:
                target, n = os.path.join(dest, str(step)), 1
                while os.path.exists(target):
                    target, n = os.path.join(dest, f"{step}.{n}"), n + 1
                os.replace(os.path.join(self.directory, str(step)), target)
        _sync("grpojax_set_aside_done")
        self._manager.reload()
        return dest

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are finalised."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class UnreadableCheckpoint(UserError):
    """A checkpoint step that :meth:`Checkpointer.restore` cannot restore; ``reason`` is the one-line
    message, ``mismatch`` tells another model / optimizer (true) from damaged files (false)."""

    def __init__(self, step: int, reason: str, mismatch: bool = False):
        super().__init__(reason)
        self.step, self.reason, self.mismatch = step, reason, mismatch


def _path(path) -> str:
    """A pytree path as Orbax names the leaf: ``params.embed.value``, ``opt_state.1.0.mu...``."""
    return ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _stored_shape(x) -> tuple:
    """The shape a leaf is stored with (a typed PRNG key is stored as its key data)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return tuple(jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape)
    return tuple(x.shape)


def _reason(e: BaseException, limit: int = 300) -> str:
    """The root cause of a restore failure on one line (Orbax wraps TensorStore's error in its own)."""
    while e.__cause__ is not None:
        e = e.__cause__
    return f"{type(e).__name__}: {one_line(str(e))}"[:limit]


_QUIET = []


def _quiet_failed_reads() -> None:
    """Silences the echoes of a failed Orbax restore (filters installed once, before the first restore).

    When one array read fails, Orbax's ``asyncio.gather`` returns at once and closes its event loop while
    the other reads are in flight: TensorStore's completions then hit the closed loop (``RuntimeError:
    Event loop is closed`` tracebacks from its threads), the abandoned coroutines are reported as
    unraisable and asyncio logs "exception was never retrieved", for every array of the step. The failure
    itself has been reported in one line; these filters drop exactly those echoes (anything else still
    reaches the previous hooks)."""
    if not _QUIET:
        echo = ("Event loop is closed", "Encountered error while reading array index")

        def is_echo(exc) -> bool:
            return exc is not None and any(str(exc).startswith(m) for m in echo)

        previous_hook, previous_unraisable = sys.excepthook, sys.unraisablehook

        def excepthook(tp, value, tb):
            if not is_echo(value):
                previous_hook(tp, value, tb)

        def unraisablehook(u):
            if not (is_echo(u.exc_value) or "orbax" in repr(getattr(u.object, "cr_code", ""))):
                previous_unraisable(u)

        class _Filter(logging.Filter):
            def filter(self, record):
                return not (record.name == "asyncio" and "exception was never retrieved" in record.getMessage())

        sys.excepthook, sys.unraisablehook = excepthook, unraisablehook
        logging.getLogger("asyncio").addFilter(_Filter())
        warnings.filterwarnings("ignore", r"coroutine '(_read_array_index_and_device_put|async_deserialize)' "
                                "was never awaited", RuntimeWarning)
        _QUIET.append(True)


def _collect_abandoned_reads() -> None:
    """After a failed restore: finalises the abandoned read coroutines now (quietly), not mid-run."""
    import gc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        gc.collect()


def _warn(message: str) -> None:
    if jax.process_index() == 0:
        sys.stdout.flush()
        print(message, file=sys.stderr, flush=True)


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


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

    def __enter__(self) -> PreemptionGuard:
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
        import numpy as np
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.array([self.requested]))
        return bool(np.any(flags))
