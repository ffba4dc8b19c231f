"""Every config key with its type, default and one-line description, read from the schema dataclasses.

Each field of a config dataclass carries its description as an *attribute docstring*: a string literal on
the line right after the field (``steps: int = 100`` then a line ``"Optimizer steps to train for."`` in triple quotes).
:func:`field_docs` reads them with ``ast`` from the class's source (and its bases', for inherited fields);
:func:`describe_keys` walks a run schema into dotted keys; :func:`help_text` is what ``--help`` prints
under a command's usage line. ``tests/test_config_help.py`` fails when any field lacks a description.

Example::

    for key in describe_keys(SCHEMAS["grpo"]):
        print(key.name, key.default, key.doc)
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
import typing
from typing import NamedTuple

import yaml


class Key(NamedTuple):
    """One dotted config key: ``name`` (``train.steps``), ``type`` (words), ``default`` (YAML text),
    ``doc`` (one line; empty when the field has no attribute docstring), ``section`` (a dataclass)."""

    name: str
    type: str
    default: str
    doc: str
    section: bool


@functools.cache
def _own_docs(cls) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (e.g. a frozen build): no descriptions
        return {}
    body = ast.parse(source).body[0].body
    docs = {}
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def field_docs(cls) -> dict[str, str]:
    """``{field name: description}`` of dataclass ``cls``: attribute docstrings of the class and its bases
    (a subclass's own docstring for a field wins)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            out.update(_own_docs(klass))
    return out


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory
    return dataclasses.MISSING


def _yaml(v) -> str:
    if isinstance(v, tuple):
        v = list(v)
    return yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def describe_keys(schema, prefix: str = "") -> list[Key]:
    """Every key of dataclass ``schema`` (sections first, then their keys, depth-first, schema order)."""
    from grpojax.config.io import type_name

    hints, docs, out = typing.get_type_hints(schema), field_docs(schema), []
    for f in dataclasses.fields(schema):
        tp, name = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(tp):
            out.append(Key(name, "section", "", docs.get(f.name, ""), True))
            out.extend(describe_keys(tp, name + "."))
            continue
        d = _default(f)
        default = "(required)" if d is dataclasses.MISSING else _yaml(d() if callable(d) else d)
        out.append(Key(name, type_name(tp), default, docs.get(f.name, ""), False))
    return out


def help_text(*kinds: str) -> str:
    """The config keys of ``kinds`` for ``--help``: one line per key, ``name = default  description``,
    sections as headings; with several kinds, every key of any of them once (schema order)."""
    from grpojax.config.runs import SCHEMAS

    keys = list({k.name: k for kind in kinds for k in describe_keys(SCHEMAS[kind]) if k.name != "kind"}.values())
    width = min(max(len(f"{k.name} = {k.default}") for k in keys if not k.section), 44)
    lines = [f"config keys of kind={' / '.join(kinds)} (YAML file and key=value overrides; value = default):"]
    for k in keys:
        if k.section:
            lines.append(f"  [{k.name}]  {k.doc}")
            continue
        left = f"{k.name} = {k.default}"
        lines.append(f"    {left}{' ' * max(1, width - len(left) + 2)}{k.doc}")
    return "\n".join(lines)
