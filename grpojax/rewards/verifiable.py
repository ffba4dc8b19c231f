"""Verifiable rewards: the final answer of a completion checked against the dataset's answer, and a
required tag format. Plain Python on decoded text, in TRL's reward-function convention::

    fn(prompts, completions, **columns) -> list[float | None]

where every other dataset column arrives as a list aligned with ``completions`` (``answer`` or
``solution`` here) and ``None`` means "not applicable" (a NaN aspect, skipped by the aggregation).

Final answer of a text (:func:`extract_answer`), the first rule that applies, each on its LAST occurrence:

1. ``\\boxed{...}`` (or ``\\fbox{...}``), braces nested to any depth: ``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``;
2. an ``<answer>...</answer>`` tag;
3. GSM8K's ``#### 42`` (the rest of that line);
4. ``the answer is 42`` / ``answer: 42`` (up to the end of that sentence or line);
5. the last non-empty line.

Comparison (:func:`answers_match`): when the reference is a number, the candidate's last number (in the
extracted span) must equal it exactly as a rational: ``"1,000"`` = ``"1000"`` = ``"1000.0"``, ``"-3"``,
``"3/4"`` = ``"0.75"`` = ``"\\frac{3}{4}"``, ``"50%"`` = ``"50"``; otherwise the two strings must be equal
after normalisation (:func:`normalize_text`: case-folded, ``$`` / ``\\text{}`` / ``\\left`` / ``\\right``
removed, whitespace dropped, one trailing period removed). A reference such as GSM8K's full solution
(``"... #### 72"``) or a ``\\boxed{}`` one is reduced by the same extraction first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_HASH = re.compile(r"####\s*([^\n]*)")
_SAYS = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|answer\s*:)\s*:?\s*([^\n]*)", re.IGNORECASE)
_NUMBER = re.compile(r"(?:(?<![\w)])-)?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:\s*/\s*-?\d+)?%?")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.]+)\s*\}\s*\{\s*(-?[\d.]+)\s*\}")


def _boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}`` in ``text`` (balanced braces; an unclosed one is skipped)."""
    out = []
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end():i - 1])
    return out


def extract_answer(text: str) -> str | None:
    """The final-answer span of ``text`` (module docstring: boxed, answer tag, ``####``, "the answer is",
    last line), stripped; None for a text with no non-blank line."""
    for found in (_boxed_contents(text), _TAG.findall(text), _HASH.findall(text)):
        if found:
            return found[-1].strip()
    said = _SAYS.findall(text)
    if said:  # up to the end of that sentence: "the answer is 42. Next, ..." -> "42"
        return re.split(r"\.(?:\s|$)", said[-1], maxsplit=1)[0].strip()
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else None


def parse_number(text: str) -> Fraction | None:
    """``text`` as an exact rational when it is one number: ``"1,000"``, ``"-3"``, ``"1000.0"``, ``"3/4"``,
    ``"\\frac{3}{4}"``, ``"50%"``, ``"$12.50"`` (surrounding ``$``, spaces and one trailing period allowed);
    None otherwise."""
    s = _FRAC.sub(r"\1/\2", text.strip()).replace("$", "").replace("\\%", "%").strip().rstrip(".").strip()
    m = re.fullmatch(r"(-?)\s*(\d{1,3}(?:,\d{3})+|\d+|\d*\.\d+|\d+\.\d*)(?:\s*/\s*(-?\d+))?\s*(%?)", s)
    if m is None:
        return None
    value = Fraction(m.group(2).replace(",", ""))
    if m.group(3) is not None:
        if int(m.group(3)) == 0:
            return None
        value /= int(m.group(3))
    return -value if m.group(1) else value


def last_number(text: str) -> Fraction | None:
    """The last number written in ``text`` (``\\frac{a}{b}`` and ``a/b`` count as one number), or None."""
    found = _NUMBER.findall(_FRAC.sub(r"\1/\2", text))
    return parse_number(found[-1].replace(" ", "")) if found else None


def normalize_text(text: str) -> str:
    """Case-folded ``text`` without ``$``, ``\\text{...}`` wrappers, ``\\left`` / ``\\right``, whitespace and
    one trailing period (for non-numeric answers)."""
    s = re.sub(r"\\(?:text|mathrm|textbf)\s*\{([^{}]*)\}", r"\1", text)
    s = s.replace("$", "").replace("\\left", "").replace("\\right", "")
    s = re.sub(r"\s+", "", s).rstrip(".")
    return s.casefold()


def reference_answer(reference: str) -> str:
    """The answer inside a reference: its ``\\boxed{}`` / ``####`` / answer-tag span when it has one (GSM8K's
    ``answer`` column is a full solution ending in ``#### 72``), else the whole reference."""
    for found in (_boxed_contents(reference), _HASH.findall(reference), _TAG.findall(reference)):
        if found:
            return found[-1].strip()
    return reference.strip()


def answers_match(completion: str, reference) -> bool:
    """Whether ``completion``'s final answer equals ``reference`` (a string or a number; module docstring)."""
    ref = reference_answer(str(reference)) if not isinstance(reference, (int, float)) else str(reference)
    span = extract_answer(completion)
    if span is None:
        return False
    ref_number = parse_number(ref)
    if ref_number is not None:
        return last_number(span) == ref_number
    return normalize_text(span) == normalize_text(ref)


def _texts(completions) -> list[str]:
    """Completion strings; a conversational completion (a list of ``{role, content}`` messages, TRL's
    format) gives the content of its last message."""
    out = []
    for c in completions:
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, (list, tuple)) and c and isinstance(c[-1], dict) and "content" in c[-1]:
            out.append(str(c[-1]["content"]))
        else:
            raise TypeError(f"a completion must be a string or a list of messages, got {type(c).__name__}")
    return out


def exact_match_reward(prompts, completions, answer=None, solution=None, *, column: str | None = None,
                       **columns) -> list[float | None]:
    """1.0 where the completion's final answer equals the reference, else 0.0; None where there is no
    reference. The reference column is ``column`` when given, else ``answer``, else ``solution``."""
    del prompts
    if column is not None:
        given = {k: v for k, v in {"answer": answer, "solution": solution, **columns}.items() if v is not None}
        refs = given.get(column)
        if refs is None:
            raise KeyError(f"exact_match: the data has no column {column!r}; columns: {', '.join(given)}")
    else:
        refs = answer if answer is not None else solution
        if refs is None:
            raise KeyError("exact_match needs an 'answer' or 'solution' column in the data "
                           f"(columns: {', '.join(columns) or 'none besides the prompt'})")
    texts = _texts(completions)
    if len(refs) != len(texts):
        raise ValueError(f"exact_match: {len(refs)} references for {len(texts)} completions")
    return [None if r is None or (isinstance(r, str) and not r.strip()) else float(answers_match(t, r))
            for t, r in zip(texts, refs)]


def tag_format_reward(completions, tags: Sequence[str] = ("think", "answer")) -> list[float]:
    """1.0 where the completion is exactly the ``tags`` blocks in order, ``<t>...</t>`` each, separated and
    surrounded only by whitespace (``<think>...</think><answer>...</answer>`` by default; DeepSeek-R1's
    format reward), else 0.0. Block contents may span lines but may not contain another block's tags."""
    if isinstance(tags, str) or not tags or not all(re.fullmatch(r"[A-Za-z_][\w-]*", t) for t in tags):
        raise ValueError(f"tag_format_reward: tags must be a non-empty list of tag names, got {tags!r}")
    blocks = r"\s*".join(rf"<{t}>(?:(?!</?(?:{'|'.join(tags)})>).)*</{t}>" for t in tags)
    rx = re.compile(rf"\s*{blocks}\s*", re.DOTALL)
    return [1.0 if rx.fullmatch(t) else 0.0 for t in _texts(completions)]


def format_reward(prompts, completions, **columns) -> list[float]:
    """:func:`tag_format_reward` with the default ``<think>...</think><answer>...</answer>`` structure."""
    del prompts, columns
    return tag_format_reward(completions)
