"""Data sets of the demo world: SFT rows, reward-model rows, GRPO prompts; JSONL I/O; sanity statistics.

Every generator is deterministic given ``seed`` (each uses its own ``numpy`` stream) and returns plain
lists of dicts; :func:`to_dataset` wraps them as ``datasets.Dataset``. Common row keys:

- ``request`` / ``response``: raw text; ``prompt`` = ``format_prompt(request)`` (ends with
  ``<|assistant|>``); ``completion`` = ``format_completion(response)`` (leading space, ends with
  ``<|eos|>``); ``topic``, ``harmful``; ``perturbed`` (the response was corrupted by
  :func:`perturb_response`; reward-model training rows only).
- one float per aspect of :data:`grpojax.demo.scorers.ASPECTS` (the ground-truth scores), NaN where a
  reward-model label is missing (written as ``null`` in JSONL).

Splits: SFT, reward-model training and GRPO training use the *train* requests of
:func:`grpojax.demo.world.split_requests`; the reward model's held-out rows and the GRPO held-out prompts
use the *held-out* requests (unseen template x task combinations).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np

from grpojax.demo.scorers import ASPECTS, score_all
from grpojax.demo.tokenizer import format_completion, format_prompt
from grpojax.demo.world import (
    BALANCED_TOPICALITY,
    SFT_TOPICALITY,
    Request,
    compose_response,
    sample_spec,
    split_requests,
)

_STREAMS = {"sft": 10, "reward_train": 11, "reward_heldout": 12}


def _row(request: Request, response: str) -> dict:
    return dict(request=request.text, response=response, prompt=format_prompt(request.text),
                completion=format_completion(response), topic=request.topic, harmful=request.harmful,
                **score_all(request.text, response))


def perturb_response(response: str, rng: np.random.Generator) -> str:
    """A corrupted copy of a response, like early or drifting model output.

    One of: drop 1-4 random words; repeat a random span of 2-6 words; truncate after a random word;
    shuffle the sentences (split at ``.`` / ``!``).
    """
    ws = response.split()
    if not ws:
        return response
    kind = int(rng.integers(4))
    if kind == 0:
        drop = set(rng.choice(len(ws), size=min(len(ws) - 1, int(rng.integers(1, 5))), replace=False))
        ws = [w for i, w in enumerate(ws) if i not in drop]
    elif kind == 1:
        i = int(rng.integers(len(ws)))
        ws = ws[:i] + ws[i:i + int(rng.integers(2, 7))] + ws[i:]
    elif kind == 2:
        ws = ws[:int(rng.integers(1, len(ws) + 1))]
    else:
        sentences, cur = [], []
        for w in ws:
            cur.append(w)
            if w in (".", "!"):
                sentences.append(cur)
                cur = []
        sentences += [cur] if cur else []
        ws = [w for k in rng.permutation(len(sentences)) for w in sentences[k]]
    return " ".join(ws)


def _sample_rows(requests: Sequence[Request], n: int, rng: np.random.Generator,
                 p_perturb: float = 0.0, p_topicality=BALANCED_TOPICALITY) -> list[dict]:
    rows = []
    for _ in range(n):
        request = requests[int(rng.integers(len(requests)))]
        response = compose_response(request, sample_spec(rng, request.harmful, p_topicality=p_topicality), rng)
        perturbed = bool(p_perturb > 0 and rng.random() < p_perturb)
        if perturbed:
            response = perturb_response(response, rng)
        rows.append(dict(_row(request, response), perturbed=perturbed))
    return rows


def sft_rows(seed: int = 0, n: int = 2000, p_topicality=SFT_TOPICALITY) -> list[dict]:
    """``n`` SFT rows on train requests, every response part drawn independently (mixed quality).

    Topicality is mostly on-topic (``p_topicality`` = on / mixed / off, default
    :data:`~grpojax.demo.world.SFT_TOPICALITY`), so that the policy learns that a response is about the
    request's topic; politeness, steps, refusals and forbidden phrases stay mixed.
    """
    train, _ = split_requests(seed)
    return _sample_rows(train, n, np.random.default_rng([seed, _STREAMS["sft"]]), p_topicality=p_topicality)


def reward_rows(seed: int = 0, n_train: int = 3000, n_heldout: int = 500, *,
                missing_frac: float = 0.05, p_perturb: float = 0.2) -> dict[str, list[dict]]:
    """Labelled reward-model rows: ``{"train": [...], "heldout": [...]}``.

    Train rows use train requests; a share ``p_perturb`` of their responses is corrupted by
    :func:`perturb_response` (and scored after corruption) so the model also sees garbled text; each
    aspect label is independently NaN with probability ``missing_frac`` (never all four of a row).
    Held-out rows use the held-out requests, clean responses, and complete labels.
    """
    if not 0.0 <= missing_frac < 1.0:
        raise ValueError(f"missing_frac={missing_frac}; must be in [0, 1)")
    if not 0.0 <= p_perturb <= 1.0:
        raise ValueError(f"p_perturb={p_perturb}; must be in [0, 1]")
    train_req, held_req = split_requests(seed)
    rng = np.random.default_rng([seed, _STREAMS["reward_train"]])
    train = _sample_rows(train_req, n_train, rng, p_perturb)
    for row in train:
        missing = rng.random(len(ASPECTS)) < missing_frac
        if missing.all():
            missing[int(rng.integers(len(ASPECTS)))] = False
        for aspect, m in zip(ASPECTS, missing):
            if m:
                row[aspect] = math.nan
    heldout = _sample_rows(held_req, n_heldout, np.random.default_rng([seed, _STREAMS["reward_heldout"]]))
    return {"train": train, "heldout": heldout}


def grpo_prompts(seed: int = 0) -> dict[str, list[dict]]:
    """GRPO prompt rows ``{"train": [...], "heldout": [...]}``, one per request.

    Row keys: prompt, request, topic, harmful.
    """
    train, held = split_requests(seed)

    def rows(requests):
        return [dict(prompt=format_prompt(r.text), request=r.text, topic=r.topic, harmful=r.harmful)
                for r in requests]

    return {"train": rows(train), "heldout": rows(held)}


def labels_BR(rows: Sequence[dict]) -> np.ndarray:
    """The rows' aspect labels as ``[B, R]`` float32 (columns in ASPECTS order, NaN = missing)."""
    for i, row in enumerate(rows):
        missing = [a for a in ASPECTS if a not in row]
        if missing:
            raise KeyError(f"row {i} lacks aspect key(s) {missing}; has {sorted(row)}")
    return np.array([[row[a] for a in ASPECTS] for row in rows], np.float32).reshape(-1, len(ASPECTS))


def aspect_statistics(rows: Sequence[dict]) -> dict:
    """Per-aspect mean / std / fraction labelled, and the aspect correlation matrix (NaN-aware).

    Returns ``{"mean": {aspect: x}, "std": {...}, "labelled": {...}, "corr": [[R x R]], "n": B}``; the
    correlation uses the rows where both aspects are labelled.
    """
    y_BR = labels_BR(rows).astype(np.float64)
    ok_BR = ~np.isnan(y_BR)
    corr = np.eye(len(ASPECTS))
    for i in range(len(ASPECTS)):
        for j in range(i + 1, len(ASPECTS)):
            both = ok_BR[:, i] & ok_BR[:, j]
            a, b = y_BR[both, i], y_BR[both, j]
            c = float(np.corrcoef(a, b)[0, 1]) if both.sum() > 1 and a.std() > 0 and b.std() > 0 else 0.0
            corr[i, j] = corr[j, i] = c
    return {
        "mean": {a: float(np.nanmean(y_BR[:, r])) for r, a in enumerate(ASPECTS)},
        "std": {a: float(np.nanstd(y_BR[:, r])) for r, a in enumerate(ASPECTS)},
        "labelled": {a: float(ok_BR[:, r].mean()) for r, a in enumerate(ASPECTS)},
        "corr": corr.tolist(),
        "n": int(y_BR.shape[0]),
    }


def _jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_jsonl(rows: Iterable[dict], path: str, *, overwrite: bool = False) -> str:
    """Write one JSON object per line (NaN -> null). Refuses to replace an existing file unless told."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({k: _jsonable(v) for k, v in row.items()}, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def read_jsonl(path: str) -> list[dict]:
    """Read rows written by :func:`write_jsonl` (aspect keys: null -> NaN); bad lines name file:line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            for aspect in ASPECTS:
                if aspect in row and row[aspect] is None:
                    row[aspect] = math.nan
            rows.append(row)
    return rows


def to_dataset(rows: Sequence[dict]):
    """The rows as a ``datasets.Dataset`` (columns = row keys)."""
    import datasets

    return datasets.Dataset.from_list(list(rows))
