"""grpojax.checkpoint: round trips (typed RNG keys, alpha, bf16), restore onto 8-device shardings, keep-K,
half-written checkpoints never picked up (planted and SIGKILL), SIGTERM -> save + exit 0, config guard."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from grpojax import config as C
from grpojax.checkpoint import Checkpointer, PreemptionGuard, abstract_like
from grpojax.cli import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = C.config_to_dict(C.load_config(os.path.join(ROOT, "configs", "tiny_dpo.yaml")))


def make_state(step: int):
    """A train-state-like pytree (built with numpy: no XLA compilation in these tests)."""
    rng = np.random.default_rng(step)
    return {
        "params": {"w_DF": jnp.asarray(rng.standard_normal((16, 8), dtype=np.float32)),
                   "b_F": jnp.asarray(np.arange(8) * step, dtype=jnp.bfloat16)},
        "opt": {"mu": jnp.asarray(np.full((16, 8), 0.5 * step, np.float32)), "count": jnp.int32(step)},
        "rng": jax.random.key(step),
        "alpha_M": jnp.asarray(np.array([0.25, 0.75], np.float32) * step),
        "step": jnp.int32(step),
    }


def assert_state_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.dtypes.issubdtype(y.dtype, jax.dtypes.prng_key)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x, np.float64), np.asarray(y, np.float64))


def test_round_trip_keep_last_k_and_data_position(tmp_path):
    with Checkpointer(str(tmp_path), save_every=2, keep=2, config=CFG) as ckpt:
        assert ckpt.restore_latest() is None and ckpt.latest_step() is None
        saved = [s for s in range(1, 9)
                 if ckpt.should_save(s) and ckpt.save(s, make_state(s), {"epoch": 0, "index": s})]
        ckpt.wait()
        assert saved == [2, 4, 6, 8] and ckpt.all_steps() == [6, 8]
    ckpt = Checkpointer(str(tmp_path), save_every=2, keep=2, config=CFG)
    r = ckpt.restore_latest(abstract_like(make_state(0)))
    assert r.step == 8 and r.data_position == {"epoch": 0, "index": 8} and r.config == CFG
    assert_state_equal(r.state, make_state(8))
    assert_state_equal(ckpt.restore(6, abstract_like(make_state(0))).state, make_state(6))
    ckpt.close()


def test_restore_onto_a_sharded_target(tmp_path):
    with Checkpointer(str(tmp_path), save_every=1, keep=1) as ckpt:
        ckpt.save(3, make_state(3))
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "fsdp"))
    shard = {"params": {"w_DF": NamedSharding(mesh, P("data", "fsdp")), "b_F": NamedSharding(mesh, P("fsdp"))},
             "opt": {"mu": NamedSharding(mesh, P(None, "data")), "count": NamedSharding(mesh, P())},
             "rng": NamedSharding(mesh, P()), "alpha_M": NamedSharding(mesh, P()), "step": NamedSharding(mesh, P())}
    target = abstract_like(make_state(0), shard)
    with Checkpointer(str(tmp_path), save_every=1, keep=1) as ckpt:
        r = ckpt.restore_latest(target)
    assert jax.device_count() == 8
    for leaf, sh in zip(jax.tree.leaves(r.state), jax.tree.leaves(shard)):
        assert leaf.sharding.is_equivalent_to(sh, leaf.ndim)
    assert len(r.state["params"]["w_DF"].addressable_shards) == 8
    assert r.state["params"]["w_DF"].addressable_shards[0].data.shape == (4, 4)
    assert_state_equal(r.state, make_state(3))


def test_planted_half_written_checkpoint_is_ignored(tmp_path):
    with Checkpointer(str(tmp_path), save_every=1, keep=5) as ckpt:
        ckpt.save(1, make_state(1))
        ckpt.save(2, make_state(2))
    tmp = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-1700000000000000"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "partial").write_bytes(b"\0" * 1000)
    with Checkpointer(str(tmp_path), save_every=1, keep=5) as ckpt:
        assert ckpt.all_steps() == [1, 2] and ckpt.latest_step() == 2
        r = ckpt.restore_latest(abstract_like(make_state(0)))
        assert r.step == 2
        assert_state_equal(r.state, make_state(2))
    assert tmp.exists()  # nothing deleted behind the user's back


CHILD = """
import os, sys, time, signal
import jax, jax.numpy as jnp
from grpojax.checkpoint import Checkpointer, PreemptionGuard
run_dir, mode = sys.argv[1], sys.argv[2]
ckpt = Checkpointer(run_dir, save_every=1000, keep=5)
if mode == "kill":
    ckpt.save(1, {"w": jnp.ones((4,)), "step": jnp.int32(1)})
    ckpt.wait()
    big = {"w": jnp.ones((32 * 1024 * 1024,)), "step": jnp.int32(2)}   # 128 MiB: slow enough to be caught
    print("saving", flush=True)
    ckpt.save(2, big)
    ckpt.wait()
    print("finished", flush=True)
else:  # preemption: a loop that checkpoints when SIGTERM arrives
    with PreemptionGuard() as guard:
        for step in range(1, 100000):
            time.sleep(0.02)
            print(f"step {step}", flush=True)
            if guard.should_stop():
                ckpt.save(step, {"w": jnp.full((4,), float(step)), "step": jnp.int32(step)})
                ckpt.close()
                print(f"preempted by {guard.signal_name} at step {step}", flush=True)
                sys.exit(0)
    sys.exit(5)
"""


def spawn(tmp_path, mode):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "run"), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_sigkill_mid_save_never_becomes_latest(tmp_path):
    proc = spawn(tmp_path, "kill")
    assert proc.stdout.readline() == "saving\n"
    ckdir = tmp_path / "run" / "checkpoints"
    deadline, seen = time.time() + 60, None
    while time.time() < deadline and seen is None:
        seen = next((p.name for p in ckdir.iterdir() if p.name.startswith("2.") and "tmp" in p.name), None)
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert seen is not None, "never observed the in-progress temporary directory"
    assert not (ckdir / "2").exists(), "the save finished before the kill; the test proved nothing"
    with Checkpointer(str(tmp_path / "run"), save_every=1, keep=5) as ckpt:
        assert ckpt.all_steps() == [1]
        r = ckpt.restore_latest({"w": jax.ShapeDtypeStruct((4,), jnp.float32),
                                 "step": jax.ShapeDtypeStruct((), jnp.int32)})
        assert r.step == 1 and int(r.state["step"]) == 1


def test_sigterm_saves_and_exits_zero(tmp_path):
    proc = spawn(tmp_path, "preempt")
    while True:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        if line == "step 3\n":
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("preempted by SIGTERM at step ")
    step = int(last.split()[-1])
    with Checkpointer(str(tmp_path / "run"), save_every=1, keep=5) as ckpt:
        r = ckpt.restore_latest({"w": jax.ShapeDtypeStruct((4,), jnp.float32),
                                 "step": jax.ShapeDtypeStruct((), jnp.int32)})
    assert r.step == step >= 3 and float(r.state["w"][0]) == step


def test_guard_in_process_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        assert not guard.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert guard.requested and guard.should_stop() and guard.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # a SIGINT after the request: the user insists
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is before


def test_config_mismatch_and_no_overwrite(tmp_path):
    with Checkpointer(str(tmp_path), save_every=1, keep=3, config=CFG) as ckpt:
        ckpt.save(5, make_state(5), {"index": 5})
    resumable = C.config_to_dict(C.load_config(os.path.join(ROOT, "configs", "tiny_dpo.yaml"),
                                               ["train.steps=100", "run_dir=elsewhere", "mesh.fsdp=2", "mesh.data=-1"]))
    Checkpointer(str(tmp_path), save_every=1, keep=3, config=resumable).close()  # allowed changes
    other = C.config_to_dict(C.load_config(os.path.join(ROOT, "configs", "tiny_dpo.yaml"),
                                           ["train.learning_rate=0.5", "preference.beta=0.2"]))
    with pytest.raises(UserError) as e:
        Checkpointer(str(tmp_path), save_every=1, keep=3, config=other)
    msg = str(e.value)
    assert "holds checkpoints of a different run" in msg
    assert "preference.beta: 0.1 -> 0.2" in msg and "train.learning_rate: 0.001 -> 0.5" in msg
    with Checkpointer(str(tmp_path), save_every=1, keep=3, config=CFG) as ckpt:
        files = sorted(p.stat().st_mtime_ns for p in (tmp_path / "checkpoints" / "5").rglob("*") if p.is_file())
        assert ckpt.save(5, make_state(99)) is False  # an existing step is never overwritten
        ckpt.wait()
        assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "checkpoints" / "5").rglob("*") if p.is_file()) == files
        with pytest.raises(UserError, match="refusing to save step 4 below the latest checkpoint 5"):
            ckpt.save(4, make_state(4))
        wrong = abstract_like({"params": {"w_DF": jnp.zeros((3, 3))}})
        with pytest.raises(UserError, match="checkpoint step 5 in .* does not match this run's train state"):
            ckpt.restore_latest(wrong)
        assert_state_equal(ckpt.restore_latest(abstract_like(make_state(0))).state, make_state(5))
    (tmp_path / "bad_run").mkdir()
    (tmp_path / "bad_run" / "checkpoints").write_text("not a directory")
    with pytest.raises(UserError, match="bad_run/checkpoints exists and is not a directory"):
        Checkpointer(str(tmp_path / "bad_run"), save_every=1, keep=1)


def _toy_run(run_dir, steps, stop_at=None):
    """A model-free training loop wired like the real one: DataLoader -> step -> metrics -> checkpoint."""
    import datasets

    from grpojax.data import DataLoader
    from grpojax.metrics import MetricsWriter

    ds = datasets.Dataset.from_dict({"x": np.arange(10, dtype=np.float32).tolist()})
    loader = DataLoader(ds, lambda rows: {"x_B": np.asarray(rows["x"], np.float32)}, batch_size=3, seed=11)
    state = {"w": jnp.zeros((3,), jnp.float32), "key": jax.random.key(0), "step": jnp.int32(0)}
    with Checkpointer(run_dir, save_every=2, keep=2, config=CFG) as ckpt:
        restored = ckpt.restore_latest(abstract_like(state))
        start = 0
        if restored is not None:
            state, start = restored.state, restored.step
            loader.restore(restored.data_position)
        with MetricsWriter(run_dir, total_steps=steps, resume_step=start, tensorboard=False,
                           stream=open(os.devnull, "w")) as log:
            for step in range(start + 1, steps + 1):
                x = next(loader)["x_B"]
                key, sub = jax.random.split(state["key"])
                noise = np.asarray(jax.random.key_data(sub), np.float32)[0] % 7
                w = state["w"] * 0.5 + jnp.asarray(x) + noise
                state = {"w": w, "key": key, "step": jnp.int32(step)}
                log.write(step, {"loss": float(w.sum())})
                if ckpt.should_save(step) or step == steps:
                    ckpt.save(step, state, loader.state())
                if stop_at == step:
                    return state
    return state


def test_stop_and_resume_is_bit_identical_to_uninterrupted(tmp_path):
    """Checkpointer + DataLoader position + MetricsWriter compose into an exact resume (3 + 3 = 6 steps;
    the interrupted run dies after step 3 while its last checkpoint is step 2)."""
    full = _toy_run(str(tmp_path / "full"), 6)
    _toy_run(str(tmp_path / "split"), 6, stop_at=3)
    resumed = _toy_run(str(tmp_path / "split"), 6)
    assert_state_equal(resumed, full)
    a = open(tmp_path / "full" / "metrics.jsonl").read()
    assert open(tmp_path / "split" / "metrics.jsonl").read() == a and a.count("\n") == 6
    assert open(tmp_path / "split" / "metrics.jsonl.discarded").read().count('"step": 3') == 1
