"""What a compiled program moves between devices: collective ops and their bytes, read from XLA's HLO text.

    text = jax.jit(f).lower(*args).compile().as_text()
    collective_bytes(text)                  # {"all-gather": bytes, "all-reduce": ..., ...} of the program
    collective_bytes(text, in_loops=True)   # only inside while-loop bodies (e.g. per decoded token)

Bytes are each collective's per-device output size (``f32[8,128]`` = 4096), summed over the instructions
of the computations read; an op in a loop body is counted once (multiply by the trip count yourself).
``in_loops`` reads every computation reachable from a ``while`` body (nested loops, calls, branches):
for the sampler, whose only non-RNG loop is the decoding loop, that is one decoding step's traffic.
"""

from __future__ import annotations

import re

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][\w\-]*)\(")
_SHAPE = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")
_REF = re.compile(r"%([\w.\-]+)")


def _computations(text: str) -> dict[str, list[str]]:
    comps, name = {}, None
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m and not line.startswith(" "):
            name = m.group(1)
            comps[name] = []
        elif line.startswith("}"):
            name = None
        elif name is not None and line.strip():
            comps[name].append(line)
    return comps


def _shape_bytes(shape_text: str) -> int:
    total = 0
    for dtype, dims in _SHAPE.findall(shape_text):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * _DTYPE_BYTES[dtype]
    return total


def collective_bytes(hlo_text: str, *, in_loops: bool = False) -> dict[str, int]:
    """``{op: bytes}`` of the collectives in compiled HLO text (see the module docstring); ops absent from
    the program are 0. ``*-start`` / ``*-done`` async pairs count once (the start's output is the data)."""
    comps = _computations(hlo_text)
    if in_loops:
        todo = [m.group(1) for lines in comps.values() for ln in lines
                for m in [re.search(r"\bbody=%?([\w.\-]+)", ln)] if m and " while(" in ln]
        names: set[str] = set()
        while todo:
            n = todo.pop()
            if n in names or n not in comps:
                continue
            names.add(n)
            todo.extend(r for ln in comps[n] for r in _REF.findall(ln) if r in comps)
    else:
        names = set(comps)
    out = dict.fromkeys(COLLECTIVES, 0)
    for n in names:
        for ln in comps[n]:
            m = _INSTR.match(ln)
            if not m:
                continue
            op = m.group(3)
            base = op[:-len("-start")] if op.endswith("-start") else op
            if base in out:
                shape = m.group(2)
                if op.endswith("-start") and shape.startswith("("):  # async: (operand, output[, ...])
                    parts = _SHAPE.findall(shape)
                    shape = "{}[{}]".format(*parts[1]) if len(parts) > 1 else shape
                out[base] += _shape_bytes(shape)
    return out


__all__ = ["collective_bytes", "COLLECTIVES"]
