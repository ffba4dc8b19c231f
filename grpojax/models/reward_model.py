"""Multi-label reward model: a Qwen backbone plus a linear head on the last non-pad token.

ALGORITHMS.md section 1.1 (and arXiv 2503.21819): R aspect scores per sequence,

    t*_b      = max{t : mask_bt}                       (last real token; left or right padding)
    scores_bR = hidden_{b, t*_b} W_DR (+ b_R)

which is what transformers' ``Qwen2ForSequenceClassification`` does with ``pad_token_id`` (it pools the
rightmost non-pad token; its ``score`` layer has no bias). Labels may be declared on another scale
through a per-aspect affine map stored with the model: ``label = score * label_scale + label_shift``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import chex
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax.models.config import config_from_hf_dict, config_to_hf_dict
from grpojax.models.hf_io import (Entry, TensorSource, dtype_name, has_lora, hf_name_table, load_into,
                                  param_of, prepare_out_dir, read_hf_config, resolve_checkpoint, to_theirs,
                                  write_tensors)
from grpojax.models.qwen import KeyStream, Qwen, _param
from grpojax.types import Array


class LabelAffine(nnx.Variable):
    """Non-trainable per-aspect label map (not an ``nnx.Param``: optimizers leave it alone)."""


def last_token_index(mask_BT: Array) -> Array:
    """Index of the last True of each row, ``[B]`` (0 for a row with no True)."""
    chex.assert_rank(mask_BT, 2)
    steps_BT = jnp.broadcast_to(jnp.arange(mask_BT.shape[1], dtype=jnp.int32)[None, :], mask_BT.shape)
    return jnp.max(jnp.where(mask_BT.astype(bool), steps_BT, 0), axis=1)


def reward_head(params: dict, hidden_BTD: Array, mask_BT: Array) -> Array:
    """``scores_BR = hidden[b, last real token] @ w_DR (+ b_R)``, float32.

    Args:
      params: ``{"w": [D, R]}`` and optionally ``{"b": [R]}``.
      hidden_BTD: final (normed) hidden states ``[B, T, D]``.
      mask_BT: bool ``[B, T]``, True on real tokens (left or right padding both work).
    Returns:
      ``[B, R]`` scores.
    """
    chex.assert_rank([hidden_BTD, mask_BT, params["w"]], [3, 2, 2])
    chex.assert_equal_shape_prefix([hidden_BTD, mask_BT], 2)
    chex.assert_equal(params["w"].shape[0], hidden_BTD.shape[2])
    last_B = last_token_index(mask_BT)
    pooled_BD = jnp.take_along_axis(hidden_BTD, last_B[:, None, None], axis=1)[:, 0, :]
    scores_BR = jnp.einsum("BD,DR->BR", pooled_BD.astype(jnp.float32), params["w"].astype(jnp.float32))
    if params.get("b") is not None:
        scores_BR = scores_BR + params["b"].astype(jnp.float32)[None, :]
    return scores_BR


def _label_affine(num_labels: int, label_scale, label_shift) -> tuple[Array, Array]:
    """Checked (NumPy, so it also works while tracing) per-aspect scale and shift, float32 ``[R]``."""
    scale = np.ones((num_labels,)) if label_scale is None else np.asarray(label_scale, np.float32)
    shift = np.zeros((num_labels,)) if label_shift is None else np.asarray(label_shift, np.float32)
    for name, v in (("label_scale", scale), ("label_shift", shift)):
        if v.shape != (num_labels,):
            raise ValueError(f"RewardModel: {name} has shape {v.shape}, expected ({num_labels},)")
    if not np.all(scale != 0):
        raise ValueError("RewardModel: label_scale must be non-zero for every aspect")
    return jnp.asarray(scale, jnp.float32), jnp.asarray(shift, jnp.float32)


class RewardModel(nnx.Module):
    """Qwen backbone (no LM head) + R-output linear head pooled at the last real token.

    ``model(tokens_BT, mask_BT, positions_BT=None) -> scores_BR``; positions default to
    ``cumsum(mask) - 1`` (real positions for left-padded rows).
    """

    def __init__(self, config, num_labels: int, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs | None = None, head_bias: bool = False, label_scale=None, label_shift=None,
                 remat: str = "none"):
        if int(num_labels) <= 0:
            raise ValueError(f"RewardModel: num_labels={num_labels!r} must be positive")
        rngs = nnx.Rngs(0) if rngs is None else rngs
        self.num_labels = int(num_labels)
        self.backbone = Qwen(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs, with_lm_head=False,
                             remat=remat)
        keys = KeyStream(rngs)
        self.head_w = _param(nnx.initializers.normal(0.02), keys, (config.hidden_size, self.num_labels),
                             ("embed", "labels"), param_dtype)
        self.head_b = (_param(nnx.initializers.zeros, keys, (self.num_labels,), ("labels",), param_dtype)
                       if head_bias else nnx.data(None))
        scale, shift = _label_affine(self.num_labels, label_scale, label_shift)
        self.label_scale = LabelAffine(scale)
        self.label_shift = LabelAffine(shift)

    @property
    def config(self):
        return self.backbone.config

    def head_params(self) -> dict:
        return {"w": self.head_w[...], "b": None if self.head_b is None else self.head_b[...]}

    def __call__(self, tokens_BT: Array, mask_BT: Array, positions_BT: Array | None = None) -> Array:
        mask_BT = mask_BT.astype(bool)
        if positions_BT is None:
            positions_BT = jnp.maximum(jnp.cumsum(mask_BT.astype(jnp.int32), axis=1) - 1, 0)
        hidden_BTD = self.backbone(tokens_BT, positions_BT, attn_mask_BT=mask_BT, return_hidden=True)
        return reward_head(self.head_params(), hidden_BTD, mask_BT)

    def to_label_space(self, scores_BR: Array) -> Array:
        """``scores * label_scale + label_shift``: scores back on the labels' declared scale."""
        return scores_BR * self.label_scale[...][None, :] + self.label_shift[...][None, :]

    def from_label_space(self, labels_BR: Array) -> Array:
        """Inverse map: labels to the scale the head is trained on."""
        return (labels_BR - self.label_shift[...][None, :]) / self.label_scale[...][None, :]


def reward_model_from_hf(path_or_hub_id: str, *, num_labels: int | None = None, dtype: Any = jnp.float32,
                         rngs: nnx.Rngs | None = None, label_scale=None, label_shift=None,
                         scan_layers: bool = False, remat: str = "none",
                         param_dtype: Any = None) -> RewardModel:
    """A :class:`RewardModel` from a HF checkpoint.

    * ``Qwen2ForSequenceClassification`` / ``Qwen3ForSequenceClassification`` checkpoints: backbone and
      ``score.weight [R, D]`` are loaded (R = the checkpoint's ``num_labels``; a different ``num_labels``
      argument is an error).
    * causal-LM checkpoints: the backbone is loaded, the head is random (``num_labels`` required).

    A label map saved by :func:`reward_model_to_hf` (``grpojax_label_scale`` / ``grpojax_label_shift`` in
    config.json) is restored unless ``label_scale`` / ``label_shift`` are given. ``scan_layers`` /
    ``remat``: the backbone's layer layout and rematerialisation (see :class:`grpojax.models.Qwen`).
    ``param_dtype``: the stored weights' dtype (None = ``dtype``; e.g. float32 master weights computing in
    ``dtype=bfloat16``, as ``model.param_dtype`` of a reward run asks).
    """
    param_dtype = dtype if param_dtype is None else param_dtype
    ckpt = resolve_checkpoint(path_or_hub_id)
    raw = read_hf_config(ckpt)
    cfg = config_from_hf_dict(raw, source=os.path.join(ckpt, "config.json")).replace(scan_layers=scan_layers)
    is_seqcls = any(a.endswith("ForSequenceClassification") for a in raw.get("architectures") or [])
    if is_seqcls:
        ckpt_labels = int(raw.get("num_labels") or len(raw.get("id2label") or {}) or 2)
        if num_labels is not None and int(num_labels) != ckpt_labels:
            raise ValueError(f"{ckpt}: checkpoint has num_labels={ckpt_labels}, asked for {num_labels}")
        num_labels = ckpt_labels
    elif num_labels is None:
        raise ValueError(f"{ckpt} is a causal-LM checkpoint: pass num_labels to get a random R-output head")
    if label_scale is None and label_shift is None:
        label_scale, label_shift = raw.get("grpojax_label_scale"), raw.get("grpojax_label_shift")
    rngs = nnx.Rngs(0) if rngs is None else rngs
    abstract = nnx.eval_shape(lambda: RewardModel(cfg, num_labels, dtype=dtype, param_dtype=param_dtype,
                                                  rngs=nnx.Rngs(0), label_scale=label_scale,
                                                  label_shift=label_shift, remat=remat))
    source = TensorSource(ckpt)
    entries = hf_name_table(cfg, lm_head=False, prefix=("backbone",))
    if is_seqcls:
        entries.append(Entry("score.weight", ("head_w",), "linear"))
    model = load_into(abstract, entries, source, param_dtype=param_dtype, partial=not is_seqcls,
                      allowed_extra=[] if is_seqcls else ["lm_head.weight"])
    if not is_seqcls:
        model.head_w = _param(nnx.initializers.normal(0.02), KeyStream(rngs), (cfg.hidden_size, num_labels),
                              ("embed", "labels"), param_dtype)
    scale, shift = _label_affine(num_labels, label_scale, label_shift)
    model.label_scale = LabelAffine(scale)
    model.label_shift = LabelAffine(shift)
    return model


def reward_model_to_hf(model: RewardModel, out_dir: str, *, pad_token_id: int | None = None,
                       overwrite: bool = False) -> str:
    """Writes ``model`` as a HF ``Qwen{2,3}ForSequenceClassification`` checkpoint (``num_labels`` = R,
    ``score.weight [R, D]``; the label map goes to config.json as ``grpojax_label_scale/shift``).

    transformers pools the last token that is not ``pad_token_id``; pass the tokenizer's pad id so it
    pools as :func:`reward_head` does. A head bias (HF's score layer has none) or unmerged LoRA adapters
    are errors. Refuses a non-empty ``out_dir`` unless ``overwrite``.
    """
    if has_lora(model):
        raise ValueError("reward_model_to_hf: the model has LoRA adapters; call merge_lora(model) first")
    if model.head_b is not None:
        raise ValueError("reward_model_to_hf: HF's score layer has no bias; this model has head_bias=True")
    cfg = model.config
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    entries = hf_name_table(cfg, lm_head=False, prefix=("backbone",))
    entries.append(Entry("score.weight", ("head_w",), "linear"))
    tensors = {e.hf_name: to_theirs(e, param_of(pure, e)) for e in entries}
    prepare_out_dir(out_dir, overwrite)
    R = model.num_labels
    extra = {"dtype": dtype_name(model.head_w[...]), "num_labels": R, "pad_token_id": pad_token_id,
             "id2label": {str(i): f"LABEL_{i}" for i in range(R)},
             "label2id": {f"LABEL_{i}": i for i in range(R)}, "problem_type": "regression",
             "grpojax_label_scale": np.asarray(model.label_scale[...]).tolist(),
             "grpojax_label_shift": np.asarray(model.label_shift[...]).tolist()}
    hf_cfg = config_to_hf_dict(cfg, architecture="ForSequenceClassification", extra=extra)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_cfg, f, indent=2)
    write_tensors(out_dir, tensors, None)
    return out_dir
