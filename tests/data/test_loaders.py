"""grpojax.data loaders: local formats, normalised schemas, the named builders on real-schema fixtures,
and row / column / file errors."""

import ast
import json
import math
import os
import time

import numpy as np
import pandas as pd
import pytest

from grpojax import config as C
from grpojax import data as D
from grpojax.cli import UserError
from grpojax.data import sources as S

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "data", "fixtures")
ROWS = [
    {"prompt": "p0", "response": "r0", "safety": 1.0, "politeness": 0.5, "group": "b"},
    {"prompt": "p1", "response": "r1", "safety": None, "politeness": 0.25, "group": "a"},
    {"prompt": "p2", "response": "r2", "safety": 0.0, "politeness": None, "group": "c"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_local_formats_agree(tmp_path):
    frame = pd.DataFrame(ROWS)
    paths = [write_jsonl(tmp_path / "d.jsonl", ROWS), str(tmp_path / "d.parquet"), str(tmp_path / "d.csv"),
             str(tmp_path / "d.json")]
    frame.to_parquet(paths[1])
    frame.to_csv(paths[2], index=False)
    (tmp_path / "d.json").write_text(json.dumps({"data": ROWS}))
    for p in paths:
        ds = D.load_reward(D.read_local(p), p, ["safety", "politeness"])
        assert ds["prompt"] == ["p0", "p1", "p2"] and ds["response"] == ["r0", "r1", "r2"]
        labels = np.array(ds["labels"], dtype=np.float64)
        np.testing.assert_array_equal(labels, [[1.0, 0.5], [np.nan, 0.25], [0.0, np.nan]])
        pref = D.load_preference(D.read_local(p).rename_columns({"response": "chosen"}).add_column(
            "rejected", ["x", "y", "z"]), p, group_column="group")
        assert pref.features["group"].names == ["a", "b", "c"]  # stable: sorted names
        assert pref["group"] == [1, 0, 2]


def test_normalised_schemas_and_group_order(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [dict(r, chosen=r["response"], rejected="no") for r in ROWS])
    raw = D.read_local(p)
    assert D.load_prompts(raw, p).column_names == ["prompt"]
    assert D.load_sft(raw, p).column_names == ["prompt", "response"]
    pref = D.load_preference(raw, p, group_column="group", group_names=["c", "b", "a"])
    assert pref.features["group"].names == ["c", "b", "a"] and pref["group"] == [1, 2, 0]
    single = D.load_preference(raw, p)
    assert single.features["group"].names == ["all"] and single["group"] == [0, 0, 0]
    with pytest.raises(UserError, match=r"group names \['c'\] are not in data.group_names=\['a', 'b'\]"):
        D.load_preference(raw, p, group_column="group", group_names=["a", "b"])
    # Missing key in some rows -> NaN label.
    q = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "a", "response": "b", "x": 1}, {"prompt": "c", "response": "d"}])
    assert np.isnan(D.load_reward(D.read_local(q), q, ["x"])["labels"][1][0])


@pytest.mark.parametrize("content, needle", [
    ('{"prompt": "a"}\n{"prompt": "b",}\n', "d.jsonl: line 2: invalid JSON"),
    ('{"prompt": "a"}\n[1, 2]\n', "d.jsonl: line 2: expected a JSON object, got a list"),
    ('{"prompt": "a", "n": 1}\n{"prompt": "b", "n": 2}\n{"prompt": "c", "n": "three"}\n',
     "d.jsonl: row 2: column 'n' holds text but earlier rows hold a number (value 'three')"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, content, needle):
    (tmp_path / "d.jsonl").write_text(content)
    with pytest.raises(UserError) as e:
        D.read_local(str(tmp_path / "d.jsonl"))
    assert needle in str(e.value), str(e.value)


def test_row_and_column_errors(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "response": "b", "safety": "low", "group": "g"},
                                           {"prompt": "", "response": "c", "safety": "high", "group": None}])
    raw = D.read_local(p)
    with pytest.raises(UserError,
                       match=r"d.jsonl: no column 'question'; available columns: prompt, response, safety, group"):
        D.load_prompts(raw, p, "question")
    with pytest.raises(UserError, match=r"d.jsonl: row 1: column 'prompt' must be non-empty text, got empty text"):
        D.load_prompts(raw, p)
    with pytest.raises(UserError, match=r"d.jsonl: row 0: column 'safety' must be a number or null, got 'low'"):
        D.load_reward(raw.map(lambda r: {"prompt": "x"}), p, ["safety"])
    with pytest.raises(UserError, match=r"no label columns given"):
        D.load_reward(raw, p, [])
    with pytest.raises(UserError, match=r"row 1: column 'group' must be a group name or integer id, got None"):
        D.load_preference(raw.add_column("chosen", ["x", "y"]).add_column("rejected", ["x", "y"])
                          .map(lambda r: {"prompt": "x"}), p, group_column="group")
    with pytest.raises(UserError, match=r"data file not found: .*nope.jsonl"):
        D.read_local(str(tmp_path / "nope.jsonl"))
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(UserError, match=r"unsupported data file type '.txt'"):
        D.read_local(str(tmp_path / "d.txt"))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(UserError, match=r"bad.parquet: could not read parquet file"):
        D.read_local(str(tmp_path / "bad.parquet"))


def test_pku_saferlhf_fixture_with_real_columns():
    path = os.path.join(FIX, "pku_saferlhf.jsonl")
    raw = D.read_local(path)
    rows = [json.loads(line) for line in open(path)]
    prompts = D.pku_saferlhf(raw, path, "prompts")
    assert prompts["prompt"] == list(dict.fromkeys(r["prompt"] for r in rows))
    rew = D.pku_saferlhf(raw, path, "reward", aspects=("politeness", "safety"))
    assert len(rew) == 2 * len(rows)
    for i, r in enumerate(rows):
        for k in (0, 1):
            got = rew[2 * i + k]
            assert got["prompt"] == r["prompt"] and got["response"] == r[f"response_{k}"]
            assert math.isnan(got["labels"][0]) and got["labels"][1] == float(r[f"is_response_{k}_safe"])
    for which in ("better", "safer"):
        pref = D.pku_saferlhf(raw, path, "preference", preference=which)
        for r, got in zip(rows, pref):
            k = r[f"{which}_response_id"]
            assert (got["chosen"], got["rejected"]) == (r[f"response_{k}"], r[f"response_{1 - k}"])
    assert D.pku_saferlhf(raw, path, "sft")["response"][1] == rows[1]["response_1"]  # better id 1
    broken = raw.map(lambda r, i: {"better_response_id": 2 if i == 4 else r["better_response_id"]}, with_indices=True)
    with pytest.raises(UserError, match=r"row 4: column 'better_response_id' must be 0 or 1, got 2"):
        D.pku_saferlhf(broken, path, "preference")
    with pytest.raises(UserError, match=r"no column 'safer_response_id'; available columns: prompt"):
        D.pku_saferlhf(raw.remove_columns("safer_response_id"), path, "prompts")


def test_hh_rlhf_split_dialogue():
    chosen = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: See you."
    rejected = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: Whatever."
    assert D.split_dialogue(chosen, rejected) == (
        "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant:", " See you.", " Whatever.")
    # The responses may share a prefix ("S..."): the cut stays at the last turn marker.
    assert D.split_dialogue("\n\nHuman: x\n\nAssistant: Sure", "\n\nHuman: x\n\nAssistant: So")[1:] == (" Sure", " So")
    path = os.path.join(FIX, "hh_rlhf.jsonl")
    raw = D.read_local(path)
    pref = D.hh_rlhf(raw, path, "preference")
    for r, got in zip(raw, pref):
        assert got["prompt"].endswith("\n\nAssistant:") and got["prompt"].count("Human:") == 2
        assert got["prompt"] + got["chosen"] == r["chosen"] and got["prompt"] + got["rejected"] == r["rejected"]
    bad = raw.map(lambda r, i: {"rejected": "no dialogue" if i == 2 else r["rejected"]}, with_indices=True)
    with pytest.raises(UserError, match=r"row 2: columns 'chosen'/'rejected' share no"):
        D.hh_rlhf(bad, path, "preference")


def _goqa_table(tmp_path):
    rows = [
        {"question": "Q0?", "options": "['Yes', 'No', 'Maybe']", "source": "GAS",
         "selections": "defaultdict(<class 'list'>, {'Japan': [0.2, 0.7, 0.1], 'Nigeria': [0.6, 0.3, 0.1], "
                       "'Germany': [0.1, 0.1, 0.8]})"},
        {"question": "Q1?", "options": "['Good', 'Bad']", "source": "WVS",
         "selections": "defaultdict(<class 'list'>, {'India (Current national sample)': [0.4, 0.6], 'Japan': []})"},
        {"question": "", "options": "['A', 'B']", "source": "WVS",
         "selections": "defaultdict(<class 'list'>, {'Japan': [0.5, 0.5]})"},
    ]
    return write_jsonl(tmp_path / "goqa.jsonl", rows)


def test_global_opinions_hand_computed(tmp_path):
    p = _goqa_table(tmp_path)
    out = D.global_opinions(D.read_local(p), p, seed=0, fractions=(1.0, 0.0, 0.0))
    train = out["train"]
    assert train.features["group"].names == list(D.GOQA_COUNTRIES)
    got = {(train.features["group"].int2str(g), pr): (c, r) for g, pr, c, r in
           zip(train["group"], train["prompt"], train["chosen"], train["rejected"])}
    assert len(got) == 3  # Nigeria/Q0, Japan/Q0, India/Q1; Germany, empty Japan list, empty question skipped
    q0 = "on: Q0?\nPlease select the best response:\nA. Yes\nB. No\nC. Maybe"
    assert got[("Japan", "Opinion of people in Japan " + q0)][0] == "B"
    assert got[("Nigeria", "Opinion of people in Nigeria " + q0)][0] == "A"
    india = ("India (Current national sample)", "Opinion of people in India (Current national sample) on: Q1?\n"
             "Please select the best response:\nA. Good\nB. Bad")
    assert got[india] == ("B", "A")  # two options: the rejected letter is forced
    assert all(c != r and r in "ABC" for c, r in got.values())
    assert len(out["validation"]) == len(out["test"]) == 0


def test_global_opinions_fixture_splits():
    path = os.path.join(FIX, "global_opinions.jsonl")
    raw = D.read_local(path)
    a = D.global_opinions(raw, path, seed=3)
    b = D.global_opinions(raw, path, seed=3)
    assert all(a[s]["prompt"] == b[s]["prompt"] and a[s]["rejected"] == b[s]["rejected"] for s in a)
    # Independent count of eligible (row, country) pairs from the raw strings.
    eligible = {}
    chosen_of = {pr: ch for s in a for pr, ch in zip(a[s]["prompt"], a[s]["chosen"])}
    for row in raw:
        sel = ast.literal_eval(row["selections"][row["selections"].index("{"): row["selections"].rindex("}") + 1])
        opts = ast.literal_eval(row["options"])
        for c in D.GOQA_COUNTRIES:
            if sel.get(c) and len(sel[c]) == len(opts):
                eligible.setdefault(c, set()).add(D.goqa_prompt(c, row["question"], opts))
                assert chosen_of[D.goqa_prompt(c, row["question"], opts)] == "ABCD"[int(np.argmax(sel[c]))]
    for ci, c in enumerate(D.GOQA_COUNTRIES):
        parts = [{pr for pr, g in zip(a[s]["prompt"], a[s]["group"]) if g == ci}
                 for s in ("train", "validation", "test")]
        n = len(eligible[c])
        assert [len(x) for x in parts] == [round(0.8 * n), round(0.1 * n), n - round(0.8 * n) - round(0.1 * n)]
        assert set.union(*parts) == eligible[c] and sum(map(len, parts)) == n  # disjoint, complete
    c = D.global_opinions(raw, path, seed=4)
    assert c["train"]["prompt"] != a["train"]["prompt"]
    bad = raw.map(lambda r, i: {"selections": "defaultdict(<class 'list'>, {'Japan': [0.1,)" if i == 5
                                else r["selections"]}, with_indices=True)
    with pytest.raises(UserError, match=r"row 5: column 'selections' is not a \(defaultdict-wrapped\) dict"):
        D.global_opinions(bad, path)


def test_load_from_config_all_kinds(tmp_path):
    for name, n in (("tiny_grpo", 32), ("tiny_reward", 32), ("tiny_dpo", 32), ("tiny_sft", 32)):
        cfg = C.load_config(os.path.join(ROOT, "configs", f"{name}.yaml"))
        data = C.DataConfig(**{**cfg.data.__dict__, "path": os.path.join(ROOT, cfg.data.path)})
        ds = D.load_from_config(data, cfg.kind)
        assert len(ds) == n
    goqa = C.DataConfig(path=os.path.join(FIX, "global_opinions.jsonl"), format="global_opinions")
    assert len(D.load_from_config(goqa, "dpo", split="validation")) > 0
    assert D.load_from_config(goqa, "sft").column_names == ["prompt", "response"]
    with pytest.raises(UserError, match="GlobalOpinionQA split 'dev' is not one of train, validation, test"):
        D.load_from_config(goqa, "dpo", split="dev")
    pku = C.DataConfig(path=os.path.join(FIX, "pku_saferlhf.jsonl"), format="pku_saferlhf", max_examples=5)
    assert len(D.load_from_config(pku, "grpo")) == 5
    local = C.DataConfig(path=os.path.join(FIX, "hh_rlhf.jsonl"), format="hh_rlhf")
    with pytest.raises(UserError, match="no evaluation data: data.path is a local file, set data.eval_path"):
        D.load_from_config(local, "dpo", split="test")
    with pytest.raises(UserError, match="hh_rlhf has no labels"):
        D.load_from_config(local, "reward")


def test_hub_dataset_offline_fails_fast_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(UserError) as e:
        S.read_hub("Anthropic/llm_global_opinions", "train", cache_dir=str(tmp_path / "cache"))
    assert time.perf_counter() - t0 < 30
    msg = str(e.value)
    assert "could not load hub dataset 'Anthropic/llm_global_opinions'" in msg
    assert "offline mode is on" in msg and "set data.path to local" in msg
