"""The demo pipeline (``python -m grpojax.demo``): hand-computed preference metrics, the CLI contract, and
one shortened end-to-end run (``--quick``) whose summary.json contract and effect directions are checked."""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from grpojax.demo.opinions import GROUPS
from grpojax.demo.pipeline_report import report_text
from grpojax.demo.pipeline_stages import group_preference_metrics, stage_config
from grpojax.demo.scorers import ASPECTS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _demo(*args, timeout=900):
    env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "grpojax.demo", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------ hand-computed metrics
def test_group_preference_metrics_hand_computed_ipo_and_dpo():
    # h = (pw - rw) - (pl - rl): pairs 0,1 in group 0, pair 2 in group 1, pair 3 in group 3
    pw, pl = np.array([-1.0, -2.0, -1.0, -3.0]), np.array([-2.0, -1.0, -1.0, -1.0])
    rw, rl = np.zeros(4), np.zeros(4)
    h = np.array([1.0, -1.0, 0.0, -2.0])
    m = group_preference_metrics(pw, pl, rw, rl, np.array([0, 0, 1, 3]), beta=0.5, loss="ipo", num_groups=4)
    ipo = (h - 1.0) ** 2  # 1/(2 beta) = 1
    assert m["group_test_loss"] == pytest.approx({"avalon": (0 + 4) / 2, "borduria": 1.0, "dravonia": 9.0})
    assert m["worst_group_test_loss"] == pytest.approx(9.0)
    assert m["test_loss"] == pytest.approx(ipo.mean())
    assert m["group_test_reward_accuracy"] == {"avalon": 0.5, "borduria": 0.0, "dravonia": 0.0}
    assert m["worst_group_test_reward_accuracy"] == 0.0 and m["test_reward_accuracy"] == 0.25
    assert "carpania" not in m["group_test_loss"]  # absent groups are not invented
    d = group_preference_metrics(pw, pl, rw, rl, np.array([0, 0, 1, 3]), beta=2.0, loss="gr_dpo", num_groups=4)
    dpo = [math.log1p(math.exp(-2.0 * x)) for x in h]
    assert d["group_test_loss"]["avalon"] == pytest.approx((dpo[0] + dpo[1]) / 2)
    assert d["worst_group_test_loss"] == pytest.approx(dpo[3])
    with pytest.raises(ValueError, match="loss='hinge'"):
        group_preference_metrics(pw, pl, rw, rl, np.zeros(4, int), beta=1.0, loss="hinge", num_groups=4)


@pytest.mark.parametrize("content, message", [
    ("{}", "not a demo summary (missing seed, quick, aspects, robust)"),
    ("{not json", "not a readable demo summary"),
    (json.dumps({"seed": 3, "quick": False, "aspects": {}, "robust": {}}), "seed=3 (asked 0)"),
])
def test_a_foreign_summary_is_never_replaced(tmp_path, content, message):
    (tmp_path / "summary.json").write_text(content)
    r = _demo("--out", str(tmp_path), timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "--overwrite" in lines[0], lines
    assert (tmp_path / "summary.json").read_text() == content  # untouched
    assert sorted(os.listdir(tmp_path)) == ["summary.json"]


def test_bad_argument_exits_2():
    r = _demo("--seed", "zero", timeout=120)
    assert r.returncode == 2 and "--seed" in r.stderr


# ------------------------------------------------------------------------------ the shortened run
@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    r = _demo("--out", str(out), "--quick", "--seed", "0", timeout=2400)  # ~3 min CPU; slack for a loaded machine
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(out / "summary.json") as f:
        return out, json.load(f), r.stdout + r.stderr


def test_summary_contract(quick_run):
    out, s, stdout = quick_run
    assert set(s["aspects"]) == set(ASPECTS)
    for a in ASPECTS:
        for k in ("before", "after"):
            assert 0.0 <= s["aspects"][a][k] <= 1.0
    for m in ("ipo", "gr_ipo"):
        r = s["robust"][m]
        assert set(r["group_test_loss"]) == set(GROUPS)
        assert r["worst_group_test_loss"] == max(r["group_test_loss"].values())
        assert r["worst_group_test_reward_accuracy"] == min(r["group_test_reward_accuracy"].values())
    assert sum(s["robust"]["gr_ipo"]["alpha"].values()) == pytest.approx(1.0, abs=1e-4)
    assert s["seconds"] > 0 and s["quick"] is True
    assert set(s["reward_model"]) == set(ASPECTS)
    for path in s["plots"]:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert any(p.endswith("aspects_before_after.png") for p in s["plots"])
    assert any(p.endswith("robust_group_loss.png") for p in s["plots"])
    for stage, run_dir in s["run_dirs"].items():  # an Orbax checkpoint and metrics of every trained model
        ckpt = os.path.join(run_dir, "checkpoints")
        assert any(d.isdigit() for d in os.listdir(ckpt)), f"{stage}: no checkpoint step in {ckpt}"
        assert os.path.isfile(os.path.join(run_dir, "metrics.jsonl"))
    # visible progress: a line per stage, the runner's progress lines, and the final report
    for stage in ("world", "policy_sft", "reward", "grpo", "evaluate", "opinion_sft", "ipo", "gr_ipo"):
        assert f"[demo] stage {stage} done" in stdout
    assert re.search(r"^step \d+/16 \|", stdout, re.M) and "group robustness" in stdout


def test_second_run_reprints_the_report_and_changes_nothing(quick_run):
    out, s, stdout = quick_run
    before = {f: os.path.getmtime(out / f) for f in ("summary.json", "grpo/metrics.jsonl")}
    r = _demo("--out", str(out), "--quick", "--seed", "0", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "finished earlier" in r.stdout and "group robustness" in r.stdout
    assert report_text(s) in r.stdout and report_text(s) in stdout  # the same report as the first time
    assert "stage " not in r.stdout  # nothing was trained again
    assert {f: os.path.getmtime(out / f) for f in before} == before
    with open(out / "summary.json") as f:
        assert json.load(f) == s
    r = _demo("--out", str(out), "--seed", "0", timeout=300)  # the full run was asked for: not this one
    assert r.returncode == 2 and "quick=True (asked False)" in r.stderr


def _numbers(s):
    return {"aspects": s["aspects"], "reward_model": s["reward_model"],
            "robust": {m: {k: v for k, v in r.items() if k != "run_dir"} for m, r in s["robust"].items()}}


def test_rerun_in_a_new_process_gives_identical_numbers(quick_run):
    """Determinism across processes: delete the GRPO stage and re-run; the resumed pipeline trains GRPO
    again from the same SFT policy and reward model, evaluates again, and must write bit-identical numbers
    (the earlier stages are reused; their own determinism is the runner's, tested in tests/train)."""
    out, s, _ = quick_run
    import shutil

    shutil.rmtree(out / "grpo")
    os.remove(out / "summary.json")
    r = _demo("--out", str(out), "--quick", "--seed", "0", timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[demo] stage grpo done" in r.stdout and "stage policy_sft: finished earlier" in r.stdout
    with open(out / "summary.json") as f:
        again = json.load(f)
    assert _numbers(again) == _numbers(s)


def test_quick_run_effect_directions(quick_run):
    """Effects that are robust at the shortened size (the full-size claims are in docs/demo.md)."""
    _, s, _ = quick_run
    rm = s["reward_model"]
    for a in ("politeness", "actionability", "safety"):  # the reward model learned these aspects
        assert rm[a]["pearson"] > 0.8, (a, rm[a])
    # GRPO raised the learned reward it optimised (weighted sum of the reward model's aspect scores)
    w = dict(zip(ASPECTS, stage_config("grpo", []).grpo.reward_weights))
    before = sum(w[a] * s["aspects"][a]["reward_model_before"] for a in ASPECTS)
    after = sum(w[a] * s["aspects"][a]["reward_model_after"] for a in ASPECTS)
    assert after > before
    # ... and the ground-truth politeness, actionability and safety with it (seed 0 quick: +0.32, +0.39,
    # +0.35). Meaningfulness is not asserted: 200 SFT steps are too few for the policy to condition on the
    # request's topic, and the reward model initialised from it does not learn the match (Pearson ~0.02).
    for a in ("politeness", "actionability", "safety"):
        assert s["aspects"][a]["after"] > s["aspects"][a]["before"] + 0.1, (a, s["aspects"][a])
    # GR-IPO moved alpha toward its worst group
    alpha = s["robust"]["gr_ipo"]["alpha"]
    assert max(alpha.values()) > 1.0 / len(GROUPS)
