"""LoRA adapters in PEFT's format: ``adapter_config.json`` + ``adapter_model.safetensors``, loadable with
``peft.PeftModel.from_pretrained(base_hf_model, dir)`` on the base checkpoint.

Our adapter of a projection is ``A: [in, r]``, ``B: [r, out]`` on the flattened lettered axes of its kernel
(``grpojax.models.lora``), with the update ``(alpha / r) x A B``; ``in`` / ``out`` are flattened in the
order ``grpojax.models.hf_io`` uses for the HF ``nn.Linear`` weight ``[out, in]``. PEFT's ``nn.Linear``
adapters hold ``lora_A.weight = A^T [r, in]`` and ``lora_B.weight = B^T [out, r]`` with the same
``lora_alpha / r`` scaling, under the names
``base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`` (``mlp.gate_proj`` for the MLP).
A ``scan_layers`` model's stacked adapters are split per layer.

Example::

    adapter = peft_adapter(model)          # before merge_lora removes the adapters
    to_hf(merge_lora(model), out_dir)
    write_peft_adapter(adapter, f"{out_dir}/adapter", base_model="Qwen/Qwen2.5-0.5B-Instruct")
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np

from grpojax.models.lora import LORA_TARGETS, projection

ADAPTER_SUBDIR = "adapter"  # the adapter's directory inside a LoRA run's export_hf


class PeftAdapter(NamedTuple):
    """Host copies of a model's adapters in PEFT's layout: ``tensors`` (PEFT key -> float32 array),
    ``rank``, ``alpha`` and the HF ``target_modules``."""

    tensors: dict
    rank: int
    alpha: float
    target_modules: list


def _hf_module(target: str) -> str:
    return f"{'mlp' if target in ('gate', 'up', 'down') else 'self_attn'}.{target}_proj"


def peft_adapter(model) -> PeftAdapter:
    """The adapters of a LoRA'd :class:`grpojax.models.Qwen` (or a reward model's ``backbone``) as PEFT
    tensors. Raises ValueError when the model has none or ranks / scales differ between projections."""
    scanned = model.config.scan_layers
    n_layers = model.config.num_layers
    tensors, ranks, alphas, targets = {}, set(), set(), []
    for t in LORA_TARGETS:
        owners = [projection(model.layers, t)] if scanned else [projection(layer, t) for layer in model.layers]
        if owners[0].lora is None:
            continue
        targets.append(f"{t}_proj")
        for j, dense in enumerate(owners):
            a = np.asarray(dense.lora.lora_a[...], np.float32)
            b = np.asarray(dense.lora.lora_b[...], np.float32)
            a_l, b_l = (a, b) if scanned else (a[None], b[None])  # [L, in, r], [L, r, out]
            for i in range(n_layers if scanned else 1):
                layer = i if scanned else j
                key = f"base_model.model.model.layers.{layer}.{_hf_module(t)}"
                tensors[f"{key}.lora_A.weight"] = np.ascontiguousarray(a_l[i].T)
                tensors[f"{key}.lora_B.weight"] = np.ascontiguousarray(b_l[i].T)
            rank = a.shape[-1]
            ranks.add(rank)
            alphas.add(round(dense.lora_scale * rank, 6))
    if not targets:
        raise ValueError("peft_adapter: the model has no LoRA adapters")
    if len(ranks) != 1 or len(alphas) != 1:
        raise ValueError(f"peft_adapter: one rank and alpha expected, got ranks {ranks}, alphas {alphas}")
    return PeftAdapter(tensors, ranks.pop(), float(alphas.pop()), targets)


def write_peft_adapter(adapter: PeftAdapter, out_dir: str, *, base_model: str | None = None) -> str:
    """Writes ``adapter_config.json`` and ``adapter_model.safetensors`` to ``out_dir`` (created); returns it.
    ``base_model``: the HF directory / hub id the adapter applies to (PEFT's ``base_model_name_or_path``)."""
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model, "revision": None,
        "r": adapter.rank, "lora_alpha": adapter.alpha, "lora_dropout": 0.0, "target_modules": adapter.target_modules,
        "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "modules_to_save": None,
        "init_lora_weights": True, "inference_mode": True, "layers_to_transform": None, "layers_pattern": None,
        "rank_pattern": {}, "alpha_pattern": {},
    }
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_file(adapter.tensors, os.path.join(out_dir, "adapter_model.safetensors"), metadata={"format": "pt"})
    return out_dir
