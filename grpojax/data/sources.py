"""Reading raw tables (local JSONL / JSON / parquet / CSV files or hub datasets) and normalising them.

Every loader returns a ``datasets.Dataset`` with one normalised schema per use:

    prompts      prompt: str
    sft          prompt: str, response: str
    reward       prompt: str, response: str, labels: Sequence(float32) [R]   (missing label -> NaN)
    preference   prompt: str, chosen: str, rejected: str, group: ClassLabel   (names = the stable
                 group name -> id map; one group "all" when there is no group column)

Errors are :class:`grpojax.cli.UserError` naming the file, row and column (a wrong column name lists the
available columns). Hub ids load through the normal Hugging Face cache; offline with nothing cached they
fail fast saying what to do.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import datasets

from grpojax.cli import UserError, one_line

LOCAL_EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")


def _is_local(path: str) -> bool:
    return os.path.exists(path) or path.endswith(LOCAL_EXTENSIONS) or path.startswith((".", "/", "~"))


def _from_rows(rows: list[dict], source: str) -> datasets.Dataset:
    """Column lists from row dicts (missing keys -> None); a type clash names the first offending row."""
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    columns = {n: [r.get(n) for r in rows] for n in names}
    try:
        return datasets.Dataset.from_dict(columns)
    except Exception:  # pyarrow could not type a column: find the row whose type differs from the first one
        for n, values in columns.items():
            kinds = [(i, _kind(v)) for i, v in enumerate(values) if v is not None]
            for i, k in kinds:
                if k != kinds[0][1]:
                    raise UserError(f"{source}: row {i}: column '{n}' holds {k} but earlier rows hold "
                                    f"{kinds[0][1]} (value {values[i]!r})") from None
        raise


def _kind(v) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    return {str: "text", list: "a list", dict: "a mapping"}.get(type(v), type(v).__name__)


def read_local(path: str) -> datasets.Dataset:
    """A local ``.jsonl`` / ``.json`` (list of records) / ``.parquet`` / ``.csv`` file as a Dataset."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise UserError(f"data file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}: line {line_no}: invalid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(row, dict):
                    raise UserError(f"{path}: line {line_no}: expected a JSON object, got {_kind(row)}")
                rows.append(row)
        return _from_rows(rows, path)
    if ext == ".json":
        try:
            with open(path, encoding="utf-8") as f:
                rows = json.load(f)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(rows, dict) and isinstance(rows.get("data"), list):
            rows = rows["data"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise UserError(f"{path}: expected a JSON list of objects (or {{\"data\": [...]}})")
        return _from_rows(rows, path)
    if ext == ".parquet":
        try:
            return datasets.Dataset.from_parquet(path, keep_in_memory=True)
        except Exception as e:
            raise UserError(f"{path}: could not read parquet file: {one_line(str(e))[:300]}") from None
    if ext == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(path, keep_default_na=True)
        except Exception as e:
            raise UserError(f"{path}: could not read CSV file: {one_line(str(e))[:300]}") from None
        frame = frame.astype(object).where(frame.notna(), None)
        return _from_rows(frame.to_dict("records"), path)
    raise UserError(f"{path}: unsupported data file type {ext!r}; use one of {', '.join(LOCAL_EXTENSIONS)}")


def read_hub(name: str, split: str, config: str | None = None, cache_dir: str | None = None) -> datasets.Dataset:
    """A hub dataset split through the normal HF cache; a clear UserError when it cannot be had."""
    offline = any(os.environ.get(v, "0").lower() in ("1", "true", "yes")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    try:
        return datasets.load_dataset(name, config, split=split, cache_dir=cache_dir)
    except Exception as e:  # network, missing cache, unknown repo or split
        if isinstance(e, ValueError) and "split" in str(e).lower() and "unknown" in str(e).lower():
            raise UserError(f"hub dataset {name!r}: {one_line(str(e))[:300]}") from None
        hint = ("offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and it is not in the cache: run once "
                "online to cache it, or download it elsewhere and set data.path to local .jsonl/.parquet files"
                if offline else "check the id, your network and `huggingface-cli login` (gated datasets), or "
                "set data.path to local .jsonl/.parquet files")
        raise UserError(f"could not load hub dataset {name!r} (split {split!r}): {hint} "
                        f"[{type(e).__name__}: {one_line(str(e))[:200]}]") from None


def read_table(path: str, split: str = "train", config: str | None = None,
               cache_dir: str | None = None) -> tuple[datasets.Dataset, str]:
    """A local file or hub dataset and the source name used in error messages."""
    if _is_local(path):
        return read_local(path), path
    ds = read_hub(path, split, config, cache_dir)
    return ds, f"{path}[{split}]"


def require_columns(ds: datasets.Dataset, columns: Sequence[str], source: str) -> None:
    """UserError naming the first missing column and listing the available ones."""
    for c in columns:
        if c not in ds.column_names:
            raise UserError(f"{source}: no column {c!r}; available columns: {', '.join(ds.column_names)}")


def text_column(ds: datasets.Dataset, column: str, source: str, allow_empty: bool = False) -> list[str]:
    """The column's values, each checked to be text (non-empty unless ``allow_empty``)."""
    require_columns(ds, [column], source)
    values = ds[column]
    for i, v in enumerate(values):
        if not isinstance(v, str) or (not allow_empty and not v.strip()):
            what = "empty text" if isinstance(v, str) else repr(v)
            raise UserError(f"{source}: row {i}: column {column!r} must be non-empty text, got {what}")
    return values


def label_column(ds: datasets.Dataset, column: str, source: str) -> list[float]:
    """Numeric labels as floats; None / NaN / missing -> NaN; booleans -> 0/1; anything else is an error."""
    require_columns(ds, [column], source)
    out = []
    for i, v in enumerate(ds[column]):
        if v is None:
            out.append(math.nan)
        elif isinstance(v, (bool, int, float)):
            out.append(float(v))
        else:
            raise UserError(f"{source}: row {i}: column {column!r} must be a number or null, got {v!r}")
    return out


def group_feature(names: Sequence[str], order: Sequence[str] = ()) -> datasets.ClassLabel:
    """The stable group name -> id map: ``order`` if given (must cover every name), else sorted names."""
    if order:
        missing = sorted(set(names) - set(order))
        if missing:
            raise UserError(f"group names {missing} are not in data.group_names={list(order)}")
        return datasets.ClassLabel(names=list(order))
    return datasets.ClassLabel(names=sorted(set(names)))


def make_prompts(prompts: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"prompt": prompts})


def make_sft(prompts: list[str], responses: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"prompt": prompts, "response": responses})


def make_reward(prompts: list[str], responses: list[str], labels: list[list[float]]) -> datasets.Dataset:
    features = datasets.Features({"prompt": datasets.Value("string"), "response": datasets.Value("string"),
                                  "labels": datasets.Sequence(datasets.Value("float32"))})
    return datasets.Dataset.from_dict({"prompt": prompts, "response": responses, "labels": labels},
                                      features=features)


def make_preference(prompts, chosen, rejected, groups: list[str] | None = None,
                    group_names: Sequence[str] = ()) -> datasets.Dataset:
    """Preference pairs; ``groups`` are names mapped to int ids through :func:`group_feature`."""
    groups = ["all"] * len(prompts) if groups is None else [str(g) for g in groups]
    label = group_feature(groups, group_names)
    features = datasets.Features({"prompt": datasets.Value("string"), "chosen": datasets.Value("string"),
                                  "rejected": datasets.Value("string"), "group": label})
    return datasets.Dataset.from_dict(
        {"prompt": prompts, "chosen": chosen, "rejected": rejected, "group": [label.str2int(g) for g in groups]},
        features=features)


def group_values(ds: datasets.Dataset, column: str, source: str) -> list[str]:
    require_columns(ds, [column], source)
    out = []
    for i, v in enumerate(ds[column]):
        if v is None or isinstance(v, (list, dict, float)) or (isinstance(v, str) and not v.strip()):
            raise UserError(f"{source}: row {i}: column {column!r} must be a group name or integer id, got {v!r}")
        out.append(str(v))
    return out
