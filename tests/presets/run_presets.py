"""Runs a list of user commands ``python scripts/<script>.py ARGS...`` one after the other in ONE process.

    python tests/presets/run_presets.py PLAN.json RESULTS.json

``PLAN.json``: ``[{"name": ..., "argv": ["scripts/train_reward.py", "configs/....yaml", "key=value", ...]},
...]``, run from the current directory. Each command is executed as the user's ``python <script> ...``
would run it -- ``runpy.run_path(script, run_name="__main__")`` with ``sys.argv`` set -- so the same code
path runs, but the interpreter, jax, transformers and the compiled programs of earlier commands are
shared (a fresh interpreter per command costs ~10 s of imports on 2 cores). Each command's stdout and
stderr (file descriptors 1 / 2: the output of a script's subprocesses too) go to ``logs/<name>.log``;
``RESULTS.json`` (rewritten after every command, so that a crash leaves what ran) maps name -> ``{"rc", "seconds", "log"}``: rc is the script's exit status (``SystemExit``), 1 for
an uncaught exception (its traceback in the log).
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


def main(plan_path: str, results_path: str) -> None:
    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    os.makedirs("logs", exist_ok=True)
    results = {}
    for item in plan:
        log = os.path.abspath(os.path.join("logs", f"{item['name']}.log"))
        t0 = time.perf_counter()
        rc = run_one(item["argv"], log)
        results[item["name"]] = {"rc": rc, "seconds": round(time.perf_counter() - t0, 2), "log": log}
        print(f"[presets] {item['name']}: rc {rc} in {results[item['name']]['seconds']:.1f}s", flush=True)
        with open(results_path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
