"""ruff (configured in pyproject.toml: pycodestyle, pyflakes, import order, bugbear, pyupgrade) finds nothing.

Runs ``python -m ruff check grpojax tests scripts benchmarks`` from the repository root with the
interpreter running the tests (ruff is in the ``test`` extra).
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "grpojax", "tests", "scripts",
                           "benchmarks"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
