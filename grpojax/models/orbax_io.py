"""Orbax checkpoints of a :class:`Qwen`: the parameter pytree (``params/``) plus ``qwen_config.json``.

Used by ``scripts/convert_hf.py`` (HF <-> Orbax). The parameter pytree is ``nnx.to_pure_dict`` of the
model's ``nnx.Param`` state (e.g. ``{"embed": [V, D], "layers": {0: {"attn": {"q": {"w": [D, N, H]}}}}}``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from grpojax.models.config import QwenConfig
from grpojax.models.hf_io import has_lora, prepare_out_dir
from grpojax.models.qwen import Qwen

CONFIG_FILE = "qwen_config.json"


def save_orbax(model: Qwen, out_dir: str, *, overwrite: bool = False) -> str:
    """Writes ``out_dir/params`` (Orbax) and ``out_dir/qwen_config.json``; refuses a non-empty out_dir
    unless ``overwrite`` (then only ``params`` and the config file are replaced)."""
    if has_lora(model):
        raise ValueError("save_orbax: the model has LoRA adapters; call merge_lora(model) first")
    out_dir = os.path.abspath(out_dir)
    prepare_out_dir(out_dir, overwrite)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    meta = {"config": dataclasses.asdict(model.config), "with_lm_head": model.lm_head is not None,
            "param_dtype": str(jnp.dtype(model.embed[...].dtype))}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(out_dir, "params"), params, force=overwrite)
        ckptr.wait_until_finished()
    with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    return out_dir


def load_orbax(ckpt_dir: str, *, dtype: Any = None) -> Qwen:
    """Restores a :class:`Qwen` written by :func:`save_orbax` (``dtype``: compute dtype; default the
    stored parameter dtype)."""
    ckpt_dir = os.path.abspath(ckpt_dir)
    meta_path = os.path.join(ckpt_dir, CONFIG_FILE)
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{meta_path}: missing (not a grpojax Orbax model checkpoint)")
    with open(meta_path) as f:
        meta = json.load(f)
    try:
        cfg = QwenConfig(**meta["config"])
    except TypeError as err:
        raise ValueError(f"{meta_path}: bad 'config' entry: {err}") from err
    param_dtype = jnp.dtype(meta.get("param_dtype", "float32"))
    dtype = param_dtype if dtype is None else dtype
    abstract = nnx.eval_shape(lambda: Qwen(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0),
                                           with_lm_head=meta.get("with_lm_head", True)))
    graphdef, state = nnx.split(abstract)
    target = nnx.to_pure_dict(state)
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(os.path.join(ckpt_dir, "params"), target)
    restored = jax.tree.map(jnp.asarray, restored)
    nnx.replace_by_pure_dict(state, restored)
    return nnx.merge(graphdef, state)
