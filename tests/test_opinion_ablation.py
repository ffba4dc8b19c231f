"""scripts/opinion_ablation.py: its --runs parsing and the one-line error contract (the runs themselves are
the demo's stages, tested in tests/demo)."""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

import opinion_ablation as A  # noqa: E402

from grpojax.cli import UserError  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "opinion_ablation.py")


def test_parse_runs():
    assert A.parse_runs("ipo,gr_ipo@0.003,gr_dpo@1e-4,") == [("ipo", None), ("gr_ipo", 0.003), ("gr_dpo", 1e-4)]
    for text, match in [("ipo,sft", "unknown loss 'sft'"), ("ipo@0.1", "only applies to gr_ipo"),
                        ("gr_ipo@fast", "'fast' is not a number"), (",", "no run given")]:
        with pytest.raises(UserError, match=match):
            A.parse_runs(text)


def test_bad_runs_exit_2_with_one_line_before_building_anything(tmp_path):
    out = tmp_path / "abl"
    r = subprocess.run([sys.executable, SCRIPT, "--out", str(out), "--runs", "ipo,gr_ipo@x"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: --runs: 'gr_ipo@x': eta_alpha 'x' is not a number"]
    assert not out.exists()
