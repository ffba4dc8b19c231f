"""The shipped presets: the YAML configs (and the tiny data / tokenizer they use) inside the package, in
``grpojax/presets/`` (the repository's ``configs/`` is a link to it), addressable by name.

A config argument names a file as usual; when no such file exists it may name a preset:
``tiny_grpo`` / ``tiny_grpo.yaml`` / ``compare/demo`` (a path inside the presets directory, ``.yaml``
optional) or ``configs/tiny_grpo.yaml`` (the clone's spelling). Inside a config, a string value starting
with ``configs/`` (e.g. ``tokenizer.path: configs/data/tiny_tokenizer``) that does not exist relative to
the working directory names the shipped file of that name, so a preset runs from any directory of an
installed package exactly as from the repository root.

Example::

    grpojax train-grpo tiny_grpo train.steps=2 run_dir=/tmp/run
    path = resolve_config_path("grpo_qwen2.5-0.5b")   # .../grpojax/presets/grpo_qwen2.5-0.5b.yaml
"""

from __future__ import annotations

import glob
import os

PRESET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "presets")
PREFIX = "configs/"


def preset_names() -> list[str]:
    """Every shipped preset, as the name that addresses it (``tiny_grpo``, ``compare/demo``, ...)."""
    paths = glob.glob(os.path.join(PRESET_DIR, "**", "*.yaml"), recursive=True)
    return sorted(os.path.relpath(p, PRESET_DIR)[: -len(".yaml")] for p in paths)


def _shipped(rel: str) -> str | None:
    path = os.path.normpath(os.path.join(PRESET_DIR, rel))
    if not path.startswith(PRESET_DIR + os.sep):
        return None
    return path if os.path.exists(path) else None


def resolve_config_path(path: str) -> str:
    """``path`` when it is a file; else the shipped preset it names (see the module docstring); else
    ``path`` unchanged (the caller reports the missing file)."""
    if os.path.isfile(path) or os.path.isabs(path):
        return path
    rel = path[len(PREFIX):] if path.startswith(PREFIX) else path
    for cand in (rel, rel + ".yaml"):
        found = _shipped(cand)
        if found and os.path.isfile(found):
            return found
    return path


def resolve_shipped_paths(raw):
    """``raw`` (a parsed config) with every string value ``configs/...`` that does not exist relative to
    the working directory but is a shipped file replaced by that file's absolute path."""
    if isinstance(raw, dict):
        return {k: resolve_shipped_paths(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [resolve_shipped_paths(v) for v in raw]
    if isinstance(raw, str) and raw.startswith(PREFIX) and not os.path.exists(raw):
        return _shipped(raw[len(PREFIX):]) or raw
    return raw
