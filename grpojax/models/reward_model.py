"""Multi-label reward model: a Qwen backbone plus a linear head on the last non-pad token.

ALGORITHMS.md section 1.1 (and arXiv 2503.21819): R aspect scores per sequence,

    t*_b      = max{t : mask_bt and tokens_bt != pad_token_id}   (0 when there is none)
    scores_bR = hidden_{b, t*_b} W_DR (+ b_R)

which is transformers' ``Qwen2ForSequenceClassification`` / ``Qwen3ForSequenceClassification`` rule
(``GenericForSequenceClassification`` in transformers 5: the rightmost token whose id is not
``pad_token_id``; its ``score`` layer has no bias) on every batch whose padding holds the pad id, left or
right padded. Qwen base tokenizers have pad == EOS (``<|endoftext|>``): a response ending in EOS is then
pooled at its last token before the EOS, at training time, at scoring time and by transformers alike.
Without a ``pad_token_id`` the last real token (``mask``) is pooled.

Labels may be declared on another scale through a per-aspect affine map stored with the model:
``label = score * label_scale + label_shift``. :func:`reward_model_to_hf` writes a HF directory whose
config.json carries the aspect names (``id2label``), the pad id and, under ``"grpojax"``, the label map and
the prompt formatting the model was trained with.
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
from grpojax.models.hf_io import (
    Entry,
    TensorSource,
    dtype_name,
    has_lora,
    hf_name_table,
    load_into,
    param_of,
    prepare_out_dir,
    read_hf_config,
    resolve_checkpoint,
    to_theirs,
    write_tensors,
)
from grpojax.models.qwen import KeyStream, Qwen
from grpojax.types import Array


class LabelAffine(nnx.Variable):
    """Non-trainable per-aspect label map (not an ``nnx.Param``: optimizers leave it alone)."""


class HeadParam(nnx.LoRAParam):
    """The reward head's weight: a ``nnx.Param`` that a LoRA run trains too (``nnx.LoRAParam`` subclass),
    as PEFT's ``modules_to_save=["score"]`` does; a random head frozen under LoRA would never learn."""


def last_token_index(mask_BT: Array) -> Array:
    """Index of the last True of each row, ``[B]`` (0 for a row with no True)."""
    chex.assert_rank(mask_BT, 2)
    steps_BT = jnp.broadcast_to(jnp.arange(mask_BT.shape[1], dtype=jnp.int32)[None, :], mask_BT.shape)
    return jnp.max(jnp.where(mask_BT.astype(bool), steps_BT, 0), axis=1)


def pooling_mask(tokens_BT: Array, mask_BT: Array, pad_token_id: int | None) -> Array:
    """``mask & (tokens != pad_token_id)``: the tokens the head may pool (transformers' non-pad rule)."""
    mask_BT = mask_BT.astype(bool)
    return mask_BT if pad_token_id is None else mask_BT & (tokens_BT != pad_token_id)


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


def _head_param(init, keys: KeyStream, shape: tuple, param_dtype) -> HeadParam:
    """The ``[D, R]`` head weight with its logical axes (see :func:`grpojax.models.qwen._param`)."""
    return HeadParam(init(keys(), tuple(shape), param_dtype), out_sharding=("embed", "labels"),
                     eager_sharding=False)


def _label_affine(num_labels: int, label_scale, label_shift) -> tuple[Array, Array]:
    """Checked (NumPy, so it also works while tracing) per-aspect scale and shift, float32 ``[R]``; a
    scalar (the config's ``reward.label_affine: [scale, offset]``) applies to every aspect."""
    scale = np.ones((num_labels,)) if label_scale is None else np.asarray(label_scale, np.float32)
    shift = np.zeros((num_labels,)) if label_shift is None else np.asarray(label_shift, np.float32)
    scale, shift = (np.full((num_labels,), v) if v.ndim == 0 else v for v in (scale, shift))
    for name, v in (("label_scale", scale), ("label_shift", shift)):
        if v.shape != (num_labels,):
            raise ValueError(f"RewardModel: {name} has shape {v.shape}, expected ({num_labels},)")
    if not np.all(scale != 0):
        raise ValueError("RewardModel: label_scale must be non-zero for every aspect")
    return jnp.asarray(scale, jnp.float32), jnp.asarray(shift, jnp.float32)


class RewardModel(nnx.Module):
    """Qwen backbone (no LM head) + R-output linear head pooled at the last real non-pad token.

    ``attention``: the backbone's attention implementation (``Qwen(attention=)``).
    ``model(tokens_BT, mask_BT, positions_BT=None) -> scores_BR``; positions default to
    ``cumsum(mask) - 1`` (real positions for left-padded rows). ``pad_token_id``: tokens with this id are
    never pooled (transformers' rule, see the module docstring); None = pool the last ``mask`` token.
    """

    def __init__(self, config, num_labels: int, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs | None = None, head_bias: bool = False, label_scale=None, label_shift=None,
                 remat: str = "none", pad_token_id: int | None = None, attention: str = "einsum"):
        if int(num_labels) <= 0:
            raise ValueError(f"RewardModel: num_labels={num_labels!r} must be positive")
        rngs = nnx.Rngs(0) if rngs is None else rngs
        self.num_labels = int(num_labels)
        self.pad_token_id = None if pad_token_id is None else int(pad_token_id)
        self.backbone = Qwen(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs, with_lm_head=False,
                             remat=remat, attention=attention)
        keys = KeyStream(rngs)
        self.head_w = _head_param(nnx.initializers.normal(0.02), keys, (config.hidden_size, self.num_labels),
                                  param_dtype)
        self.head_b = (HeadParam(nnx.initializers.zeros(keys(), (self.num_labels,), param_dtype),
                                 out_sharding=("labels",), eager_sharding=False)
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
        return reward_head(self.head_params(), hidden_BTD, pooling_mask(tokens_BT, mask_BT, self.pad_token_id))

    def to_label_space(self, scores_BR: Array) -> Array:
        """``scores * label_scale + label_shift``: scores back on the labels' declared scale."""
        return scores_BR * self.label_scale[...][None, :] + self.label_shift[...][None, :]

    def from_label_space(self, labels_BR: Array) -> Array:
        """Inverse map: labels to the scale the head is trained on."""
        return (labels_BR - self.label_shift[...][None, :]) / self.label_scale[...][None, :]


def grpojax_meta(raw: dict) -> dict:
    """The ``"grpojax"`` sub-dict of a reward config.json (label map, aspects, prompt formatting); the label
    map of older exports (top-level ``grpojax_label_scale`` / ``grpojax_label_shift``) is read too."""
    meta = dict(raw.get("grpojax") or {})
    for key in ("label_scale", "label_shift"):
        if key not in meta and raw.get(f"grpojax_{key}") is not None:
            meta[key] = raw[f"grpojax_{key}"]
    return meta


def hf_aspect_names(raw: dict) -> list[str] | None:
    """The aspect names of a sequence-classification config.json (``id2label`` in label order), or None
    when they are transformers' defaults (``LABEL_0``, ...) and so name nothing."""
    id2label = raw.get("id2label") or {}
    names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    return None if not names or names == [f"LABEL_{i}" for i in range(len(names))] else names


def reward_model_from_hf(path_or_hub_id: str, *, num_labels: int | None = None, dtype: Any = jnp.float32,
                         param_dtype: Any = None, rngs: nnx.Rngs | None = None, label_scale=None,
                         label_shift=None, scan_layers: bool = False, remat: str = "none",
                         pad_token_id: int | None = None, attention: str = "einsum") -> RewardModel:
    """A :class:`RewardModel` from a HF checkpoint.

    * ``Qwen2ForSequenceClassification`` / ``Qwen3ForSequenceClassification`` checkpoints: backbone and
      ``score.weight [R, D]`` are loaded (R = the checkpoint's ``num_labels``; a different ``num_labels``
      argument is an error); ``pad_token_id`` defaults to the checkpoint's.
    * causal-LM checkpoints: the backbone is loaded, the head is random (``num_labels`` required); pass the
      training tokenizer's ``pad_token_id``.

    A label map saved by :func:`reward_model_to_hf` (config.json ``"grpojax"``) is restored unless
    ``label_scale`` / ``label_shift`` are given. ``param_dtype``: storage dtype (default ``dtype``).
    ``attention``: the backbone's attention implementation (``Qwen(attention=)``).
    ``scan_layers`` / ``remat``: the backbone's layer layout and rematerialisation (see
    :class:`grpojax.models.Qwen`).
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
        if pad_token_id is None:
            pad_token_id = raw.get("pad_token_id")
    elif num_labels is None:
        raise ValueError(f"{ckpt} is a causal-LM checkpoint: pass num_labels to get a random R-output head")
    if label_scale is None and label_shift is None:
        meta = grpojax_meta(raw)
        label_scale, label_shift = meta.get("label_scale"), meta.get("label_shift")
    rngs = nnx.Rngs(0) if rngs is None else rngs
    abstract = nnx.eval_shape(lambda: RewardModel(cfg, num_labels, dtype=dtype, param_dtype=param_dtype,
                                                  rngs=nnx.Rngs(0), label_scale=label_scale,
                                                  label_shift=label_shift, remat=remat,
                                                  pad_token_id=pad_token_id, attention=attention))
    source = TensorSource(ckpt)
    entries = hf_name_table(cfg, lm_head=False, prefix=("backbone",))
    if is_seqcls:
        entries.append(Entry("score.weight", ("head_w",), "linear"))
    model = load_into(abstract, entries, source, param_dtype=param_dtype, partial=not is_seqcls,
                      allowed_extra=[] if is_seqcls else ["lm_head.weight"])
    if not is_seqcls:
        model.head_w = _head_param(nnx.initializers.normal(0.02), KeyStream(rngs), (cfg.hidden_size, num_labels),
                                   param_dtype)
    scale, shift = _label_affine(num_labels, label_scale, label_shift)
    model.label_scale = LabelAffine(scale)
    model.label_shift = LabelAffine(shift)
    return model


def reward_model_to_hf(model: RewardModel, out_dir: str, *, pad_token_id: int | None = None,
                       aspects=None, meta: dict | None = None, overwrite: bool = False,
                       max_shard_bytes: int | None = None) -> str:
    """Writes ``model`` as a HF ``Qwen{2,3}ForSequenceClassification`` checkpoint: ``num_labels`` = R,
    ``score.weight [R, D]`` (the parameter table of :func:`grpojax.models.hf_io.hf_name_table` plus the
    head), ``id2label`` / ``label2id`` = ``aspects`` (default ``LABEL_i``), ``pad_token_id`` (default the
    model's), and a ``"grpojax"`` sub-dict: ``label_scale`` / ``label_shift`` with
    ``label = logits * label_scale + label_shift``, ``aspects``, plus ``meta`` (e.g. the prompt formatting).

    transformers pools the last token that is not ``pad_token_id``: with the model's own pad id it pools as
    :class:`RewardModel` does. A head bias (HF's score layer has none) or unmerged LoRA adapters are
    errors. Refuses a non-empty ``out_dir`` unless ``overwrite``. The tokenizer is the caller's to save.
    """
    if has_lora(model):
        raise ValueError("reward_model_to_hf: the model has LoRA adapters; call merge_lora(model) first")
    if model.head_b is not None:
        raise ValueError("reward_model_to_hf: HF's score layer has no bias; this model has head_bias=True")
    R = model.num_labels
    names = [f"LABEL_{i}" for i in range(R)] if aspects is None else [str(a) for a in aspects]
    if len(names) != R or len(set(names)) != R:
        raise ValueError(f"reward_model_to_hf: aspects {names} must be {R} distinct names")
    pad = model.pad_token_id if pad_token_id is None else int(pad_token_id)
    cfg = model.config
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    entries = hf_name_table(cfg, lm_head=False, prefix=("backbone",))
    entries.append(Entry("score.weight", ("head_w",), "linear"))
    tensors = {e.hf_name: to_theirs(e, param_of(pure, e)) for e in entries}
    prepare_out_dir(out_dir, overwrite)
    grpojax = {"aspects": None if aspects is None else names,
               "label_scale": np.asarray(model.label_scale[...]).tolist(),
               "label_shift": np.asarray(model.label_shift[...]).tolist(),
               "label_map": "label = logits * label_scale + label_shift", **(meta or {})}
    extra = {"dtype": dtype_name(model.head_w[...]), "num_labels": R, "pad_token_id": pad,
             "id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)},
             "problem_type": "regression", "grpojax": grpojax}
    hf_cfg = config_to_hf_dict(cfg, architecture="ForSequenceClassification", extra=extra)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_cfg, f, indent=2)
    write_tensors(out_dir, tensors, max_shard_bytes)
    return out_dir
