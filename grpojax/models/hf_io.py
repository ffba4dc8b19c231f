"""Hugging Face checkpoint import / export for :class:`grpojax.models.Qwen` (safetensors, streamed).

One table (:func:`hf_name_table`) maps every HF tensor name to our parameter path and says how the
layouts differ:

    kind "same":   HF tensor == our parameter (embeddings, norms, ``lm_head.weight`` [V, D])
    kind "linear": HF ``nn.Linear`` weight ``[out, in]`` == ours ``[*in_shape, *out_shape]`` transposed
                   and reshaped (e.g. ``q_proj.weight [N*H, D]`` <-> ``w_DNH``, ``o_proj [D, N*H]`` <-> ``w_NHD``)
    kind "bias":   HF ``[out]`` == ours ``out_shape`` reshaped (``q_proj.bias [N*H]`` <-> ``b_NH``)

With ``config.scan_layers`` the per-layer HF tensors ``model.layers.{i}.*`` are row ``i`` of our stacked
``layers.*`` parameters (``Entry.layer``).

Every tensor's shape is checked against the shape the config implies, and missing / unexpected
tensors are errors that name the tensor and the file. Tensors are read one at a time with
``safetensors.safe_open`` (memory-mapped, one tensor at a time), so peak host memory stays near the size
of the model (``benchmarks/load_memory.py`` measures it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from grpojax.models.config import QwenConfig, config_from_hf_dict, config_to_hf_dict
from grpojax.models.qwen import Dense, Qwen

_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of the name table: HF tensor name, our parameter path, layout kind, input rank, and the
    index along the leading axis of a stacked (``scan_layers``) parameter (None: the whole parameter)."""
    hf_name: str
    path: tuple
    kind: str  # "same" | "linear" | "bias"
    n_in: int = 1
    layer: int | None = None


def hf_name_table(cfg: QwenConfig, *, lm_head: bool = True, prefix: tuple = ()) -> list[Entry]:
    """All (HF name, our path) pairs of a Qwen checkpoint for ``cfg``; ``prefix`` prepends our path."""
    def e(hf, path, kind="same", n_in=1, layer=None):
        return Entry(hf, prefix + tuple(int(p) if p.isdigit() else p for p in path.split(".")), kind, n_in,
                     layer)

    rows = [e("model.embed_tokens.weight", "embed"), e("model.norm.weight", "final_norm.scale")]
    for i in range(cfg.num_layers):
        hf, us = f"model.layers.{i}", "layers" if cfg.scan_layers else f"layers.{i}"
        row = functools.partial(e, layer=i if cfg.scan_layers else None)
        rows += [row(f"{hf}.input_layernorm.weight", f"{us}.attn_norm.scale"),
                 row(f"{hf}.post_attention_layernorm.weight", f"{us}.mlp_norm.scale")]
        for p in "qkv":
            rows.append(row(f"{hf}.self_attn.{p}_proj.weight", f"{us}.attn.{p}.w", "linear"))
            if cfg.qkv_bias:
                rows.append(row(f"{hf}.self_attn.{p}_proj.bias", f"{us}.attn.{p}.b", "bias"))
        rows.append(row(f"{hf}.self_attn.o_proj.weight", f"{us}.attn.o.w", "linear", n_in=2))
        if cfg.qk_norm:
            rows += [row(f"{hf}.self_attn.q_norm.weight", f"{us}.attn.q_norm.scale"),
                     row(f"{hf}.self_attn.k_norm.weight", f"{us}.attn.k_norm.scale")]
        for p in ("gate", "up", "down"):
            rows.append(row(f"{hf}.mlp.{p}_proj.weight", f"{us}.mlp.{p}.w", "linear"))
    if lm_head and not cfg.tie_word_embeddings:
        rows.append(e("lm_head.weight", "lm_head"))
    return rows


def hf_shape(entry: Entry, our_shape: tuple) -> tuple:
    """The HF tensor shape that corresponds to our parameter shape under ``entry.kind``."""
    if entry.kind == "linear":
        return (math.prod(our_shape[entry.n_in:]), math.prod(our_shape[:entry.n_in]))
    if entry.kind == "bias":
        return (math.prod(our_shape),)
    return tuple(our_shape)


def to_ours(entry: Entry, x, our_shape: tuple) -> np.ndarray:
    """HF tensor -> our layout (NumPy on the host: no XLA compilation per tensor shape)."""
    x = np.asarray(x)
    if entry.kind == "linear":
        return np.ascontiguousarray(x.T).reshape(our_shape)
    return x.reshape(our_shape)


def to_theirs(entry: Entry, x) -> np.ndarray:
    """Our parameter -> HF layout (a contiguous NumPy array)."""
    x = np.asarray(x)
    if entry.kind == "linear":
        return np.ascontiguousarray(x.reshape(math.prod(x.shape[:entry.n_in]), -1).T)
    if entry.kind == "bias":
        return x.reshape(-1)
    return x


def resolve_checkpoint(path_or_hub_id: str) -> str:
    """A local directory, or a hub id fetched through ``huggingface_hub.snapshot_download`` (HF cache).

    Offline (``HF_HUB_OFFLINE=1``) with nothing cached this fails at once with a message saying what to do.
    """
    p = os.path.expanduser(str(path_or_hub_id))
    if os.path.isdir(p):
        return p
    if os.path.exists(p) or p.startswith((".", "/", "~")) or p.count("/") != 1:
        raise FileNotFoundError(f"{path_or_hub_id!r} is not a checkpoint directory nor a hub id "
                                "('owner/name')")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    try:
        return snapshot_download(p, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
    except LocalEntryNotFoundError as err:
        raise FileNotFoundError(
            f"{path_or_hub_id!r} is not in the local Hugging Face cache and the hub cannot be reached "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}). Download it once online "
            f"(`huggingface-cli download {path_or_hub_id}`), unset HF_HUB_OFFLINE, or pass a local "
            "checkpoint directory.") from err


def read_hf_config(ckpt_dir: str) -> dict:
    path = os.path.join(ckpt_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing (a HF checkpoint directory needs config.json)")
    with open(path) as f:
        return json.load(f)


class TensorSource:
    """The tensors of a HF checkpoint: ``model.safetensors`` or shards listed in
    ``model.safetensors.index.json``, read tensor by tensor (memory-mapped)."""

    def __init__(self, ckpt_dir: str):
        index = os.path.join(ckpt_dir, "model.safetensors.index.json")
        single = os.path.join(ckpt_dir, "model.safetensors")
        if os.path.isfile(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            self.file_of = {k: os.path.join(ckpt_dir, v) for k, v in weight_map.items()}
        elif os.path.isfile(single):
            with safe_open(single, framework="numpy") as f:
                self.file_of = {k: single for k in f.keys()}
        else:
            raise FileNotFoundError(f"{ckpt_dir}: no model.safetensors or model.safetensors.index.json "
                                    "(only safetensors checkpoints are supported)")
        for fname in sorted(set(self.file_of.values())):
            if not os.path.isfile(fname):
                raise FileNotFoundError(f"{fname}: shard listed in the index is missing")

    def names(self) -> set:
        return set(self.file_of)

    def read_many(self, names: Iterable[str]):
        """Yields ``(name, file, array)``. Each tensor is read with its own short-lived ``safe_open`` so
        the memory map is released after every tensor: resident memory never holds the whole file on
        top of the converted parameters."""
        for n in names:
            fname = self.file_of[n]
            with safe_open(fname, framework="numpy") as f:
                x = f.get_tensor(n)
            yield n, fname, x


def _get(tree: dict, path: tuple):
    for p in path:
        tree = tree[p]
    return tree


def param_of(pure: dict, entry: Entry):
    """The value ``entry`` names in a pure parameter dict (its row of a stacked parameter)."""
    x = _get(pure, entry.path)
    return x if entry.layer is None else x[entry.layer]


def _set(tree: dict, path: tuple, value):
    for p in path[:-1]:
        tree = tree[p]
    tree[path[-1]] = value


def load_into(abstract: nnx.Module, entries: list[Entry], source: TensorSource, *, param_dtype: Any,
              allowed_extra: Iterable[str] = (), partial: bool = False) -> nnx.Module:
    """Fills the ``nnx.Param`` leaves of an abstract module (from ``nnx.eval_shape``) with the tensors
    ``entries`` name. Other variables stay abstract; with ``partial=True`` so may Params outside the table
    (the caller sets them afterwards)."""
    graphdef, state, rest = nnx.split(abstract, nnx.Param, ...)
    pure = nnx.to_pure_dict(state)
    names = source.names()
    missing = [e.hf_name for e in entries if e.hf_name not in names]
    if missing:
        raise ValueError(f"checkpoint is missing tensor {missing[0]!r} ({len(missing)} missing in all)")
    known = {e.hf_name for e in entries} | set(allowed_extra)
    extra = sorted(n for n in names - known if not n.endswith(_IGNORED_SUFFIXES))
    if extra:
        raise ValueError(f"unexpected tensor {extra[0]!r} in {source.file_of[extra[0]]} "
                         f"({len(extra)} unexpected in all): not part of this architecture")
    by_name = {e.hf_name: e for e in entries}
    stacks = {}  # path -> host buffer of a stacked (scan_layers) parameter, filled row by row
    for name, fname, x in source.read_many(e.hf_name for e in entries):
        entry = by_name[name]
        target = stacks.get(entry.path, _get(pure, entry.path))
        shape = tuple(target.shape) if entry.layer is None else tuple(target.shape[1:])
        want = hf_shape(entry, shape)
        if tuple(x.shape) != want:
            raise ValueError(f"tensor {name!r} in {fname} has shape {tuple(x.shape)}, expected {want} "
                             "from config.json")
        value = to_ours(entry, x, shape).astype(jnp.dtype(param_dtype), copy=False)
        if entry.layer is None:
            _set(pure, entry.path, jnp.asarray(value))
        else:
            if entry.path not in stacks:
                stacks[entry.path] = np.empty(target.shape, jnp.dtype(param_dtype))
            stacks[entry.path][entry.layer] = value
        del x
    for path in list(stacks):  # each host buffer is freed as soon as it is converted
        _set(pure, path, jnp.asarray(stacks.pop(path)))
    left = [p for p, v in jax.tree_util.tree_flatten_with_path(pure)[0]
            if isinstance(v, jax.ShapeDtypeStruct)]
    if left and not partial:
        raise ValueError(f"parameters without a HF tensor in the table: {left[:3]}")
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state, rest)


def from_hf(path_or_hub_id: str, *, dtype: Any = jnp.float32, param_dtype: Any = None,
            scan_layers: bool = False, remat: str = "none", attention: str = "einsum") -> Qwen:
    """Loads a HF Qwen2 / Qwen2.5 / Qwen3 causal-LM checkpoint (directory or hub id) as a :class:`Qwen`.

    Args:
      path_or_hub_id: checkpoint directory (``config.json`` + safetensors, single or sharded) or hub id.
      dtype: compute dtype (float32 or bfloat16).
      param_dtype: parameter storage dtype (default: ``dtype``).
      scan_layers: stack the layers for ``jax.lax.scan`` (see ``QwenConfig.scan_layers``).
      remat: rematerialisation policy of training forwards (``Qwen(remat=...)``).
      attention: attention implementation (``Qwen(attention=...)``, :mod:`grpojax.models.attention`).
    """
    ckpt = resolve_checkpoint(path_or_hub_id)
    raw = read_hf_config(ckpt)
    cfg = config_from_hf_dict(raw, source=os.path.join(ckpt, "config.json")).replace(scan_layers=scan_layers)
    param_dtype = dtype if param_dtype is None else param_dtype
    abstract = nnx.eval_shape(lambda: Qwen(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0),
                                           remat=remat, attention=attention))
    allowed = ["lm_head.weight"] if cfg.tie_word_embeddings else []
    return load_into(abstract, hf_name_table(cfg), TensorSource(ckpt), param_dtype=param_dtype,
                     allowed_extra=allowed)


def has_lora(model: nnx.Module) -> bool:
    return any(isinstance(m, Dense) and m.lora is not None for _, m in nnx.iter_graph(model))


def prepare_out_dir(out_dir: str, overwrite: bool) -> None:
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True to replace its files")
    os.makedirs(out_dir, exist_ok=True)


def write_tensors(out_dir: str, tensors: dict, max_shard_bytes: int | None) -> None:
    """Writes ``model.safetensors`` or, above ``max_shard_bytes``, shards plus the index json."""
    total = sum(int(np.prod(t.shape)) * t.dtype.itemsize for t in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        return
    shards, cur, size = [], {}, 0
    for name, t in tensors.items():
        nbytes = int(np.prod(t.shape)) * t.dtype.itemsize
        if cur and size + nbytes > max_shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[name], size = t, size + nbytes
    shards.append(cur)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(out_dir, fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in shard})
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def dtype_name(x) -> str:
    return {jnp.dtype(jnp.float32): "float32", jnp.dtype(jnp.bfloat16): "bfloat16",
            jnp.dtype(jnp.float16): "float16"}[jnp.dtype(x.dtype)]


def to_hf(model: Qwen, out_dir: str, *, overwrite: bool = False, max_shard_bytes: int | None = None) -> str:
    """Writes ``model`` as a HF checkpoint (``config.json`` + safetensors) that ``transformers`` loads.

    Refuses a non-empty ``out_dir`` unless ``overwrite=True``, and a model with unmerged LoRA adapters
    (call :func:`grpojax.models.merge_lora` first). Returns ``out_dir``.
    """
    if has_lora(model):
        raise ValueError("to_hf: the model has LoRA adapters; call grpojax.models.merge_lora(model) first")
    cfg = model.config
    if not cfg.tie_word_embeddings and model.lm_head is None:
        raise ValueError("to_hf: this untied Qwen has no LM head (with_lm_head=False); a causal-LM export "
                         "needs one (use reward_model_to_hf for reward models)")
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    entries = hf_name_table(cfg)
    tensors = {e.hf_name: to_theirs(e, param_of(pure, e)) for e in entries}
    prepare_out_dir(out_dir, overwrite)
    hf_cfg = config_to_hf_dict(cfg, extra={"dtype": dtype_name(model.embed[...])})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_cfg, f, indent=2)
    write_tensors(out_dir, tensors, max_shard_bytes)
    return out_dir
