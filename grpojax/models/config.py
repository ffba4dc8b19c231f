"""Qwen2 / Qwen2.5 / Qwen3 (dense) configuration, presets, and HF ``config.json`` conversion.

Sizes use the dimension key of :mod:`grpojax.types`: D model width, F MLP width, N query heads,
K key/value heads, H head dimension, V vocabulary, L layers.

The presets copy the published ``config.json`` of each checkpoint on the Hugging Face hub
(``https://huggingface.co/Qwen/<name>/blob/main/config.json``; the ``-Instruct`` variants share the
shapes of the base models). ``tests/models/test_presets.py`` checks their parameter counts with
``nnx.eval_shape`` against the exact figures derived from those configs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

ARCHS = ("qwen2", "qwen3")


@dataclasses.dataclass(frozen=True)
class QwenConfig:
    """Shapes and constants of a dense Qwen2 / Qwen2.5 / Qwen3 decoder.

    Attributes:
      vocab_size: V.
      hidden_size: D.
      intermediate_size: F (SwiGLU hidden width).
      num_layers: L.
      num_heads: N query heads.
      num_kv_heads: K key/value heads (GQA; N must be a multiple of K).
      head_dim: H (Qwen2: D // N; Qwen3: explicit, e.g. 128).
      rope_theta: RoPE base frequency.
      rms_norm_eps: epsilon of every RMSNorm.
      tie_word_embeddings: LM head shares the token embedding.
      qkv_bias: q/k/v projections carry a bias (Qwen2: True, Qwen3: False).
      qk_norm: per-head RMSNorm on queries and keys before RoPE (Qwen3: True).
      max_position_embeddings: longest context the checkpoint was trained for.
      arch: "qwen2" (also Qwen2.5) or "qwen3".
      scan_layers: parameter layout, not architecture. False: one module per decoder layer, run by a
        Python loop (XLA sees L copies of the layer). True: every layer parameter stacked along a
        leading axis of length L (logical axis ``"layers"``) and the stack run by ``jax.lax.scan``,
        so compile time and program size do not grow with depth (MaxText's ``scan_layers``); the KV
        cache is then one ``[L, B, S, K, H]`` pair. Same numbers either way.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    qkv_bias: bool = True
    qk_norm: bool = False
    max_position_embeddings: int = 32768
    arch: str = "qwen2"
    scan_layers: bool = False

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"QwenConfig.arch={self.arch!r}; expected one of {ARCHS}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"QwenConfig.{name}={getattr(self, name)!r} must be a positive integer")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"QwenConfig.num_heads={self.num_heads} is not a multiple of "
                f"num_kv_heads={self.num_kv_heads} (grouped-query attention needs N = K * G)")
        if self.head_dim % 2:
            raise ValueError(f"QwenConfig.head_dim={self.head_dim} must be even for RoPE")

    @property
    def num_groups(self) -> int:
        """G = N // K: query heads per key/value head."""
        return self.num_heads // self.num_kv_heads

    def replace(self, **changes: Any) -> QwenConfig:
        return dataclasses.replace(self, **changes)


def _qwen25(V, D, F, L, N, K, tied, max_pos=32768) -> QwenConfig:
    return QwenConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_layers=L, num_heads=N,
                      num_kv_heads=K, head_dim=D // N, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=tied, qkv_bias=True, qk_norm=False,
                      max_position_embeddings=max_pos, arch="qwen2")


def _qwen3(D, F, L, N, K, tied) -> QwenConfig:
    return QwenConfig(vocab_size=151936, hidden_size=D, intermediate_size=F, num_layers=L, num_heads=N,
                      num_kv_heads=K, head_dim=128, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=tied, qkv_bias=False, qk_norm=True,
                      max_position_embeddings=40960, arch="qwen3")


PRESETS: dict[str, QwenConfig] = {
    # Qwen2.5 (hub config.json of Qwen/Qwen2.5-*-Instruct).
    "qwen2.5-0.5b": _qwen25(151936, 896, 4864, 24, 14, 2, tied=True),
    "qwen2.5-1.5b": _qwen25(151936, 1536, 8960, 28, 12, 2, tied=True),
    "qwen2.5-3b": _qwen25(151936, 2048, 11008, 36, 16, 2, tied=True),
    "qwen2.5-7b": _qwen25(152064, 3584, 18944, 28, 28, 4, tied=False),
    "qwen2.5-14b": _qwen25(152064, 5120, 13824, 48, 40, 8, tied=False),
    # Qwen3 dense (hub config.json of Qwen/Qwen3-*).
    "qwen3-0.6b": _qwen3(1024, 3072, 28, 16, 8, tied=True),
    "qwen3-1.7b": _qwen3(2048, 6144, 28, 16, 8, tied=True),
    "qwen3-4b": _qwen3(2560, 9728, 36, 32, 8, tied=True),
    "qwen3-8b": _qwen3(4096, 12288, 36, 32, 8, tied=False),
    "qwen3-14b": _qwen3(5120, 17408, 40, 40, 8, tied=False),
}

_SUPPORTED_ROPE = (None, "default")


def config_from_hf_dict(d: Mapping[str, Any], source: str = "config.json") -> QwenConfig:
    """Builds a :class:`QwenConfig` from a HF ``config.json`` dict (transformers 4 or 5 layout).

    transformers 4 writes ``rope_theta`` (and ``rope_scaling``) at the top level; transformers 5 writes
    ``rope_parameters: {rope_theta, rope_type}``. Both are read. Features this port does not implement
    (RoPE scaling, sliding-window attention, MoE, other activations) raise ``ValueError`` naming the key.
    """
    def fail(msg):
        raise ValueError(f"{source}: {msg}")

    model_type = d.get("model_type")
    if model_type not in ARCHS:
        fail(f"unsupported model_type={model_type!r}; this port supports dense {ARCHS} "
             "(MoE and other architectures are not implemented)")
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads"):
        if key not in d:
            fail(f"missing required key {key!r}")
    if d.get("hidden_act", "silu") != "silu":
        fail(f"unsupported hidden_act={d['hidden_act']!r} (only 'silu')")
    if d.get("use_sliding_window", False):
        fail("use_sliding_window=true is not supported (sliding-window attention is not implemented)")
    layer_types = d.get("layer_types") or []
    bad = [i for i, t in enumerate(layer_types) if t != "full_attention"]
    if bad:
        fail(f"layer_types[{bad[0]}]={layer_types[bad[0]]!r}: only 'full_attention' is supported")

    rope = d.get("rope_parameters") or {}
    scaling = d.get("rope_scaling") or None
    rope_type = rope.get("rope_type", rope.get("type"))
    if scaling:
        rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type not in _SUPPORTED_ROPE:
        fail(f"unsupported RoPE type {rope_type!r} (rope_scaling / rope_parameters.rope_type); "
             "only the default RoPE is implemented")
    theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))

    N = int(d["num_attention_heads"])
    D = int(d["hidden_size"])
    if model_type == "qwen3":
        if d.get("attention_bias", False):
            fail("attention_bias=true is not supported for qwen3 (no released checkpoint uses it)")
        head_dim = int(d.get("head_dim") or D // N)
    else:
        head_dim = D // N
        if d.get("head_dim") not in (None, head_dim):
            fail(f"head_dim={d['head_dim']} differs from hidden_size // num_attention_heads={head_dim}")
    return QwenConfig(
        vocab_size=int(d["vocab_size"]), hidden_size=D, intermediate_size=int(d["intermediate_size"]),
        num_layers=int(d["num_hidden_layers"]), num_heads=N,
        num_kv_heads=int(d.get("num_key_value_heads") or N), head_dim=head_dim,
        rope_theta=float(theta), rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        qkv_bias=model_type == "qwen2", qk_norm=model_type == "qwen3",
        max_position_embeddings=int(d.get("max_position_embeddings", 32768)), arch=model_type)


def config_to_hf_dict(cfg: QwenConfig, *, architecture: str = "CausalLM",
                      extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` dict ``transformers`` loads for ``cfg`` (``architecture``: CausalLM or
    ForSequenceClassification). Writes ``rope_parameters`` (transformers 5) and, for older readers,
    the top-level ``rope_theta`` too."""
    if cfg.arch == "qwen2" and (not cfg.qkv_bias or cfg.qk_norm):
        raise ValueError("a qwen2 config must have qkv_bias=True and qk_norm=False to export to HF")
    if cfg.arch == "qwen3" and (cfg.qkv_bias or not cfg.qk_norm):
        raise ValueError("a qwen3 config must have qkv_bias=False and qk_norm=True to export to HF")
    prefix = "Qwen2" if cfg.arch == "qwen2" else "Qwen3"
    arch_name = f"{prefix}ForCausalLM" if architecture == "CausalLM" else f"{prefix}{architecture}"
    d: dict[str, Any] = {
        "architectures": [arch_name],
        "model_type": cfg.arch,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_theta": cfg.rope_theta, "rope_type": "default"},
        "use_sliding_window": False,
        "sliding_window": None,
        "attention_dropout": 0.0,
        "use_cache": True,
    }
    if cfg.arch == "qwen3":
        d["attention_bias"] = False
    d.update(extra or {})
    return d
