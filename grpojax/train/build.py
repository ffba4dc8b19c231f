"""Builders of what a run trains from its config: the policy (HF checkpoint or a random preset, LoRA
wrapped when configured), the reward model, and the optimizer.

``build_model(model_cfg)`` loads ``model.path`` with :func:`grpojax.models.from_hf` or builds
``model.preset`` resized by ``model.shape``; ``maybe_lora`` wraps the configured projections;
``build_reward_model(cfg)`` is the reward run's :class:`grpojax.models.reward_model.RewardModel` with the
label map stored; ``build_optimizer(train_cfg)`` is :func:`grpojax.train.steps.optim.make_optimizer` with the
``train`` section's keys. Tasks and the reward scorer call these; nothing here touches a mesh.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from grpojax import models
from grpojax.cli import UserError
from grpojax.models.attention import check_backend
from grpojax.models.lora import apply_lora
from grpojax.models.reward_model import RewardModel, reward_model_from_hf
from grpojax.train.steps.optim import make_optimizer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def build_model(model_cfg, *, seed: int = 0, path: str | None = None):
    """The policy / reference / backbone described by ``model_cfg`` (``path`` overrides its path)."""
    dtype, param_dtype = DTYPES[model_cfg.dtype], DTYPES[model_cfg.param_dtype]
    layout = dict(remat=model_cfg.remat, scan_layers=model_cfg.scan_layers,
                  attention=checked_attention(model_cfg))
    path = path or model_cfg.path
    if path is not None:
        try:
            return models.from_hf(path, dtype=dtype, param_dtype=param_dtype, **layout)
        except (FileNotFoundError, OSError, ValueError) as e:
            raise UserError(f"cannot load model {path!r}: {e}") from None
    return models.Qwen(preset_config(model_cfg), dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed),
                       remat=model_cfg.remat, attention=layout["attention"])


def checked_attention(model_cfg) -> str:
    """``model.attention``, refused with one line when the jax backend cannot run it (cudnn off a GPU)."""
    why = check_backend(model_cfg.attention)
    if why:
        raise UserError(f"model.attention: {why}")
    return model_cfg.attention


def preset_config(model_cfg):
    """The ``QwenConfig`` of a ``model.preset`` run: the preset, resized by ``model.shape``, in the
    configured layer layout."""
    return models.PRESETS[model_cfg.preset].replace(**model_cfg.shape.overrides(),
                                                    scan_layers=model_cfg.scan_layers)


def maybe_lora(model, model_cfg, *, seed: int = 0):
    """Wrap the configured projections with LoRA adapters (rank 0 = full fine-tuning, unchanged)."""
    if model_cfg.lora.rank == 0:
        return model
    return apply_lora(model, targets=tuple(model_cfg.lora.targets), rank=model_cfg.lora.rank,
                      alpha=model_cfg.lora.alpha, rngs=nnx.Rngs(seed + 1))


def build_optimizer(train_cfg):
    """The optimizer of the ``train`` section (schedule, warm-up, AdamW, clipping)."""
    return make_optimizer(train_cfg.learning_rate, total_steps=train_cfg.horizon,
                          schedule=train_cfg.schedule, warmup_steps=train_cfg.warmup_steps,
                          weight_decay=train_cfg.weight_decay, b1=train_cfg.adam_b1,
                          b2=train_cfg.adam_b2, eps=train_cfg.adam_eps,
                          max_grad_norm=train_cfg.max_grad_norm)


def label_map(label_affine):
    """``(scale, offset)`` of ``y' = scale*y + offset`` -> the model's (label_scale, label_shift) inverse."""
    if label_affine is None:
        return None, None
    a, c = label_affine
    return 1.0 / a, -c / a


def build_reward_model(cfg, pad_token_id: int | None = None):
    """The reward model of a reward run config: HF backbone (``model.path``) or a random preset, R = the
    number of aspects, the label map stored, LoRA on the backbone when configured (the head trains too).
    ``pad_token_id``: the training tokenizer's pad id (never pooled, as transformers)."""
    mc, R, seed = cfg.model, len(cfg.reward.aspects), cfg.train.seed
    scale, shift = label_map(cfg.reward.label_affine)
    dtype = DTYPES[mc.dtype]
    if mc.path:
        try:
            model = reward_model_from_hf(mc.path, num_labels=R, dtype=dtype, param_dtype=DTYPES[mc.param_dtype],
                                         rngs=nnx.Rngs(seed), label_scale=scale, label_shift=shift,
                                         remat=mc.remat, scan_layers=mc.scan_layers, pad_token_id=pad_token_id,
                                         attention=checked_attention(mc))
        except (FileNotFoundError, OSError, ValueError) as e:
            raise UserError(f"cannot load reward backbone {mc.path!r}: {e}") from None
    else:
        model = RewardModel(preset_config(mc), R, dtype=dtype, param_dtype=DTYPES[mc.param_dtype],
                            rngs=nnx.Rngs(seed), label_scale=scale, label_shift=shift, remat=mc.remat,
                            pad_token_id=pad_token_id, attention=checked_attention(mc))
    if mc.lora.rank:
        maybe_lora(model.backbone, mc, seed=seed)
    return model
