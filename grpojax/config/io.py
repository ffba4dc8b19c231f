"""Reading and writing configs: YAML files and ``key=value`` overrides -> typed, validated, frozen
dataclasses (unknown keys and bad values are ``UserError``s naming the file and the dotted key), and back
to YAML / JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from typing import Literal, Union

import yaml

from grpojax import cli
from grpojax.cli import UserError
from grpojax.config.checks import Invalid
from grpojax.config.presets import resolve_config_path, resolve_shipped_paths
from grpojax.config.runs import KINDS, SCHEMAS, RunConfig


def load_config(path: str, overrides: list[str] | tuple[str, ...] = (), kind: str | None = None) -> RunConfig:
    """Reads a YAML config, applies ``key=value`` overrides, validates, and returns the frozen config.

    Args:
      path: a YAML file holding a mapping (values only), or the name of a shipped preset
        (``grpojax.config.presets``: ``tiny_grpo``, ``grpo_qwen2.5-0.5b``). Its top-level ``kind`` key picks
        the schema unless ``kind`` is given; when both are present they must agree. Values ``configs/...``
        that are not files here name the shipped files (the presets' tiny data and tokenizer).
      overrides: ``"section.key=value"`` strings applied after the file (dotted paths, e.g.
        ``train.steps=10``, ``model.lora.rank=8``, ``grpo.aspects=[safety,helpfulness]``, ``export_hf=null``).
        Values are parsed as YAML scalars/lists and coerced to the field's type.
      kind: ``"grpo" | "reward" | "dpo" | "sft"``.

    Raises:
      UserError: missing/unreadable file, bad YAML, unknown key (names the file and lists the valid keys),
        wrong type, or an invalid value (names the dotted key).
    """
    raw = _read_yaml(resolve_config_path(path))
    file_kind = raw.get("kind")
    if kind is None and file_kind is None:
        raise UserError(f"{path}: no 'kind' key and no kind given; add 'kind: grpo|reward|dpo|sft'")
    if kind is not None and kind not in SCHEMAS:
        raise UserError(f"unknown config kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if file_kind is not None and file_kind not in SCHEMAS:
        raise UserError(f"{path}: kind: {file_kind!r} is not one of {', '.join(KINDS)}")
    if kind is not None and file_kind is not None and kind != file_kind:
        raise UserError(f"{path}: this is a kind={file_kind!r} config but this script needs kind={kind!r}")
    kind = kind or file_kind
    raw = dict(raw, kind=kind)
    for item in overrides:
        _apply_override(raw, item, SCHEMAS[kind])
    return _build(SCHEMAS[kind], resolve_shipped_paths(raw), source=path)


def config_from_dict(d: dict, kind: str | None = None, source: str = "<dict>") -> RunConfig:
    """Builds and validates a config from a plain (e.g. JSON-restored) dict; same checks as YAML files."""
    kind = kind or d.get("kind")
    if kind not in SCHEMAS:
        raise UserError(f"{source}: kind {kind!r} is not one of {', '.join(KINDS)}")
    return _build(SCHEMAS[kind], dict(d, kind=kind), source=source)


def config_to_dict(cfg) -> dict:
    """The resolved config as plain JSON-able Python (tuples become lists)."""
    return _to_plain(dataclasses.asdict(cfg))


def dump_config(cfg, fmt: Literal["yaml", "json"] = "yaml") -> str:
    """The resolved config as YAML (``kind`` first, section order as in the schema) or JSON text."""
    d = config_to_dict(cfg)
    if fmt == "json":
        return json.dumps(d, indent=2)
    if fmt != "yaml":
        raise ValueError(f"fmt must be 'yaml' or 'json', got {fmt!r}")
    d = {"kind": d.pop("kind"), **d}
    return yaml.safe_dump(d, sort_keys=False, default_flow_style=False)


def write_config(cfg, run_dir: str) -> str:
    """Writes the resolved config to ``<run_dir>/config.yaml`` (atomically) and returns the path. A resumed
    run rewrites it with its own resolved values (only resumable keys such as ``train.steps`` can differ:
    ``grpojax.checkpoint.Checkpointer`` refuses anything else)."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "config.yaml")
    with open(path + ".tmp", "w") as f:
        f.write(dump_config(cfg))
    os.replace(path + ".tmp", path)
    return path


def diff_configs(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two config dicts, skipping ``ignore`` prefixes."""
    out = []

    def walk(a, b, prefix):
        for k in sorted(set(a) | set(b)):
            key = f"{prefix}{k}"
            if any(key == i or key.startswith(i + ".") for i in ignore):
                continue
            va, vb = a.get(k, "<missing>"), b.get(k, "<missing>")
            if isinstance(va, dict) and isinstance(vb, dict):
                walk(va, vb, key + ".")
            elif va != vb:
                out.append(f"{key}: {va!r} -> {vb!r}")

    walk(old, new, "")
    return out


# ----------------------------------------------------------------------------------------------------------
# Parsing: YAML / overrides -> typed, validated dataclasses.

_NULLS = ("null", "none", "~")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"config file not found: {path}")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML: {cli.one_line(str(e))}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    return raw


def _fields(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _apply_override(raw: dict, item: str, schema) -> None:
    """Sets ``raw[a][b] = value`` for ``"a.b=value"`` after checking that ``a.b`` is a schema key."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"bad override {item!r}: expected key=value (e.g. train.steps=10)")
    parts = key.strip().split(".")
    cls, cursor = schema, raw
    for i, part in enumerate(parts):
        fields = _fields(cls)
        here = ".".join(parts[:i])
        if part not in fields:
            where = f" in section '{here}'" if here else ""
            raise UserError(f"override {item!r}: unknown key '{'.'.join(parts[: i + 1])}'; "
                            f"valid keys{where}: {', '.join(fields)}")
        tp = fields[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                raise UserError(f"override {item!r}: '{key}' is a section; set one of its keys: "
                                f"{', '.join(f'{key}.{k}' for k in _fields(tp))}")
            cursor[part] = value
        else:
            if not dataclasses.is_dataclass(tp):
                raise UserError(f"override {item!r}: '{'.'.join(parts[: i + 1])}' is a value, not a section")
            if not isinstance(cursor.get(part), dict):
                cursor[part] = {}
            cls, cursor = tp, cursor[part]


def type_name(tp) -> str:
    """A schema type in words for messages and ``--help`` (``one of a, b``, ``an integer or null``, ...)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is Union:
        return " or ".join(type_name(a) for a in args)
    if origin is tuple:
        return "a list" if len(args) == 2 and args[1] is Ellipsis else f"a list of {len(args)} values"
    return {type(None): "null", int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _coerce(v, tp, source: str, key: str):
    """Coerces a YAML value (or a raw override string) to type ``tp``; UserError naming ``key`` if it can't."""

    def bad(extra=""):
        return UserError(f"{source}: {key}: expected {type_name(tp)}, got {v!r}{extra}")

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, {} if v is None else v, source, key + ".")
    if origin is Union:
        if v is None or (isinstance(v, str) and v.strip().lower() in _NULLS):
            if type(None) in args:
                return None
            raise bad()
        inner = [a for a in args if a is not type(None)]
        return _coerce(v, inner[0], source, key)
    if origin is Literal:
        if v in args:
            return v
        raise UserError(f"{source}: {key}: must be one of {', '.join(map(str, args))}; got {v!r}")
    if origin is tuple:
        if isinstance(v, str):
            s = v.strip()
            if s.startswith("["):
                try:
                    v = yaml.safe_load(s)
                except yaml.YAMLError:
                    raise bad(" (not a valid [a, b, ...] list)") from None
            else:
                v = [p.strip() for p in s.split(",")] if s else []
        if not isinstance(v, (list, tuple)):
            raise bad()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(x, args[0], source, f"{key}[{i}]") for i, x in enumerate(v))
        if len(v) != len(args):
            raise bad(f" (needs exactly {len(args)} values)")
        return tuple(_coerce(x, a, source, f"{key}[{i}]") for i, (x, a) in enumerate(zip(v, args)))
    if tp is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in _TRUE + _FALSE:
            return v.strip().lower() in _TRUE
        raise bad()
    if tp is int:
        if isinstance(v, bool):
            raise bad()
        if isinstance(v, str):
            try:
                v = float(v.strip()) if any(c in v for c in ".eE") else int(v.strip())
            except ValueError:
                raise bad() from None
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, int):
            return v
        raise bad()
    if tp is float:
        if isinstance(v, bool):
            raise bad()
        if isinstance(v, str):
            try:
                return float(v.strip())
            except ValueError:
                raise bad() from None
        if isinstance(v, (int, float)):
            return float(v)
        raise bad()
    if tp is str:
        if isinstance(v, str):
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)
        raise bad()
    raise TypeError(f"config schema uses an unsupported type {tp!r} at {key}")


def _build(cls, raw, source: str, prefix: str = ""):
    """Builds dataclass ``cls`` from mapping ``raw``: unknown keys, types, then ``__post_init__`` checks."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: '{prefix.rstrip('.')}' must be a mapping of keys, got {raw!r}")
    fields = _fields(cls)
    for k in raw:
        if k not in fields:
            where = f" in section '{prefix.rstrip('.')}'" if prefix else " at the top level"
            raise UserError(f"{source}: unknown key '{prefix}{k}'; valid keys{where}: {', '.join(fields)}")
    kwargs = {k: _coerce(v, fields[k], source, prefix + str(k)) for k, v in raw.items()}
    for k, tp in fields.items():  # absent sections: build their defaults here so errors carry the prefix
        if k not in kwargs and dataclasses.is_dataclass(tp):
            kwargs[k] = _build(tp, {}, source, f"{prefix}{k}.")
    try:
        return cls(**kwargs)
    except Invalid as e:
        raise UserError(f"{source}: {prefix}{e.key}: {e.message}") from None


def _to_plain(x):
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x
