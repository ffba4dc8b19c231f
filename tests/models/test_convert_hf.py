"""scripts/convert_hf.py: HF -> Orbax -> HF keeps the logits; bad input exits 2 with one line."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
from hf_tiny import VOCAB, torch_logits
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "convert_hf.py")
_spec = importlib.util.spec_from_file_location("convert_hf_script", SCRIPT)
convert_hf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert_hf)


def test_hf_to_orbax_and_back(hf_checkpoint, tmp_path, capsys):
    ckpt, hf = hf_checkpoint("qwen3-gqa2-tied")
    assert convert_hf.main([ckpt, str(tmp_path / "orbax")]) == 0
    assert os.path.isfile(tmp_path / "orbax" / "qwen_config.json")
    assert convert_hf.main(["--to-hf", str(tmp_path / "orbax"), str(tmp_path / "hf")]) == 0
    toks = np.random.RandomState(0).randint(0, VOCAB, (2, 6))
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert np.abs(torch_logits(back, toks) - torch_logits(hf, toks)).max() == 0.0

    # refusing to overwrite, missing input, not an Orbax dir: status 2 with a one-line message
    capsys.readouterr()
    for args, msg in [((ckpt, tmp_path / "orbax"), "not empty"),
                      ((tmp_path / "missing", tmp_path / "x"), "not a checkpoint directory"),
                      (("--to-hf", ckpt, tmp_path / "y"), "qwen_config.json: missing")]:
        assert convert_hf.main([str(a) for a in args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("convert_hf: error:") and msg in err[0], err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_script_exit_status_from_the_shell(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "missing"), str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("convert_hf: error:")
