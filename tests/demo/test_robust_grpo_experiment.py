"""The GRPO vs group-robust GRPO experiment (grpojax.demo.robust_grpo): its group prompts and its report
(the training itself is the GRPO stage tested in tests/train/test_robust_grpo.py)."""

import json

import numpy as np
import pytest

from grpojax.demo.robust_grpo import DIALECT, GROUPS, group_prompts
from grpojax.demo.robust_grpo_report import markdown, rows, write_report
from grpojax.demo.scorers import infer_topic
from grpojax.demo.world import TOPICS, split_requests


@pytest.mark.parametrize("seed", [0, 100])
def test_group_prompts(seed):
    p = group_prompts(seed)
    train, held = split_requests(seed)
    tasks = [t for topic in TOPICS.values() for t in topic.tasks]
    groups = [r["group"] for r in p["train"]]
    assert groups.count("dialect") == len(tasks) == 29 and groups.count("standard") == len(train) == 116
    assert [r["prompt"] for r in p["train"] if r["group"] == "standard"] == [r.text for r in train]
    assert [r["prompt"] for r in p["heldout"] if r["group"] == "standard"] == [r.text for r in held]
    templates = {}
    for split in ("train", "heldout"):
        for r, task in zip([r for r in p[split] if r["group"] == "dialect"], tasks):
            topic = next(n for n, t in TOPICS.items() if task in t.tasks)
            assert infer_topic(r["prompt"]) == topic  # the scorers read the dialect as usual
            template = next(i for i, d in enumerate(DIALECT) if d.format(task=task) == r["prompt"])
            templates.setdefault(task, []).append(template)
    assert all(a != b for a, b in templates.values())  # held out: another dialect template than in training
    assert group_prompts(seed) == p  # deterministic


def _groups(standard, dialect):
    return {"standard": {"reward": standard, "samples": 29 * 32}, "dialect": {"reward": dialect, "samples": 29 * 32}}


def _result(seed, alpha_dialect):
    g = _groups
    return {"seed": seed, "settings": {"eta_alpha": 0.03, "chi": 1.0}, "steps": 60,
            "mu": {"standard": 0.8, "dialect": 0.2},
            "before": g(0.65, 0.55), "after": {"grpo": g(0.9, 0.7), "robust_grpo": g(0.85, 0.75 + seed / 100)},
            "alpha": {"step": [1, 2], "standard": [0.8, 1 - alpha_dialect], "dialect": [0.2, alpha_dialect]}}


def test_report_table_and_plot(tmp_path):
    results = [_result(0, 0.4), _result(1, 0.5)]
    r = rows(results)
    assert [(x["seed"], x["method"]) for x in r] == [(0, "grpo"), (0, "robust_grpo"), (1, "grpo"), (1, "robust_grpo")]
    assert r[1]["after"]["worst"] == 0.75 and r[1]["after"]["mean"] == pytest.approx(0.8)
    text = markdown(results)
    assert "| 0 | robust_grpo | 0.650 → 0.850 | 0.550 → 0.750 | 0.550 → 0.750 | 0.600 → 0.800 | 0.60 / 0.40 |" in text
    assert "worst group +0.050, +0.060; mean +0.000, +0.005" in text
    assert write_report(results, str(tmp_path)) == text
    with open(tmp_path / "robust_grpo.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "robust_grpo.json").read_text()) == results
    assert set(GROUPS) == {"standard", "dialect"} and np.isclose(sum(results[0]["mu"].values()), 1.0)
