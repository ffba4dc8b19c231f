"""The loaders read the stand-in tables in the real datasets' layouts the way the presets ask for them.

Independent expectations are computed from the raw rows here (not through the loaders' helpers).
"""

import ast
import json
import os

import numpy as np
import pandas as pd
import pytest

from grpojax.config import load_config
from grpojax.data import load_from_config
from grpojax.data.loaders import GOQA_COUNTRIES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cfg(name, *overrides):
    return load_config(os.path.join(ROOT, "configs", name), list(overrides))


@pytest.fixture(scope="module")
def tables(preset_world):
    return {**preset_world["data"], "dir": preset_world["dir"]}


def test_pku_prompts_for_grpo_and_the_test_split(tables):
    cfg = _cfg("grpo_qwen2.5-0.5b.yaml", f"data.path={tables['pku_train']}", f"data.eval_path={tables['pku_test']}")
    rows = [json.loads(line) for line in open(tables["pku_train"])]
    assert {"response_0_harm_category", "response_0_severity_level", "safer_response_id"} <= set(rows[0])
    train = load_from_config(cfg.data, "grpo")
    assert list(train["prompt"]) == list(dict.fromkeys(r["prompt"] for r in rows))  # unique, first-seen order
    test = load_from_config(cfg.data, "grpo", split=cfg.data.eval_split)
    assert list(test["prompt"]) == list(dict.fromkeys(json.loads(line)["prompt"] for line in open(tables["pku_test"])))


def test_multi_label_reward_default_paths(tables):
    cfg = _cfg("reward_qwen2.5-0.5b.yaml")
    assert cfg.data.path == os.path.relpath(tables["reward"], tables["dir"])  # found with no override
    assert cfg.data.eval_path == os.path.relpath(tables["reward_eval"], tables["dir"])
    data = _cfg("reward_qwen2.5-0.5b.yaml", f"data.path={tables['reward']}").data
    ds = load_from_config(data, "reward")
    rows = [json.loads(line) for line in open(tables["reward"])]
    want = np.array([[np.nan if r[a] is None else r[a] for a in cfg.reward.aspects] for r in rows], np.float32)
    np.testing.assert_array_equal(np.asarray(ds["labels"], np.float32), want)
    assert np.isnan(want).any()  # some labels are missing, as the presets' comment says they may be


def test_global_opinions_splits_from_the_parquet_table(tables):
    data = _cfg("goqa_gr_ipo_qwen2.5-0.5b.yaml", f"data.path={tables['goqa']}").data
    raw = pd.read_parquet(tables["goqa"]).to_dict("records")
    expected = {c: 0 for c in GOQA_COUNTRIES}  # usable (question, country) pairs, counted from the raw rows
    for r in raw:
        sel = ast.literal_eval(r["selections"][r["selections"].index("{"):r["selections"].rindex("}") + 1])
        options = ast.literal_eval(r["options"])
        for c in GOQA_COUNTRIES:
            if sel.get(c) and len(sel[c]) == len(options) and sum(sel[c]) > 0:
                expected[c] += 1
    splits = {s: load_from_config(data, "dpo", split=s) for s in ("train", "validation", "test")}
    names = splits["train"].features["group"].names
    assert names == list(GOQA_COUNTRIES)
    for c, n in expected.items():
        got = [sum(1 for g in splits[s]["group"] if names[g] == c) for s in splits]
        assert sum(got) == n and got[0] == round(0.8 * n), (c, got, n)
    for s, ds in splits.items():
        assert set(list(ds["group"])) == set(range(len(GOQA_COUNTRIES))), s  # every split holds every group
        assert all(len(x) == 1 and x.isupper() for x in list(ds["chosen"]) + list(ds["rejected"]))
        assert all(c != r for c, r in zip(list(ds["chosen"]), list(ds["rejected"])))
    sft = load_from_config(_cfg("goqa_sft_qwen2.5-0.5b.yaml", f"data.path={tables['goqa']}").data, "sft")
    assert list(sft["prompt"]) == list(splits["train"]["prompt"])
    assert list(sft["response"]) == list(splits["train"]["chosen"])
