"""Runs a training script (``scripts/<name>.py``) in this process exactly as ``python scripts/<name>.py
ARGS`` would, recording for ``tests/multihost`` what this process did (``python entry.py SCRIPT ARGS``).

With ``GRPOJAX_RECORD=<file>`` set, the process writes a JSON object there when it exits:
``rows`` -- the dataset rows each ``DataLoader`` batch of this process held (its own rows of every global
batch), ``writes`` -- every path the process opened for writing from Python (``open`` / ``os.open``, seen
by an audit hook), ``process`` -- ``[jax.process_index(), jax.process_count()]`` when training started.
Nothing of the script is changed: with ``GRPOJAX_HOLD_BEFORE_RUN=<seconds>`` the process writes ``<file>.ready`` once
start-up (``jax.distributed``, the task) is done and pauses that long before training; the loader's
``__next__`` and ``runner.run`` are wrapped, not replaced.
"""

import atexit
import json
import os
import runpy
import sys
import time

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def main() -> None:
    script, record = sys.argv[1], os.environ.get("GRPOJAX_RECORD")
    sys.argv = sys.argv[1:]
    if record:
        seen = {"rows": [], "writes": [], "process": None}

        def audit(event, args):
            if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
                mode, flags = args[1], args[2] if len(args) > 2 else 0
                if (mode and any(c in mode for c in "wax+")) or (mode is None and (flags or 0) & _WRITE_FLAGS):
                    seen["writes"].append(os.path.abspath(os.fsdecode(args[0])))

        from grpojax.data import batching

        loader_next = batching.DataLoader.__next__

        def spy(self):
            out = loader_next(self)
            seen["rows"].append([int(i) for i in self.last_indices])
            return out

        batching.DataLoader.__next__ = spy
        import jax

        from grpojax.train import runner

        run = runner.run

        def run_spy(*args, **kwargs):  # the task (built before run) has started jax.distributed
            seen["process"] = [jax.process_index(), jax.process_count()]
            hold = float(os.environ.get("GRPOJAX_HOLD_BEFORE_RUN", "0"))
            if hold:  # start-up is over but training has not begun: <record>.ready says so, then a pause
                open(record + ".ready", "w").close()
                time.sleep(hold)
            return run(*args, **kwargs)

        runner.run = run_spy

        def dump():
            with open(record, "w") as f:  # after the hook's list is read: this write is not recorded
                json.dump(seen, f)

        atexit.register(dump)
        sys.addaudithook(audit)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
