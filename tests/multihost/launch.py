"""Starting a training script as several ``jax.distributed`` processes on this machine (tests/multihost).

    procs = launch("scripts/sft.py", "configs/tiny_sft.yaml", ["run_dir=/tmp/r"], tmp_path, processes=2)
    results = finish(procs)            # [Result(returncode, stdout, stderr, record, seconds)] per process

Each process gets ``devices`` fake CPU devices (``XLA_FLAGS``) and the overrides ``mesh.coordinator_address``
(a free local port), ``mesh.num_processes`` and ``mesh.process_id``, and runs the real script through
``entry.py`` (which records the rows it read and the files it wrote). ``processes=1`` starts one plain
process with no ``mesh.*`` overrides.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENTRY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "entry.py")


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    record: dict | None
    seconds: float


class Proc(NamedTuple):
    popen: subprocess.Popen
    out: str
    err: str
    record: str
    start: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, config: str, overrides: list[str], workdir, *, processes: int = 2,
           devices: int = 4, tag: str = "run", env_extra: dict | None = None) -> list[Proc]:
    """Starts ``processes`` copies of ``script CONFIG overrides`` (cwd: the repository root)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    # a long collective timeout: on a loaded machine the gloo connections of the first step take a while
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
               "--xla_cpu_collective_timeout_seconds=600",
               PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1", **(env_extra or {}))
    port, procs = free_port(), []
    for i in range(processes):
        mesh = [] if processes == 1 else [f"mesh.coordinator_address=127.0.0.1:{port}",
                                          f"mesh.num_processes={processes}", f"mesh.process_id={i}"]
        base = os.path.join(str(workdir), f"{tag}.p{i}")
        env_i = dict(env, GRPOJAX_RECORD=base + ".json")
        with open(base + ".out", "w") as out, open(base + ".err", "w") as err:
            p = subprocess.Popen([sys.executable, ENTRY, script, config, *overrides, *mesh], cwd=ROOT,
                                 env=env_i, stdout=out, stderr=err)
        procs.append(Proc(p, base + ".out", base + ".err", base + ".json", time.monotonic()))
    return procs


def finish(procs: list[Proc], timeout: float = 600) -> list[Result]:
    """Waits for every process (killing all of them past ``timeout`` seconds) and collects the results."""
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.popen.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.popen.kill()
            for q in procs:
                q.popen.wait()
    return [collect(p) for p in procs]


def collect(p: Proc) -> Result:
    seconds = time.monotonic() - p.start
    with open(p.out) as f, open(p.err) as g:
        out, err = f.read(), g.read()
    record = None
    if os.path.exists(p.record):
        with open(p.record) as f:
            record = json.load(f)
    return Result(p.popen.returncode, out, err, record, seconds)


def wait_for_step(run_dir: str, step: int, procs: list[Proc], timeout: float = 600) -> int:
    """Blocks until ``run_dir/metrics.jsonl`` holds a row with ``step`` >= ``step``; returns the last step.
    Fails (AssertionError with the processes' stderr) if a process exits first or ``timeout`` passes."""
    path, deadline = os.path.join(run_dir, "metrics.jsonl"), time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = last_step(path)
        if last is not None and last >= step:
            return last
        dead = [p for p in procs if p.popen.poll() is not None]
        if dead:
            for p in procs:
                p.popen.kill()
            raise AssertionError(f"a process exited before step {step}: "
                                 + " | ".join(collect(p).stderr[-2000:] for p in dead))
        time.sleep(0.2)
    for p in procs:
        p.popen.kill()
    raise AssertionError(f"no step {step} in {path} after {timeout} s")


def last_step(path: str) -> int | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        steps = [json.loads(line)["step"] for line in f.read().split("\n")[:-1] if line.strip()]
    return steps[-1] if steps else None


def send(p: Proc, sig: int = signal.SIGTERM) -> float:
    """Sends ``sig`` to one process; returns the monotonic time it was sent."""
    p.popen.send_signal(sig)
    return time.monotonic()


def rows_of(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
