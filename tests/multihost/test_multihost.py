"""Two real ``jax.distributed`` processes with 4 fake CPU devices each (one mesh of 8 across them), started
as the real scripts (``launch.py``), against the one-process run on 8 devices (this test process).

* SFT, GR-IPO (``scripts/train_dpo.py``) and GRPO: the losses and every other metric of each step, and the
  parameters of the final checkpoint, equal the one-process run's (float32 tolerance); only process 0
  writes ``config.yaml``, ``metrics.jsonl``, TensorBoard and the HF export (process 1 opens nothing for
  writing outside ``checkpoints/``); each process read only its half of every supervised batch (rows
  ``[0, 4)`` / ``[4, 8)`` of the one-process order); the checkpoint the two processes wrote restores here
  in one process, and a one-process checkpoint resumes in two.
* Faults: SIGTERM to one process -> both save the same step and exit 0; a process killed (SIGKILL) -> the
  other stops within the heartbeat timeout with JAX's message instead of hanging, and a restart resumes
  from the last complete checkpoint.

CI runs the SFT cases and the two faults; ``make test-multihost`` (``GRPOJAX_MULTIHOST_FULL=1``) adds
GR-IPO, GRPO and killing the coordinator (process 0).
"""

import io
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pytest runs with --import-mode=importlib

from launch import ROOT, finish, launch, rows_of, send, wait_for_step

from grpojax.checkpoint import Checkpointer, abstract_like
from grpojax.config import load_config
from grpojax.train.runner import run
from grpojax.train.tasks.grpo import GRPOTask
from grpojax.train.tasks.preference import PreferenceTask
from grpojax.train.tasks.sft import SFTTask

full = pytest.mark.skipif(os.environ.get("GRPOJAX_MULTIHOST_FULL") != "1",
                          reason="full multi-host set: make test-multihost")
KINDS = {  # script, task, overrides of configs/tiny_<kind>.yaml
    "sft": ("scripts/sft.py", SFTTask, []),
    "dpo": ("scripts/train_dpo.py", PreferenceTask, []),  # gr_ipo over two groups
    "grpo": ("scripts/train_grpo.py", GRPOTask, ["grpo.beta=0.04", "train.batch_size=8",
                                                  "grpo.max_completion_length=6"]),
}
# adam_eps 1e-4: Adam's first steps are lr * sign(g); a larger eps keeps the update continuous in g, so
# reduction-order differences between layouts stay at float32 rounding (as tests/train/test_sharded_runner.py)
COMMON = ["train.save_every=1", "train.keep_checkpoints=5", "train.adam_eps=1e-4", "model.shape.num_layers=1",
          "train.log_every=100", "mesh.data=-1"]
TOL = {"rtol": 1e-4, "atol": 1e-5}
HEARTBEAT = 3  # mesh.heartbeat_timeout_seconds of the fault tests


def _cfg(kind, run_dir, steps, extra=()):
    return load_config(os.path.join(ROOT, f"configs/tiny_{kind}.yaml"),
                       [f"run_dir={run_dir}", f"train.steps={steps}", *COMMON, *KINDS[kind][2], *extra])


def _args(kind, run_dir, steps, extra=()):
    return KINDS[kind][0], f"configs/tiny_{kind}.yaml", [f"run_dir={run_dir}", f"train.steps={steps}", *COMMON,
                                                         *KINDS[kind][2], *extra]


def _params(run_dir, step, target):
    """The parameters of ``step``, restored in this one process onto ``target`` (the one-process run's
    abstract train state, as the runner restores)."""
    with Checkpointer(run_dir, save_every=1, keep=10) as ck:
        state = ck.restore(step, target).state
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def _same_rows(rows, ref):
    assert [r["step"] for r in rows] == [r["step"] for r in ref]
    for r, q in zip(rows, ref):
        assert set(r) == set(q), set(r) ^ set(q)
        for k in q:
            np.testing.assert_allclose(r[k], q[k], **TOL, err_msg=f"step {q['step']} {k}")


def _same_params(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, **TOL)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, 8 devices, 3 steps per kind (checkpoints 1-3), run in this process on first use."""
    cache = {}

    def get(kind):
        if kind not in cache:
            d = str(tmp_path_factory.mktemp(f"one_{kind}"))
            cfg = _cfg(kind, d, 3)
            task = KINDS[kind][1](cfg)
            assert task.mesh.size == 8 and jax.process_count() == 1
            run(cfg, task, stream=io.StringIO())
            fresh = KINDS[kind][1](cfg)
            target = abstract_like(fresh.init_state())
            loader = fresh.loader  # the one-process batch order
            batches = [[int(i) for i in (next(loader), loader.last_indices)[1]] for _ in range(2)]
            cache[kind] = (d, rows_of(os.path.join(d, "metrics.jsonl")), batches, target)
        return cache[kind]

    return get


def _two_process_run(kind, reference, tmp_path):
    ref_dir, ref_rows, ref_batches, target = reference(kind)
    d, export = str(tmp_path / "two"), str(tmp_path / "export")
    res = finish(launch(*_args(kind, d, 2, [f"export_hf={export}"]), tmp_path))
    for i, r in enumerate(res):
        assert r.returncode == 0, f"process {i}: {r.stderr[-3000:]}"
        assert r.record["process"] == [i, 2]
    _same_rows(rows_of(os.path.join(d, "metrics.jsonl")), ref_rows[:2])
    # a 2-process checkpoint restored in 1 process
    diff = _same_params(_params(d, 2, target), _params(ref_dir, 2, target))
    print(f"{kind}: 2 processes x 4 devices vs 1 x 8: max |param diff| {diff:.3g} "
          f"({res[0].seconds:.0f} s, {res[1].seconds:.0f} s)")
    # process 0 writes the run's files; process 1 opens nothing for writing outside checkpoints/
    w0, w1 = (set(r.record["writes"]) for r in res)
    assert {os.path.join(d, "config.yaml.tmp"), os.path.join(d, "metrics.jsonl")} <= w0  # config: tmp, renamed
    assert any(w.startswith(os.path.join(d, "tb") + os.sep) for w in w0)
    assert any(w.startswith(export + os.sep) for w in w0) and os.path.exists(os.path.join(export, "config.json"))
    outside = [w for w in w1 if w.startswith(str(tmp_path)) and not w.startswith(os.path.join(d, "checkpoints"))
               and not w.endswith(".p1.json")]
    assert outside == [], outside
    assert len(os.listdir(os.path.join(d, "tb"))) == 1
    shown = "over 8 devices (2 processes)"  # the runner's start-up lines: process 0 prints them
    assert shown in res[0].stdout and shown not in res[1].stdout and "kind: " not in res[1].stdout
    if kind != "grpo":  # supervised batches: each process read its own half of every global batch
        r0, r1 = res[0].record["rows"], res[1].record["rows"]
        assert [a + b for a, b in zip(r0, r1)] == ref_batches and all(len(a) == 4 for a in r0 + r1)
    else:  # every process reads a rollout's prompts whole (the reward functions score every completion)
        assert res[0].record["rows"] == res[1].record["rows"] == []


def test_sft_two_processes_match_one_process(reference, tmp_path):
    _two_process_run("sft", reference, tmp_path)


@full
@pytest.mark.parametrize("kind", ["dpo", "grpo"])
def test_two_processes_match_one_process(kind, reference, tmp_path):
    _two_process_run(kind, reference, tmp_path)


@pytest.mark.parametrize("kind", ["sft", pytest.param("dpo", marks=full), pytest.param("grpo", marks=full)])
def test_one_process_checkpoint_resumes_in_two(kind, reference, tmp_path):
    """The one-process run's checkpoint of step 2 continued by two processes: step 3 as the one process."""
    ref_dir, ref_rows, _, target = reference(kind)
    d = str(tmp_path / "resumed")
    shutil.copytree(ref_dir, d)
    shutil.rmtree(os.path.join(d, "checkpoints", "3"))
    res = finish(launch(*_args(kind, d, 3), tmp_path))
    assert all(r.returncode == 0 for r in res), res[0].stderr[-3000:] + res[1].stderr[-3000:]
    assert f"resumed from {d}/checkpoints/2" in res[0].stdout
    _same_rows(rows_of(os.path.join(d, "metrics.jsonl")), ref_rows)
    diff = _same_params(_params(d, 3, target), _params(ref_dir, 3, target))
    print(f"{kind}: 1 -> 2 processes: max |param diff| {diff:.3g}")


def test_sigterm_to_one_process_stops_both_at_the_same_step(reference, tmp_path):
    d = str(tmp_path / "run")
    procs = launch(*_args("sft", d, 100000, ["train.save_every=100000"]), tmp_path)
    wait_for_step(d, 2, procs)
    send(procs[1], signal.SIGTERM)
    res = finish(procs, timeout=300)
    assert [r.returncode for r in res] == [0, 0], res[0].stderr[-3000:] + res[1].stderr[-3000:]
    last = rows_of(os.path.join(d, "metrics.jsonl"))[-1]["step"]
    assert f"signal on another process: saved step {last}; exiting" in res[0].stdout
    with Checkpointer(d, save_every=1, keep=10) as ck:
        assert ck.all_steps() == [last]
        assert int(ck.restore(last, reference("sft")[3]).state.step) == last
    print(f"SIGTERM to process 1: both saved step {last} and exited 0 ({res[0].seconds:.0f} s)")


@full
def test_sigterm_during_start_up_ends_the_process(tmp_path):
    """Before the training loop (its PreemptionGuard) SIGTERM ends the process, as on one process; JAX's
    preemption notifier, which takes SIGTERM over in ``jax.distributed.initialize``, would ignore it."""
    d = str(tmp_path / "run")
    procs = launch(*_args("sft", d, 2, [f"mesh.heartbeat_timeout_seconds={HEARTBEAT}"]), tmp_path,
                   env_extra={"GRPOJAX_HOLD_BEFORE_RUN": "30"})
    deadline = time.monotonic() + 600
    while not os.path.exists(procs[1].record + ".ready"):
        assert time.monotonic() < deadline and procs[1].popen.poll() is None, "process 1 never got ready"
        time.sleep(0.2)
    sent = send(procs[1], signal.SIGTERM)
    try:
        procs[1].popen.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("process 1 ignored SIGTERM during start-up") from None
    ended = time.monotonic() - sent
    res = finish(procs, timeout=120)
    assert res[1].returncode == -signal.SIGTERM and res[0].returncode != 0, [r.returncode for r in res]
    assert not os.path.exists(os.path.join(d, "metrics.jsonl"))
    print(f"SIGTERM to process 1 during start-up: it ended after {ended:.1f} s, process 0 exited "
          f"{res[0].returncode}")


@pytest.mark.parametrize("victim", [1, pytest.param(0, marks=full)])
def test_a_dead_process_stops_the_other_and_a_restart_resumes(tmp_path, victim):
    d = str(tmp_path / "run")
    extra = ["train.save_every=2", f"mesh.heartbeat_timeout_seconds={HEARTBEAT}"]
    procs = launch(*_args("sft", d, 100000, extra), tmp_path, tag="first")
    wait_for_step(d, 5, procs)
    killed = send(procs[victim], signal.SIGKILL)
    other = procs[1 - victim]
    try:
        other.popen.wait(timeout=120)
    except subprocess.TimeoutExpired:
        other.popen.kill()
        raise AssertionError(f"process {1 - victim} still running 120 s after process {victim} was killed") from None
    stopped = time.monotonic() - killed
    res = finish(procs)
    assert res[1 - victim].returncode != 0
    assert "stopped sending heartbeats" in res[1 - victim].stderr or "another task died" in res[1 - victim].stderr
    with Checkpointer(d, save_every=1, keep=10) as ck:
        complete = ck.latest_step()
    assert complete is not None and complete >= 2
    print(f"SIGKILL to process {victim}: process {1 - victim} stopped after {stopped:.1f} s "
          f"(heartbeat timeout {HEARTBEAT} s; exit {res[1 - victim].returncode}); last complete checkpoint {complete}")
    again = finish(launch(*_args("sft", d, complete + 2, extra), tmp_path, tag="again"))
    assert [r.returncode for r in again] == [0, 0], again[0].stderr[-3000:] + again[1].stderr[-3000:]
    assert f"resumed from {d}/checkpoints/{complete}" in again[0].stdout
    steps = [r["step"] for r in rows_of(os.path.join(d, "metrics.jsonl"))]
    assert steps == list(range(1, complete + 3))
