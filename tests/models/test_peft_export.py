"""LoRA adapters exported in PEFT's format load with ``peft.PeftModel.from_pretrained`` on the base HF model
and give the logits of the merged export (float32)."""

import json
import os

import numpy as np
import pytest
import torch
from hf_tiny import VOCAB
from test_lora import randomize_lora_b_
from transformers import AutoModelForCausalLM

from grpojax.models import apply_lora, from_hf, merge_lora, to_hf
from grpojax.models.peft_io import peft_adapter, write_peft_adapter

peft = pytest.importorskip("peft")


@pytest.mark.parametrize("scan_layers", [False, True])
def test_peft_adapter_matches_the_merged_export(hf_checkpoint, tmp_path, scan_layers):
    base_dir, _ = hf_checkpoint("qwen2-gqa2-untied")
    model = from_hf(base_dir, scan_layers=scan_layers)
    apply_lora(model, ("q_proj", "v_proj", "o_proj", "down_proj"), rank=4, alpha=8.0)
    randomize_lora_b_(model)
    adapter = peft_adapter(model)
    to_hf(merge_lora(model), str(tmp_path / "merged"))
    out = write_peft_adapter(adapter, str(tmp_path / "merged" / "adapter"), base_model=base_dir)
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8.0 and cfg["target_modules"] == ["q_proj", "v_proj", "o_proj",
                                                                                       "down_proj"]
    assert "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight" in adapter.tensors
    assert adapter.tensors["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"].shape == (32, 4)

    toks = torch.tensor(np.random.RandomState(0).randint(0, VOCAB, (2, 7)))
    base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
    with torch.no_grad():
        plain = base(toks).logits.numpy()
    peft_model = peft.PeftModel.from_pretrained(base, out).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), torch_dtype=torch.float32).eval()
    with torch.no_grad():
        got, want = peft_model(toks).logits.numpy(), merged(toks).logits.numpy()
    assert np.abs(want - plain).max() > 1e-2  # the adapters change the model
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_lora_run_exports_its_peft_adapter_next_to_the_merged_weights(tmp_path):
    """An SFT run with LoRA from a HF checkpoint: ``export_hf/adapter`` on ``model.path`` (PEFT) gives the
    logits of the merged ``export_hf``."""
    from grpojax.config import load_config
    from grpojax.train.build import build_model
    from grpojax.train.runner import run
    from grpojax.train.tasks import SFTTask

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    base_dir, out = str(tmp_path / "base"), str(tmp_path / "export")
    preset = load_config(os.path.join(root, "configs/tiny_sft.yaml"), ["run_dir=/tmp/never"])
    to_hf(build_model(preset.model, seed=3), base_dir)  # a tiny base checkpoint with the tiny tokenizer's vocab
    unset = [f"model.shape.{k}=null" for k in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                                               "num_heads", "num_kv_heads", "head_dim", "max_position_embeddings")]
    cfg = load_config(os.path.join(root, "configs/tiny_sft.yaml"), [
        "model.preset=null", f"model.path={base_dir}", *unset, "model.lora.rank=2", "model.lora.alpha=4",
        "model.lora.targets=[q_proj,up_proj]", "train.steps=1", "train.learning_rate=0.05", "mesh.data=1",
        f"run_dir={tmp_path / 'run'}", f"export_hf={out}"])
    run(cfg, SFTTask(cfg))
    adapter_dir = os.path.join(out, "adapter")
    assert json.load(open(os.path.join(adapter_dir, "adapter_config.json")))["base_model_name_or_path"] == base_dir
    toks = torch.tensor(np.random.RandomState(1).randint(0, 384, (2, 9)))
    peft_model = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        np.testing.assert_allclose(peft_model(toks).logits.numpy(), merged(toks).logits.numpy(), rtol=1e-5, atol=1e-5)
        base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
        assert np.abs(base(toks).logits.numpy() - merged(toks).logits.numpy()).max() > 1e-4  # it trained
