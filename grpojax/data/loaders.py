"""Dataset loaders with a normalised schema (see ``grpojax.data.sources`` for the schemas).

Generic loaders take any table (local file or hub id) plus column names; named builders turn the real
schemas of ``PKU-Alignment/PKU-SafeRLHF``, ``Anthropic/hh-rlhf`` and ``Anthropic/llm_global_opinions``
(GlobalOpinionQA, built exactly as ALGORITHMS.md 2.5) into the same schemas. :func:`load_from_config`
picks the loader from a ``DataConfig`` and a script kind.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence

import datasets
import numpy as np

from grpojax.cli import UserError
from grpojax.data import sources as S

PKU_ID, HH_ID, GOQA_ID = "PKU-Alignment/PKU-SafeRLHF", "Anthropic/hh-rlhf", "Anthropic/llm_global_opinions"
PKU_COLUMNS = ("prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe",
               "better_response_id", "safer_response_id")
# The paper's five groups, keys exactly as they appear in the ``selections`` dicts (and in the prompt).
GOQA_COUNTRIES = ("Nigeria", "Egypt", "India (Current national sample)", "China", "Japan")
GOQA_SPLITS = ("train", "validation", "test")


# ---------------------------------------------------------------- generic column loaders
def load_prompts(ds: datasets.Dataset, source: str, prompt_column: str = "prompt") -> datasets.Dataset:
    """Prompts from any table: ``{prompt, <every other column>}``. A prompt is non-empty text or a
    conversation (a non-empty list of ``{role, content}`` messages, rendered by the chat template); the
    other columns (``answer``, ``solution``, ...) reach the reward functions (``grpojax.rollout.text_rewards``)."""
    S.prompt_column(ds, prompt_column, source)
    if prompt_column != "prompt":
        if "prompt" in ds.column_names:  # replaced by the chosen column
            ds = ds.remove_columns("prompt")
        ds = ds.rename_column(prompt_column, "prompt")
    return ds


def load_sft(ds, source, prompt_column="prompt", response_column="response") -> datasets.Dataset:
    """SFT pairs: ``{prompt, response}`` (the response may not be empty)."""
    return S.make_sft(S.text_column(ds, prompt_column, source), S.text_column(ds, response_column, source))


def load_reward(ds, source, label_columns: Sequence[str], prompt_column="prompt",
                response_column="response") -> datasets.Dataset:
    """Multi-label reward data: ``{prompt, response, labels[R]}``, R = len(label_columns), missing -> NaN."""
    if not label_columns:
        raise UserError(f"{source}: no label columns given (data.label_columns); available columns: "
                        f"{', '.join(ds.column_names)}")
    S.require_columns(ds, [prompt_column, response_column, *label_columns], source)
    cols = [S.label_column(ds, c, source) for c in label_columns]
    labels = [list(row) for row in zip(*cols)]
    return S.make_reward(S.text_column(ds, prompt_column, source), S.text_column(ds, response_column, source),
                         labels)


def load_preference(ds, source, prompt_column="prompt", chosen_column="chosen", rejected_column="rejected",
                    group_column: str | None = None, group_names: Sequence[str] = ()) -> datasets.Dataset:
    """Preference pairs ``{prompt, chosen, rejected, group}``; group ids from a stable name -> id map."""
    S.require_columns(ds, [prompt_column, chosen_column, rejected_column] + ([group_column] if group_column else []),
                      source)
    groups = S.group_values(ds, group_column, source) if group_column else None
    return S.make_preference(S.text_column(ds, prompt_column, source), S.text_column(ds, chosen_column, source),
                             S.text_column(ds, rejected_column, source), groups, group_names)


# ---------------------------------------------------------------- PKU-SafeRLHF
def _pku_id(ds, column, source) -> list[int]:
    out = []
    for i, v in enumerate(ds[column]):
        if isinstance(v, bool) or v not in (0, 1):
            raise UserError(f"{source}: row {i}: column {column!r} must be 0 or 1, got {v!r}")
        out.append(int(v))
    return out


def pku_saferlhf(ds, source, task: str, preference: str = "better", aspects: Sequence[str] = ("safety",)):
    """``PKU-Alignment/PKU-SafeRLHF`` rows -> ``task`` in prompts | sft | reward | preference.

    prompts: unique prompts in first-seen order. reward: two rows per pair (response_0, response_1); aspect
    ``safety`` = is_response_i_safe (1/0), every other aspect NaN (missing). preference / sft: the
    ``better_response_id`` (or ``safer_response_id``) response is chosen.
    """
    S.require_columns(ds, PKU_COLUMNS, source)
    prompts = S.text_column(ds, "prompt", source)
    if task == "prompts":
        return S.make_prompts(list(dict.fromkeys(prompts)))
    r0, r1 = S.text_column(ds, "response_0", source), S.text_column(ds, "response_1", source)
    if task == "reward":
        safe = [S.label_column(ds, f"is_response_{k}_safe", source) for k in (0, 1)]
        labels = [[s[i] if a == "safety" else math.nan for a in aspects] for i in range(len(prompts)) for s in safe]
        return S.make_reward([p for p in prompts for _ in (0, 1)], [r for pair in zip(r0, r1) for r in pair], labels)
    ids = _pku_id(ds, f"{preference}_response_id", source)
    chosen = [(a, b)[k] for a, b, k in zip(r0, r1, ids)]
    if task == "sft":
        return S.make_sft(prompts, chosen)
    if task == "preference":
        return S.make_preference(prompts, chosen, [(a, b)[1 - k] for a, b, k in zip(r0, r1, ids)])
    raise ValueError(f"unknown task {task!r}")


# ---------------------------------------------------------------- hh-rlhf
ASSISTANT = "\n\nAssistant:"


def split_dialogue(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Shared prompt prefix (through the last common ``"\\n\\nAssistant:"``) and the two responses."""
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    cut = chosen.rfind(ASSISTANT, 0, n)  # the last turn marker lying entirely inside the common prefix
    if cut < 0:
        raise ValueError("no shared '\\n\\nAssistant:' turn")
    end = cut + len(ASSISTANT)
    return chosen[:end], chosen[end:], rejected[end:]


def hh_rlhf(ds, source, task: str):
    """``Anthropic/hh-rlhf`` (columns chosen, rejected: full dialogues) -> prompts | sft | preference."""
    chosen, rejected = S.text_column(ds, "chosen", source), S.text_column(ds, "rejected", source)
    prompts, cs, rs = [], [], []
    for i, (c, r) in enumerate(zip(chosen, rejected)):
        try:
            p, c2, r2 = split_dialogue(c, r)
        except ValueError:
            raise UserError(f"{source}: row {i}: columns 'chosen'/'rejected' share no '\\n\\nAssistant:' turn; "
                            "expected hh-rlhf dialogues") from None
        prompts.append(p), cs.append(c2), rs.append(r2)
    if task == "prompts":
        return S.make_prompts(list(dict.fromkeys(prompts)))
    if task == "sft":
        return S.make_sft(prompts, cs)
    if task == "preference":
        return S.make_preference(prompts, cs, rs)
    raise ValueError(f"unknown task {task!r}")


# ---------------------------------------------------------------- GlobalOpinionQA
def parse_selections(text: str) -> dict:
    """``"defaultdict(<class 'list'>, {'Japan': [0.1, 0.9], ...})"`` (or a plain dict string) -> dict."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no {...} mapping")
    value = ast.literal_eval(text[start : end + 1])
    if not isinstance(value, dict):
        raise ValueError("not a mapping")
    return value


def goqa_prompt(country: str, question: str, options: Sequence[str]) -> str:
    """ALGORITHMS.md 2.5 prompt: question line, instruction, then one ``\\nA. option`` line per option."""
    text = f"Opinion of people in {country} on: {question}\nPlease select the best response:"
    return text + "".join(f"\n{chr(65 + k)}. {o}" for k, o in enumerate(options))


def global_opinions(ds, source, seed: int = 0, countries: Sequence[str] = GOQA_COUNTRIES,
                    fractions=(0.8, 0.1, 0.1)) -> dict[str, datasets.Dataset]:
    """GlobalOpinionQA preference pairs per split (``train`` / ``validation`` / ``test``).

    For every row and every country in ``countries`` with a non-empty, non-zero probability list of the
    same length as ``options``: prompt = :func:`goqa_prompt`, chosen = letter of the most probable option
    (first on ties), rejected = a uniformly random other letter. Each country's examples are shuffled
    with ``default_rng([seed, country_index])`` and split 80/10/10 (rounded), so every split holds every
    group; group ids follow ``countries``' order. Rows with an empty question or options are skipped (as
    the official code does). The official code splits 80/20 over all rows at once; ALGORITHMS.md 2.5 asks
    for a per-country 80/10/10 split, which is what this builds.
    """
    S.require_columns(ds, ["question", "selections", "options"], source)
    per_country: dict[str, list] = {c: [] for c in countries}
    for i, row in enumerate(ds):
        question, opts_text = row["question"], row["options"]
        if not question or not opts_text:
            continue
        try:
            sel = parse_selections(row["selections"])
        except (ValueError, SyntaxError, TypeError) as e:
            raise UserError(f"{source}: row {i}: column 'selections' is not a (defaultdict-wrapped) dict of "
                            f"country -> probabilities ({e})") from None
        try:
            options = [str(o) for o in ast.literal_eval(opts_text)] if isinstance(opts_text, str) else list(opts_text)
        except (ValueError, SyntaxError):
            raise UserError(f"{source}: row {i}: column 'options' is not a list literal: {opts_text[:80]!r}") from None
        for country in countries:
            probs = sel.get(country)
            if not probs or len(probs) != len(options) or len(options) < 2 or not np.sum(probs) > 0:
                continue
            per_country[country].append((i, question, options, np.asarray(probs, dtype=np.float64)))
    splits = {s: ([], [], [], []) for s in GOQA_SPLITS}
    for ci, country in enumerate(countries):
        rng = np.random.default_rng([seed, ci])  # per country: one country's rows never move another's split
        items = per_country[country]
        order = rng.permutation(len(items))
        n_train = int(round(fractions[0] * len(items)))
        n_val = int(round(fractions[1] * len(items)))
        bounds = {"train": order[:n_train], "validation": order[n_train : n_train + n_val],
                  "test": order[n_train + n_val :]}
        for split, idx in bounds.items():
            p, c, r, g = splits[split]
            for j in idx:
                _, question, options, probs = items[j]
                best = int(np.argmax(probs))
                other = [k for k in range(len(options)) if k != best]
                p.append(goqa_prompt(country, question, options))
                c.append(chr(65 + best))
                r.append(chr(65 + int(other[rng.integers(len(other))])))
                g.append(country)
    return {s: S.make_preference(*splits[s][:3], splits[s][3], group_names=countries) for s in GOQA_SPLITS}


def prompt_group_column(raw, source: str, column: str, fmt: str, prompt_column: str = "prompt") -> list[str]:
    """The group name of every prompt row of ``raw`` as :func:`load_from_config` builds the prompts.

    ``columns``: the value of ``column`` in each row. ``pku_saferlhf`` (unique prompts in first-seen order):
    the value in the prompt's first row, or with ``column="harm_category"`` the first category flagged
    true in ``response_0_harm_category`` then ``response_1_harm_category`` of that row, ``"none"`` if
    neither response has one.
    """
    if fmt == "pku_saferlhf":
        prompts = S.text_column(raw, "prompt", source)
        if column == "harm_category":
            maps = [raw[f"response_{k}_harm_category"] for k in (0, 1)]
            values = []
            for i in range(len(prompts)):
                flagged = [name for m in (maps[0][i], maps[1][i]) for name, on in (m or {}).items() if on]
                values.append(flagged[0] if flagged else "none")
        else:
            values = S.group_values(raw, column, source)
        first = {}
        for p, v in zip(prompts, values):
            first.setdefault(p, v)
        return list(first.values())
    return S.group_values(raw, column, source)


# ---------------------------------------------------------------- from a config
_TASK = {"grpo": "prompts", "reward": "reward", "dpo": "preference", "sft": "sft"}
_HUB = {"pku_saferlhf": PKU_ID, "hh_rlhf": HH_ID, "global_opinions": GOQA_ID}


def load_from_config(data_cfg, kind: str, split: str | None = None, aspects: Sequence[str] = ("safety",),
                     cache_dir: str | None = None, prompt_groups: str | None = None) -> datasets.Dataset:
    """The normalised dataset for script ``kind`` (grpo | reward | dpo | sft) described by ``data_cfg``.

    ``split`` None = ``data_cfg.split``. For local files a ``split`` other than ``data_cfg.split`` reads
    ``data_cfg.eval_path``. GlobalOpinionQA splits (``train`` / ``validation`` / ``test``) are built from
    the one table, local or hub. ``prompt_groups`` (prompt data only; group-robust GRPO) names a column whose
    values become a string column ``group`` of the prompts (:func:`prompt_group_column`).
    """
    task = _TASK[kind]
    if prompt_groups is not None and (task != "prompts" or data_cfg.format not in ("columns", "pku_saferlhf")):
        raise UserError(f"grpo.robust.group_column={prompt_groups!r}: groups are read from prompt data of "
                        f"data.format columns or pku_saferlhf, not {data_cfg.format} for a {kind} run")
    split = split or data_cfg.split
    path = data_cfg.path or _HUB.get(data_cfg.format)
    if split != data_cfg.split and S._is_local(path) and data_cfg.format != "global_opinions":
        if data_cfg.eval_path is None:
            raise UserError("no evaluation data: data.path is a local file, set data.eval_path")
        path = data_cfg.eval_path
    fmt = data_cfg.format
    if fmt == "global_opinions":
        if task != "preference" and task != "sft":
            raise UserError(f"data.format=global_opinions gives preference pairs; it cannot feed a {kind} run")
        if split not in GOQA_SPLITS:
            raise UserError(f"GlobalOpinionQA split {split!r} is not one of {', '.join(GOQA_SPLITS)}")
        raw, source = S.read_table(path, "train", data_cfg.name, cache_dir)
        ds = global_opinions(raw, source, seed=data_cfg.shuffle_seed)[split]
        if task == "sft":
            ds = S.make_sft(ds["prompt"], ds["chosen"])
    else:
        raw, source = S.read_table(path, split, data_cfg.name, cache_dir)
        if data_cfg.max_examples is not None:
            raw = raw.select(range(min(data_cfg.max_examples, len(raw))))
        if fmt == "pku_saferlhf":
            ds = pku_saferlhf(raw, source, task, data_cfg.pku_preference, aspects)
        elif fmt == "hh_rlhf":
            if task == "reward":
                raise UserError("data.format=hh_rlhf has no labels for a regression reward model")
            ds = hh_rlhf(raw, source, task)
        elif task == "prompts":
            ds = load_prompts(raw, source, data_cfg.prompt_column)
        elif task == "sft":
            ds = load_sft(raw, source, data_cfg.prompt_column, data_cfg.response_column)
        elif task == "reward":
            ds = load_reward(raw, source, data_cfg.label_columns, data_cfg.prompt_column, data_cfg.response_column)
        else:
            ds = load_preference(raw, source, data_cfg.prompt_column, data_cfg.chosen_column,
                                 data_cfg.rejected_column, data_cfg.group_column, data_cfg.group_names)
        if prompt_groups is not None:  # the group names as strings (a data column named "group" is replaced)
            ds = ds.remove_columns([c for c in ("group",) if c in ds.column_names])
            ds = ds.add_column("group", prompt_group_column(raw, source, prompt_groups, fmt, data_cfg.prompt_column))
    if data_cfg.max_examples is not None and len(ds) > data_cfg.max_examples:
        ds = ds.select(range(data_cfg.max_examples))
    if len(ds) == 0:
        raise UserError(f"{path}: no usable examples for a {kind} run")
    return ds
