"""scripts/convert_hf.py: HF -> Orbax -> HF keeps the logits; bad input exits 2 with one line."""

import os
import subprocess
import sys

import numpy as np
from hf_tiny import VOCAB, torch_logits
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "convert_hf.py")


def run(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_hf_to_orbax_and_back(hf_checkpoint, tmp_path):
    ckpt, hf = hf_checkpoint("qwen3-gqa2-tied")
    r = run(ckpt, tmp_path / "orbax")
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(tmp_path / "orbax" / "qwen_config.json")
    r = run("--to-hf", tmp_path / "orbax", tmp_path / "hf")
    assert r.returncode == 0, r.stderr
    toks = np.random.RandomState(0).randint(0, VOCAB, (2, 6))
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert np.abs(torch_logits(back, toks) - torch_logits(hf, toks)).max() == 0.0

    # refusing to overwrite, missing input, not an Orbax dir: exit 2 with a one-line message
    for args, msg in [((ckpt, tmp_path / "orbax"), "not empty"),
                      ((tmp_path / "missing", tmp_path / "x"), "not a checkpoint directory"),
                      (("--to-hf", ckpt, tmp_path / "y"), "qwen_config.json: missing")]:
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("convert_hf: error:") and msg in last, r.stderr
