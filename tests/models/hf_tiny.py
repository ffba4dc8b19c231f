"""Helpers shared by the model tests (importable because tests/models/conftest.py puts this folder on
sys.path): tiny random-weight HF Qwen models built with transformers + torch."""

import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM
from transformers import Qwen2ForSequenceClassification as Qwen2ForSequenceClassification  # re-exported

VOCAB = 160

# name -> (arch, N, K, H or None, tied)
TINY = {
    "qwen2-gqa2-untied": ("qwen2", 4, 2, None, False),
    "qwen2-gqa1-tied": ("qwen2", 4, 4, None, True),
    "qwen2-gqa4-untied": ("qwen2", 8, 2, None, False),
    "qwen3-gqa2-tied": ("qwen3", 4, 2, 16, True),
    "qwen3-gqa4-untied": ("qwen3", 4, 1, 8, False),
}


def hf_config(name, **overrides):
    arch, n, k, h, tied = TINY[name]
    kw = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=n, num_key_value_heads=k, tie_word_embeddings=tied,
              rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=128)
    kw.update(overrides)
    if arch == "qwen3":
        return Qwen3Config(head_dim=h, **kw)
    return Qwen2Config(**kw)


def randomize_(model, seed):
    """Random weights with a larger spread than HF's init (norm weights too), so errors show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def build_hf(name, seed=0, **overrides):
    cfg = hf_config(name, **overrides)
    cls = Qwen3ForCausalLM if TINY[name][0] == "qwen3" else Qwen2ForCausalLM
    torch.manual_seed(seed)
    return randomize_(cls(cfg), seed)


def torch_logits(model, tokens_BT, mask_BT=None, positions_BT=None):
    with torch.no_grad():
        out = model(torch.tensor(np.asarray(tokens_BT)),
                    attention_mask=None if mask_BT is None else torch.tensor(np.asarray(mask_BT, np.int64)),
                    position_ids=None if positions_BT is None else torch.tensor(np.asarray(positions_BT)))
    return out.logits.float().numpy()


def _forward(model, tokens_BT, positions_BT, attn_mask_BT):
    return model(tokens_BT, positions_BT, attn_mask_BT=attn_mask_BT)


_FORWARD = None


def forward(model, tokens_BT, positions_BT=None, mask_BT=None):
    """Jitted no-cache forward (eager NNX calls compile every primitive: far slower in tests)."""
    global _FORWARD
    import jax.numpy as jnp
    from flax import nnx
    if _FORWARD is None:
        _FORWARD = nnx.jit(_forward)
    pos = None if positions_BT is None else jnp.asarray(positions_BT)
    mask = None if mask_BT is None else jnp.asarray(mask_BT)
    return np.asarray(_FORWARD(model, jnp.asarray(tokens_BT), pos, mask))
