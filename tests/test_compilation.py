"""The persistent compilation cache: ``grpojax.compilation.use_compilation_cache`` and the run config's
``compilation_cache_dir`` (a second process loads the compiled step instead of compiling it)."""

import json
import os
import subprocess
import sys

import jax
import pytest

from grpojax.compilation import use_compilation_cache
from grpojax.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny SFT run in a fresh process that reports JAX's cache events; the config key alone selects the cache.
CHILD = r"""
import json, sys
from jax import monitoring
events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
from grpojax.config import load_config
from grpojax.train.runner import run
from grpojax.train.tasks import SFTTask
cfg = load_config("configs/tiny_sft.yaml", sys.argv[1:])
run(cfg, SFTTask(cfg))
print(json.dumps({e: events.count(e) for e in set(events) if "compilation_cache" in e}))
"""


@pytest.fixture
def restore_cache_dir():
    before = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", before)
    from jax._src import compilation_cache

    compilation_cache.reset_cache()


def _sft(run_dir, cache):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    r = subprocess.run([sys.executable, "-c", CHILD, "train.steps=2", f"run_dir={run_dir}",
                        f"compilation_cache_dir={cache}"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_compiled_step(tmp_path):
    cache = tmp_path / "xla"
    first = _sft(tmp_path / "a", cache)
    assert first.get("/jax/compilation_cache/cache_misses", 0) > 0 and "/jax/compilation_cache/cache_hits" not in first
    assert any(name.startswith("jit_") for name in os.listdir(cache))
    again = _sft(tmp_path / "b", cache)  # another run dir, the same programs
    assert again.get("/jax/compilation_cache/cache_hits", 0) >= first["/jax/compilation_cache/cache_misses"]
    assert "/jax/compilation_cache/cache_misses" not in again


def test_use_compilation_cache_switches_directories_within_a_process(tmp_path, restore_cache_dir):
    for i, name in enumerate(("one", "two")):
        path = use_compilation_cache(str(tmp_path / name), min_compile_seconds=0)
        assert path == str(tmp_path / name) and jax.config.jax_compilation_cache_dir == path
        jax.jit(lambda x, i=i: x * (17.0 + i) + 3.0).lower(jax.numpy.ones(7)).compile()
        assert any(f.startswith("jit_") for f in os.listdir(path)), name  # written where asked, each time
    assert use_compilation_cache(None) == str(tmp_path / "two")  # None leaves the setting alone


def test_the_cache_directory_may_change_on_resume(tmp_path):
    from grpojax.checkpoint import RESUMABLE_KEYS

    cfg = load_config(os.path.join(ROOT, "configs", "tiny_sft.yaml"), [f"compilation_cache_dir={tmp_path}"])
    assert cfg.compilation_cache_dir == str(tmp_path) and "compilation_cache_dir" in RESUMABLE_KEYS
