"""Qwen2 / Qwen2.5 / Qwen3 in Flax NNX: config presets, modules, KV cache, HF import/export, LoRA,
and the multi-label reward model.

Public API:
    QwenConfig, PRESETS            shapes of a dense Qwen decoder; published checkpoint presets
                                   (``scan_layers=True``: layers stacked and run by ``lax.scan``)
    Qwen                           the NNX decoder (logits, hidden states, cached decode)
    init_cache                     zero KV cache pytree: [dict(k=[B,S,K,H], v=[B,S,K,H])] * L, or one
                                   stacked dict(k=[L,B,S,K,H], v=...) with scan_layers
                                   (the sampler decodes from kv_cache.shared_prompt_cache: prompt
                                   keys once per prompt, see decode_attention and docs/decode.md)
    from_hf, to_hf                 HF checkpoint (dir or hub id) <-> Qwen
    config_from_hf_dict, config_to_hf_dict
    apply_lora, merge_lora, lora_params, LORA_TARGETS
                                   flax nnx.LoRA adapters on q/k/v/o/gate/up/down, alpha/r scaling
    RewardModel, reward_head, reward_model_from_hf, reward_model_to_hf, last_token_index
                                   multi-label reward model (last-real-token pooling, R outputs)
    save_orbax, load_orbax         Orbax checkpoint of a Qwen (params pytree + config json)
"""

from grpojax.models.config import PRESETS, QwenConfig, config_from_hf_dict, config_to_hf_dict
from grpojax.models.hf_io import from_hf, hf_name_table, to_hf
from grpojax.models.kv_cache import init_cache
from grpojax.models.qwen import Qwen

__all__ = [
    "PRESETS", "QwenConfig", "Qwen", "init_cache", "from_hf", "to_hf", "hf_name_table",
    "config_from_hf_dict", "config_to_hf_dict",
]

from grpojax.models.lora import LORA_TARGETS, apply_lora, lora_params, merge_lora  # noqa: E402
from grpojax.models.reward_model import (  # noqa: E402
    RewardModel,
    last_token_index,
    reward_head,
    reward_model_from_hf,
    reward_model_to_hf,
)

__all__ += ["LORA_TARGETS", "apply_lora", "merge_lora", "lora_params", "RewardModel", "reward_head",
            "last_token_index", "reward_model_from_hf", "reward_model_to_hf"]
from grpojax.models.orbax_io import load_orbax, save_orbax  # noqa: E402

__all__ += ["save_orbax", "load_orbax"]
