"""SFT / reward-model / GRPO data: determinism, label correctness, spread, splits, JSONL I/O."""

import json
import math

import numpy as np
import pytest

from grpojax.demo import datasets as D
from grpojax.demo import scorers as S
from grpojax.demo.tokenizer import format_completion, format_prompt
from grpojax.demo.world import split_requests


def test_sft_rows_are_deterministic_and_seeded(sft_data):
    assert sft_data[:50] == D.sft_rows(seed=0, n=50)
    assert D.sft_rows(seed=1, n=50) != sft_data[:50]


def test_sft_rows_are_well_formed_and_labelled_by_the_scorers(sft_data):
    train_texts = {r.text for r in split_requests(0)[0]}
    for row in sft_data[:300]:
        assert row["request"] in train_texts
        assert row["prompt"] == format_prompt(row["request"])
        assert row["completion"] == format_completion(row["response"])
        assert {a: row[a] for a in S.ASPECTS} == S.score_all(row["request"], row["response"])


def test_sft_aspects_spread_independently(sft_data):
    """Each aspect has a wide spread (mean 0.4-0.6; meaningfulness mostly on-topic: SFT_TOPICALITY gives
    0.7 + 0.1 * E[mixed share] ~ 0.75); aspects are nearly uncorrelated."""
    stats = D.aspect_statistics(sft_data)
    for aspect in S.ASPECTS:
        lo, hi = (0.68, 0.82) if aspect == "meaningfulness" else (0.4, 0.6)
        assert lo <= stats["mean"][aspect] <= hi, (aspect, stats["mean"])
        assert stats["std"][aspect] >= 0.3, (aspect, stats["std"])
        values = {row[aspect] for row in sft_data}
        assert len(values) >= 3 and min(values) == 0.0 and max(values) == 1.0, (aspect, values)
    corr_RR = np.array(stats["corr"])
    off_diagonal = corr_RR[~np.eye(len(S.ASPECTS), dtype=bool)]
    assert np.abs(off_diagonal).max() < 0.1, corr_RR
    assert any(all(row[a] == 1.0 for a in S.ASPECTS) for row in sft_data)  # the ideal is in the data


def test_reward_rows_keep_meaningfulness_balanced_and_topicality_is_validated():
    """The reward model's labels are balanced on meaningfulness (on / off 0.45 each), unlike SFT's."""
    stats = D.aspect_statistics(D.reward_rows(seed=0, n_train=1500, n_heldout=10)["train"])
    assert 0.43 <= stats["mean"]["meaningfulness"] <= 0.57, stats["mean"]
    off = D.sft_rows(seed=0, n=400, p_topicality=(0.0, 0.0, 1.0))
    assert all(row["meaningfulness"] == 0.0 for row in off)
    on = D.sft_rows(seed=0, n=400, p_topicality=(1.0, 0.0, 0.0))
    assert all(row["meaningfulness"] == 1.0 for row in on)
    with pytest.raises(ValueError, match="p_topicality"):
        D.sft_rows(seed=0, n=5, p_topicality=(0.5, 0.5, 0.5))


def test_aspect_statistics_against_numpy_reference():
    y_BR = np.array([[0.0, 1.0, 0.5, 1.0], [1.0, np.nan, 0.0, 0.5], [0.5, 0.0, 1.0, 0.0]])
    rows = [dict(zip(S.ASPECTS, r)) for r in y_BR.tolist()]
    stats = D.aspect_statistics(rows)
    assert stats["n"] == 3
    assert stats["mean"]["politeness"] == pytest.approx(0.5)
    assert stats["mean"]["meaningfulness"] == pytest.approx(0.5)  # NaN skipped
    assert stats["labelled"]["meaningfulness"] == pytest.approx(2 / 3)
    assert stats["std"]["actionability"] == pytest.approx(np.std([0.5, 0.0, 1.0]))
    assert stats["corr"][0][2] == pytest.approx(np.corrcoef(y_BR[:, 0], y_BR[:, 2])[0, 1])
    assert stats["corr"][0][1] == pytest.approx(-1.0)  # rows 0 and 2 only
    with pytest.raises(KeyError, match="row 0 lacks aspect key"):
        D.labels_BR([{"politeness": 1.0}])


def test_reward_rows_labels_missing_and_splits():
    data = D.reward_rows(seed=0, n_train=800, n_heldout=100, missing_frac=0.1, p_perturb=0.3)
    train_req, held_req = (set(r.text for r in rs) for rs in split_requests(0))
    y_BR = D.labels_BR(data["train"])
    missing_BR = np.isnan(y_BR)
    assert 0.08 < missing_BR.mean() < 0.12
    assert 0.25 < np.mean([row["perturbed"] for row in data["train"]]) < 0.35
    assert not missing_BR.all(axis=1).any()
    for row, missing_R in zip(data["train"], missing_BR):
        assert row["request"] in train_req
        truth = S.score_all(row["request"], row["response"])  # labels are exact, also after corruption
        for aspect, m in zip(S.ASPECTS, missing_R):
            assert m or row[aspect] == truth[aspect]
    assert all(row["request"] in held_req for row in data["heldout"])
    assert not np.isnan(D.labels_BR(data["heldout"])).any()
    assert not any(row["perturbed"] for row in data["heldout"])
    again = D.reward_rows(seed=0, n_train=800, n_heldout=100, missing_frac=0.1, p_perturb=0.3)
    assert [r["response"] for r in again["train"]] == [r["response"] for r in data["train"]]
    assert np.array_equal(D.labels_BR(again["train"]), y_BR, equal_nan=True)
    with pytest.raises(ValueError, match="missing_frac=1.5"):
        D.reward_rows(missing_frac=1.5)
    with pytest.raises(ValueError, match="p_perturb=-0.1"):
        D.reward_rows(p_perturb=-0.1)


def test_perturbations_garble_text():
    rng = np.random.default_rng(0)
    text = "happy to help . first heat the oven , then add the salt . good luck !"
    outs = [D.perturb_response(text, rng) for _ in range(60)]
    assert len(set(outs)) > 15 and sum(o != text for o in outs) > 45
    assert all(set(o.split()) <= set(text.split()) for o in outs)
    assert any(len(o.split()) < len(text.split()) for o in outs)  # dropped / truncated
    assert any(len(o.split()) > len(text.split()) for o in outs)  # repeated span
    assert D.perturb_response("", rng) == ""


def test_grpo_prompts():
    data = D.grpo_prompts(seed=0)
    assert len(data["train"]) == 116 and len(data["heldout"]) == 29
    assert not {r["prompt"] for r in data["train"]} & {r["prompt"] for r in data["heldout"]}
    for row in data["train"] + data["heldout"]:
        assert row["prompt"] == format_prompt(row["request"])
        assert S.infer_topic(row["request"]) == row["topic"]
    assert sum(r["harmful"] for r in data["heldout"]) == 9


def test_jsonl_round_trip_nan_and_errors(tmp_path):
    rows = [{"request": "a", "politeness": math.nan, "safety": 1.0, "harmful": True, "n": np.int64(3)}]
    path = str(tmp_path / "sub" / "rows.jsonl")
    D.write_jsonl(rows, path)
    assert "null" in open(path).read() and "NaN" not in open(path).read()
    back = D.read_jsonl(path)
    assert math.isnan(back[0]["politeness"]) and back[0]["safety"] == 1.0 and back[0]["n"] == 3
    with pytest.raises(FileExistsError, match="rows.jsonl exists"):
        D.write_jsonl(rows, path)
    D.write_jsonl(rows[:0], path, overwrite=True)
    assert D.read_jsonl(path) == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"a": 1}) + "\n\n{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:3: not valid JSON"):
        D.read_jsonl(str(bad))
    bad.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: expected a JSON object"):
        D.read_jsonl(str(bad))


def test_to_dataset_columns(sft_data):
    ds = D.to_dataset(sft_data[:20])
    assert len(ds) == 20
    assert set(ds.column_names) == set(sft_data[0])
    assert ds[3]["response"] == sft_data[3]["response"]
