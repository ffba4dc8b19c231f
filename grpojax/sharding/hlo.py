"""What a compiled program moves between devices: collective ops and their bytes, read from XLA's HLO text.

    text = jax.jit(f).lower(*args).compile().as_text()
    collective_bytes(text)                        # {"all-gather": bytes, ...}: every instruction once
    loop_collective_bytes(text, "decode_loop")    # ONE iteration of the loop under jax.named_scope("decode_loop")

Bytes are each collective's per-device output size (``bf16[8,128]`` = 2048); a collective XLA:TPU runs
as an async collective fusion counts once. :func:`loop_collective_bytes`
finds the ``while`` whose op name ends in ``<scope>/while`` and sums its body with every loop nested in it
weighted by its trip count (XLA's ``known_trip_count``, else the ``i < N`` of its condition: a
``lax.scan`` over 28 stacked layers counts 28 times; TPU's windowed-einsum loops their window count),
the larger branch of a conditional, and everything called from there (fusions, calls): what one
iteration of that loop moves, e.g. per decoded token for the sampler (``grpojax.sampling.DECODE_SCOPE``).
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
_TRIPS = re.compile(r'known_trip_count"?\s*:\s*\{\s*"?n"?\s*:\s*"?(\d+)')
_OP_NAME = re.compile(r'op_name="([^"]*)"')


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


def _continuations(comps: dict[str, list[str]]) -> set[str]:
    """Computations holding a copy of a collective that another instruction already started: TPU's async
    collective fusions (``async-collective-start`` calls the collective; each ``async_collective_fusion.*``
    step of the pipelined matmul and the ``async-collective-done`` repeat it). Counted at the start only."""
    out = {n for n in comps if n.startswith("async_collective_fusion")}
    for lines in comps.values():
        for ln in lines:
            m = _INSTR.match(ln)
            if m and m.group(1).startswith("async-collective-done"):  # a fusion instruction of that name
                out.update(r for r in _REF.findall(ln) if r in comps)
    return out


def _shape_bytes(shape_text: str) -> int:
    total = 0
    for dtype, dims in _SHAPE.findall(shape_text):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * _DTYPE_BYTES[dtype]
    return total


def _collective(line: str) -> tuple[str, int] | None:
    """``(op, bytes)`` if ``line`` is a collective (an async ``*-start`` counts its output; ``*-done`` not)."""
    m = _INSTR.match(line)
    if not m:
        return None
    op = m.group(3)
    base = op[:-len("-start")] if op.endswith("-start") else op
    if base not in COLLECTIVES:
        return None
    shape = m.group(2)
    if op.endswith("-start") and shape.startswith("("):  # async: (operand, output[, ...])
        parts = _SHAPE.findall(shape)
        shape = "{}[{}]".format(*parts[1]) if len(parts) > 1 else shape
    return base, _shape_bytes(shape)


def _trip_count(while_line: str, comps: dict[str, list[str]]) -> int:
    """XLA's ``known_trip_count`` of a while instruction; else, for a condition ``i < N`` on a counter (what
    ``lax.scan`` / ``fori_loop`` and XLA's windowed-einsum loops compile to, counting from 0 by 1), N;
    else 1 (the body counted once)."""
    trips = _TRIPS.search(while_line)
    if trips:
        return int(trips.group(1))
    cond = re.search(r"\bcondition=%?([\w.\-]+)", while_line)
    lines = comps.get(cond.group(1), []) if cond else []
    consts = [int(m.group(1)) for ln in lines for m in [re.search(r"[su]32\[\][^=]*constant\((\d+)\)", ln)] if m]
    compares = [ln for ln in lines if " compare(" in ln and "direction=LT" in ln]
    return consts[0] if len(consts) == 1 and len(compares) == 1 else 1


def collective_bytes(hlo_text: str) -> dict[str, int]:
    """``{op: bytes}`` of every collective instruction of the program, each counted once (a loop body's
    ops once, whatever the trip count); ops absent from the program are 0."""
    comps = _computations(hlo_text)
    skip = _continuations(comps)
    out = dict.fromkeys(COLLECTIVES, 0)
    for name, lines in comps.items():
        if name in skip:
            continue
        for ln in lines:
            c = _collective(ln)
            if c:
                out[c[0]] += c[1]
    return out


def loop_collective_bytes(hlo_text: str, scope: str) -> dict[str, int]:
    """``{op: bytes}`` moved by ONE iteration of the ``while`` loop traced under ``jax.named_scope(scope)``
    (see the module docstring). Raises ValueError when no such loop is in the program."""
    comps = _computations(hlo_text)
    body = None
    for lines in comps.values():
        for ln in lines:
            name = _OP_NAME.search(ln)
            m = re.search(r"\bbody=%?([\w.\-]+)", ln)
            if " while(" in ln and m and name and name.group(1).endswith(f"{scope}/while"):
                body = m.group(1)
    if body is None:
        raise ValueError(f"no while loop named '{scope}/while' in the program")
    memo: dict[str, dict[str, int]] = {n: dict.fromkeys(COLLECTIVES, 0) for n in _continuations(comps)}

    def weighted(comp: str, stack: tuple = ()) -> dict[str, int]:
        if comp in memo:
            return memo[comp]
        out = dict.fromkeys(COLLECTIVES, 0)
        for ln in comps.get(comp, ()):
            c = _collective(ln)
            if c:
                out[c[0]] += c[1]
                continue
            m = re.search(r"\bbody=%?([\w.\-]+)", ln)
            if " while(" in ln and m:
                callees, times = [m.group(1)], _trip_count(ln, comps)
            elif " conditional(" in ln:  # one branch runs: the larger one
                branches = [weighted(r, stack + (comp,)) for r in _REF.findall(ln.split("(", 1)[1])
                            if r in comps and r not in stack]
                best = max(branches, key=lambda d: sum(d.values()), default={})
                for k, v in best.items():
                    out[k] += v
                continue
            else:
                callees, times = [r for r in _REF.findall(ln) if r in comps], 1
            for callee in callees:
                if callee in stack or callee == comp:
                    continue
                for k, v in weighted(callee, stack + (comp,)).items():
                    out[k] += times * v
        memo[comp] = out
        return out

    return weighted(body)


__all__ = ["collective_bytes", "loop_collective_bytes", "COLLECTIVES"]
