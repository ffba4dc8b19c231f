"""The ``mesh`` keys of a multi-host run, without starting a second process: bad values are refused in one
line naming the key (exit 2 from the scripts), given values reach ``jax.distributed.initialize``, CPU
collectives are switched to gloo, and a mesh whose batch axes the processes cannot share is refused."""

import os
import subprocess
import sys

import jax
import pytest

from grpojax import sharding as shd
from grpojax.cli import UserError
from grpojax.config import load_config
from grpojax.config.sections import MeshConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(overrides, kind="sft"):
    return load_config(os.path.join(ROOT, f"configs/tiny_{kind}.yaml"), ["run_dir=/nonexistent/never", *overrides])


@pytest.mark.parametrize("override,needle", [
    ("mesh.coordinator_address=10.0.0.1", "mesh.coordinator_address: must be host:port"),
    ("mesh.coordinator_address=:8476", "mesh.coordinator_address: must be host:port"),
    ("mesh.coordinator_address=host:99999", "mesh.coordinator_address: must be host:port"),
    ("mesh.num_processes=0", "mesh.num_processes: must be > 0"),
    ("mesh.process_id=-1", "mesh.process_id: must be >= 0"),
    ("mesh.heartbeat_timeout_seconds=0", "mesh.heartbeat_timeout_seconds: must be > 0"),
])
def test_bad_values_are_refused(override, needle):
    with pytest.raises(UserError, match=needle):
        _load([override, "mesh.distributed=true"])


def test_process_id_must_be_below_the_count():
    with pytest.raises(UserError, match="mesh.process_id: must be < num_processes=2, got 2"):
        _load(["mesh.num_processes=2", "mesh.process_id=2"])


def test_heartbeat_of_a_single_process_run_is_refused():
    with pytest.raises(UserError, match="mesh.heartbeat_timeout_seconds"):
        _load(["mesh.heartbeat_timeout_seconds=5"])
    assert _load(["mesh.heartbeat_timeout_seconds=5", "mesh.distributed=true"]).mesh.heartbeat_timeout_seconds == 5


def test_script_exits_2_on_a_bad_process_id(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/sft.py", "configs/tiny_sft.yaml", f"run_dir={tmp_path}/r",
                           "mesh.num_processes=2", "mesh.process_id=5"], check=False, cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "mesh.process_id" in lines[0], lines


def test_given_values_reach_jax_distributed_initialize(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert shd.maybe_initialize_distributed(MeshConfig()) is False and calls == []
    cfg = MeshConfig(coordinator_address="127.0.0.1:8476", num_processes=2, process_id=1, heartbeat_timeout_seconds=7)
    assert cfg.multihost and shd.maybe_initialize_distributed(cfg) is True
    assert calls == [{"coordinator_address": "127.0.0.1:8476", "num_processes": 2, "process_id": 1,
                      "heartbeat_timeout_seconds": 7}]
    shd.maybe_initialize_distributed(MeshConfig(distributed=True))  # TPU pod / SLURM: JAX detects the rest
    assert calls[-1] == {"heartbeat_timeout_seconds": 100}


def test_cpu_collectives_are_switched_to_gloo():
    name = "jax_cpu_collectives_implementation"
    before = getattr(jax.config, name)
    try:
        jax.config.update(name, None)  # JAX releases before 0.5: no cross-process CPU collectives by default
        assert shd.use_gloo_on_cpu() == "gloo" and getattr(jax.config, name) == "gloo"
        jax.config.update(name, "mpi")  # a backend the user chose is kept
        assert shd.use_gloo_on_cpu() == "mpi"
    finally:
        jax.config.update(name, before)


def test_batch_axes_must_be_shared_by_the_processes(monkeypatch):
    from grpojax.train.placement import start_mesh

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert start_mesh(MeshConfig(data=2, fsdp=1, tensor=4)).size == 8
    with pytest.raises(UserError, match=r"the batch axes data\*fsdp=1 must be a multiple of the 2 processes"):
        start_mesh(MeshConfig(data=1, fsdp=1, tensor=8))
