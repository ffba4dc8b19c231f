"""The built wheel, installed into a fresh virtual environment, trains a shipped preset by name from a
directory outside the repository through the ``grpojax`` console command.

The wheel is built from a copy of the sources (``pip wheel --no-deps --no-build-isolation``: no network,
the repository's tree is left untouched) and installed with ``pip --python`` into a venv made without pip.
That venv reuses the test environment's installed dependencies through a ``.pth`` file listing its
site-packages directories: a plain path entry, so the ``.pth`` files inside them (an editable grpojax's
import hook) are not run, and the venv's own site-packages (the wheel) comes first on ``sys.path``.
The test checks that ``grpojax`` is imported from the wheel, not from the repository.
"""

import glob
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(venv python, venv bin dir)`` with the wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    shutil.copytree(os.path.join(ROOT, "grpojax"), src / "grpojax",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp / "dist")], cwd=tmp)
    (wheel,) = glob.glob(str(tmp / "dist" / "grpojax-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("grpojax/presets/tiny_sft.yaml", "grpojax/presets/demo/grpo.yaml",
                    "grpojax/presets/data/tiny_tokenizer/tokenizer.json", "grpojax/presets/data/tiny_sft.jsonl"):
        assert shipped in names, shipped
    assert any(n.endswith("entry_points.txt") for n in names)
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = str(venv / "bin" / "python")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel])
    purelib = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    deps = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
    with open(os.path.join(purelib, "test_env_deps.pth"), "w") as f:
        f.write("\n".join(deps) + "\n")
    return py, str(venv / "bin")


def test_installed_wheel_trains_a_preset_by_name_outside_the_repository(installed, tmp_path):
    py, bin_dir = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", JAX_PLATFORMS="cpu")
    where = _run([py, "-c", "import grpojax; print(grpojax.__file__)"], cwd=tmp_path, env=env).stdout.strip()
    assert where.startswith(os.path.dirname(bin_dir)) and not where.startswith(ROOT), where
    r = _run([os.path.join(bin_dir, "grpojax"), "sft", "tiny_sft", "train.steps=2", "run_dir=run", "mesh.data=1",
              "train.save_every=2"], cwd=tmp_path, env=env)
    assert "done: steps 0 -> 2" in r.stdout
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [row["step"] for row in rows] == [1, 2] and all(row["loss"] > 0 for row in rows)
    r = subprocess.run([os.path.join(bin_dir, "grpojax"), "train-grpo", "tiny_sft"], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "needs kind='grpo'" in r.stderr
