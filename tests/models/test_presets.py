"""Presets: parameter counts via nnx.eval_shape (no memory), against the published figures and against
transformers' own models built on the meta device; HF config.json conversion in both layouts."""

import math

import jax
import pytest
import torch
from flax import nnx
from transformers import AutoConfig, AutoModelForCausalLM

from grpojax.models import PRESETS, Qwen, QwenConfig, config_from_hf_dict, config_to_hf_dict

# Exact totals implied by the hub config.json files (huggingface.co/Qwen/<name>/blob/main/config.json);
# the model cards round them to 0.49B, 1.54B, 3.09B, 7.61B, 14.7B (Qwen2.5) and 0.6B, 1.7B, 4.0B, 8.2B,
# 14.8B (Qwen3). Qwen2.5-0.5B's 494,032,768 is the figure printed by transformers' num_parameters().
EXPECTED = {
    "qwen2.5-0.5b": (494_032_768, 0.49e9),
    "qwen2.5-1.5b": (1_543_714_304, 1.54e9),
    "qwen2.5-3b": (3_085_938_688, 3.09e9),
    "qwen2.5-7b": (7_615_616_512, 7.61e9),
    "qwen2.5-14b": (14_770_033_664, 14.7e9),
    "qwen3-0.6b": (596_049_920, 0.6e9),
    "qwen3-1.7b": (1_720_574_976, 1.7e9),
    "qwen3-4b": (4_022_468_096, 4.0e9),
    "qwen3-8b": (8_190_735_360, 8.2e9),
    "qwen3-14b": (14_768_307_200, 14.8e9),
}


def count_formula(c: QwenConfig) -> int:
    """Independent closed form: embeddings, per-layer attention + MLP + 2 norms, final norm."""
    D, F, N, K, H = c.hidden_size, c.intermediate_size, c.num_heads, c.num_kv_heads, c.head_dim
    attn = D * N * H + 2 * D * K * H + N * H * D
    attn += (N * H + 2 * K * H) if c.qkv_bias else 0
    attn += 2 * H if c.qk_norm else 0
    layer = attn + 3 * D * F + 2 * D
    emb = c.vocab_size * D * (1 if c.tie_word_embeddings else 2)
    return emb + c.num_layers * layer + D


def test_preset_names():
    assert sorted(PRESETS) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_parameter_count(name):
    cfg = PRESETS[name]
    abstract = nnx.eval_shape(lambda: Qwen(cfg, rngs=nnx.Rngs(0)))
    leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    n = sum(math.prod(x.shape) for x in leaves)
    exact, published = EXPECTED[name]
    assert n == exact == count_formula(cfg)
    assert abs(n - published) <= 0.015 * published  # the cards round (or truncate) to 2-3 digits


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "qwen3-8b"])
def test_preset_matches_transformers_meta_model(name):
    """transformers builds the same-sized model from our exported config.json (meta device: no memory)."""
    hf_cfg = AutoConfig.for_model(**config_to_hf_dict(PRESETS[name]))
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(hf_cfg)
    assert sum(p.numel() for p in hf.parameters()) == EXPECTED[name][0]
    assert config_from_hf_dict(hf_cfg.to_dict()) == PRESETS[name]


def test_config_round_trip_and_transformers4_layout():
    for cfg in PRESETS.values():
        assert config_from_hf_dict(config_to_hf_dict(cfg)) == cfg
    v4 = {"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
          "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
          "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
          "max_position_embeddings": 32768, "sliding_window": 32768, "use_sliding_window": False,
          "rope_scaling": None, "hidden_act": "silu"}
    assert config_from_hf_dict(v4) == PRESETS["qwen2.5-0.5b"]
    v5 = dict(v4, rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"})
    del v5["rope_theta"], v5["rope_scaling"]
    assert config_from_hf_dict(v5) == PRESETS["qwen2.5-0.5b"]


@pytest.mark.parametrize("change,message", [
    ({"model_type": "qwen2_moe"}, "unsupported model_type='qwen2_moe'"),
    ({"model_type": "llama"}, "unsupported model_type='llama'"),
    ({"use_sliding_window": True}, "use_sliding_window"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "unsupported RoPE type 'yarn'"),
    ({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4}}, "unsupported RoPE type 'linear'"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"layer_types": ["full_attention", "sliding_attention"]}, r"layer_types\[1\]"),
    ({"num_key_value_heads": 3}, "not a multiple"),
])
def test_unsupported_configs_are_named(change, message):
    d = dict(config_to_hf_dict(PRESETS["qwen2.5-0.5b"]), **change)
    with pytest.raises(ValueError, match=message):
        config_from_hf_dict(d, source="ckpt/config.json")
    d = dict(config_to_hf_dict(PRESETS["qwen2.5-0.5b"]))
    del d["hidden_size"]
    with pytest.raises(ValueError, match="ckpt/config.json: missing required key 'hidden_size'"):
        config_from_hf_dict(d, source="ckpt/config.json")
