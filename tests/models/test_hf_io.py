"""HF import/export: round trips through transformers, sharded checkpoints, transformers-4 config layout,
and clear errors for bad checkpoints."""

import json
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from hf_tiny import VOCAB, forward, torch_logits
from safetensors.numpy import load_file, save_file
from transformers import AutoModelForCausalLM

from grpojax.models import from_hf, to_hf

TOKS = np.random.RandomState(7).randint(0, VOCAB, (2, 5))


def copy_ckpt(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


@pytest.mark.parametrize("name", ["qwen2-gqa2-untied", "qwen3-gqa2-tied"])
def test_round_trip_through_transformers(hf_checkpoint, tmp_path, name):
    ckpt, hf = hf_checkpoint(name)
    model = from_hf(ckpt)
    out = to_hf(model, str(tmp_path / "export"), max_shard_bytes=20_000)  # forces several shards
    assert os.path.isfile(os.path.join(out, "model.safetensors.index.json"))
    reloaded_hf = AutoModelForCausalLM.from_pretrained(out)
    err = np.abs(torch_logits(reloaded_hf, TOKS) - torch_logits(hf, TOKS)).max()
    print(f"\n[round trip] {name}: max |HF(to_hf(from_hf(ckpt))) - HF(ckpt)| = {err:.3e}")
    assert err <= 1e-6
    np.testing.assert_allclose(forward(from_hf(out), TOKS), forward(model, TOKS), atol=1e-6)
    with pytest.raises(FileExistsError, match="not empty"):
        to_hf(model, out)
    to_hf(model, out, overwrite=True)  # allowed when asked


def test_to_hf_refuses_headless_untied_model(tmp_path):
    from flax import nnx

    from grpojax.models import Qwen, QwenConfig
    cfg = QwenConfig(vocab_size=20, hidden_size=8, intermediate_size=8, num_layers=1, num_heads=2,
                     num_kv_heads=1, head_dim=4)
    headless = nnx.eval_shape(lambda: Qwen(cfg, with_lm_head=False))
    with pytest.raises(ValueError, match="no LM head"):
        to_hf(headless, str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_sharded_hf_checkpoint_and_bf16_export(hf_checkpoint, tmp_path):
    ckpt, hf = hf_checkpoint("qwen2-gqa4-untied", max_shard_size="40KB")
    assert os.path.isfile(os.path.join(ckpt, "model.safetensors.index.json"))
    model = from_hf(ckpt)
    assert np.abs(forward(model, TOKS) - torch_logits(hf, TOKS)).max() <= 1e-4
    out = to_hf(from_hf(ckpt, dtype=jnp.bfloat16), str(tmp_path / "bf16"))
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["dtype"] == "bfloat16"
    tensors = load_file(os.path.join(out, "model.safetensors"))
    assert str(tensors["model.embed_tokens.weight"].dtype) == "bfloat16"


def test_transformers4_config_layout(hf_checkpoint, tmp_path):
    ckpt, hf = hf_checkpoint("qwen3-gqa4-untied")
    d = copy_ckpt(ckpt, tmp_path / "v4")
    path = os.path.join(d, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    theta = cfg.pop("rope_parameters")["rope_theta"]
    cfg.update(rope_theta=theta, rope_scaling=None, transformers_version="4.51.0")
    with open(path, "w") as f:
        json.dump(cfg, f)
    assert from_hf(d).config.rope_theta == theta
    assert np.abs(forward(from_hf(d), TOKS) - torch_logits(hf, TOKS)).max() <= 1e-4


def _edit_tensors(d, fn):
    path = os.path.join(d, "model.safetensors")
    tensors = fn(load_file(path))
    save_file(tensors, path, metadata={"format": "pt"})


def test_bad_checkpoints_name_the_tensor(hf_checkpoint, tmp_path):
    ckpt, _ = hf_checkpoint("qwen2-gqa2-untied")
    name = "model.layers.1.self_attn.k_proj.weight"

    d = copy_ckpt(ckpt, tmp_path / "missing")
    _edit_tensors(d, lambda t: {k: v for k, v in t.items() if k != name})
    with pytest.raises(ValueError, match=f"missing tensor '{name}'"):
        from_hf(d)

    d = copy_ckpt(ckpt, tmp_path / "shape")
    _edit_tensors(d, lambda t: {**t, name: np.zeros((3, 32), np.float32)})
    with pytest.raises(ValueError, match=rf"tensor '{name}' in .*model.safetensors has shape \(3, 32\), "
                                         r"expected \(16, 32\)"):
        from_hf(d)

    d = copy_ckpt(ckpt, tmp_path / "extra")
    _edit_tensors(d, lambda t: {**t, "model.layers.0.mlp.experts.0.weight": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="unexpected tensor 'model.layers.0.mlp.experts.0.weight'"):
        from_hf(d)

    d = copy_ckpt(ckpt, tmp_path / "moe")
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dict(cfg, model_type="qwen3_moe"), f)
    with pytest.raises(ValueError, match="config.json: unsupported model_type='qwen3_moe'"):
        from_hf(d)

    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_hf(str(d))
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        from_hf(str(tmp_path / "nope"))


def test_offline_hub_id_fails_fast_with_advice(tmp_path):
    code = ("import time; t=time.time()\n"
            "from grpojax.models import from_hf\n"
            "try:\n    from_hf('Qwen/Qwen2.5-0.5B-Instruct')\n"
            "except FileNotFoundError as e:\n    print('ERR', e); print('SECONDS', time.time()-t)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "ERR 'Qwen/Qwen2.5-0.5B-Instruct' is not in the local Hugging Face cache" in out.stdout, out.stderr
    assert "huggingface-cli download" in out.stdout
    assert float(out.stdout.split("SECONDS")[1]) < 30
