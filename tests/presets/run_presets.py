"""Runs a list of user commands ``python scripts/<script>.py ARGS...`` one after the other in ONE process.

    python tests/presets/run_presets.py PLAN.json RESULTS.json

``PLAN.json``: ``[{"name": ..., "argv": ["scripts/train_reward.py", "configs/....yaml", "key=value", ...],
"after": [names]}, ...]``, run from the current directory. Each command is executed as the user's
``python <script> ...`` would run it -- ``runpy.run_path(script, run_name="__main__")`` with ``sys.argv``
set -- so the same code path runs, but the interpreter, jax, transformers and the compiled programs of
earlier commands are shared (a fresh interpreter per command costs ~10 s of imports on 2 cores). Each
command's stdout and stderr (file descriptors 1 / 2: the output of a script's subprocesses too) go to
``logs/<name>.log``.

Two runners may share one directory (two lanes of one chain, one per core): after each command a runner
writes ``done/<name>.json``; a command with ``after`` waits for those files of the other lane (up to
``WAIT_SECONDS``) and is skipped (rc ``SKIPPED``) when one of them failed. ``RESULTS.json`` (rewritten
after every command, so that a crash leaves what ran) maps name -> ``{"rc", "seconds", "log"}``: rc is
the script's exit status (``SystemExit``), 1 for an uncaught exception (its traceback in the log).
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
import traceback


def run_one(argv: list[str], log_path: str) -> int:
    """``python argv...`` in this process; stdout and stderr (file descriptors 1 and 2, so the output of
    any subprocess the script starts too) go to ``log_path``. Returns the exit status."""
    old_argv, rc = sys.argv, 0
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "w", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        sys.argv = list(argv)
        try:
            runpy.run_path(argv[0], run_name="__main__")
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 -- recorded, the next command still runs
            traceback.print_exc()
            rc = 1
        finally:
            sys.argv = old_argv
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])
    return rc


SKIPPED = 99
WAIT_SECONDS = 1800


def wait_for(names: list[str]) -> str | None:
    """Blocks until every ``done/<name>.json`` exists; the first failed name (or None when all passed)."""
    deadline = time.monotonic() + WAIT_SECONDS
    for name in names:
        path = os.path.join("done", f"{name}.json")
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                return f"{name} (not finished after {WAIT_SECONDS} s)"
            time.sleep(0.5)
        with open(path, encoding="utf-8") as f:
            if json.load(f)["rc"] != 0:
                return name
    return None


def main(plan_path: str, results_path: str) -> None:
    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    os.makedirs("logs", exist_ok=True), os.makedirs("done", exist_ok=True)
    results = {}
    for item in plan:
        name = item["name"]
        log = os.path.abspath(os.path.join("logs", f"{name}.log"))
        failed = wait_for(item.get("after", []))
        t0 = time.perf_counter()
        if failed is None:
            rc = run_one(item["argv"], log)
        else:
            rc = SKIPPED
            with open(log, "w", encoding="utf-8") as f:
                f.write(f"skipped: {failed} failed\n")
        results[name] = {"rc": rc, "seconds": round(time.perf_counter() - t0, 2), "log": log}
        print(f"[presets] {name}: rc {rc} in {results[name]['seconds']:.1f}s", flush=True)
        with open(os.path.join("done", f"{name}.json.tmp"), "w", encoding="utf-8") as f:
            json.dump({"rc": rc}, f)
        os.replace(os.path.join("done", f"{name}.json.tmp"), os.path.join("done", f"{name}.json"))
        with open(results_path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
