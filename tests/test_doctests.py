"""The ``>>>`` examples in grpojax's docstrings run and print what they show.

Every module under ``grpojax/`` whose source holds a ``>>>`` is collected, so a new example is tested
without touching this file. Examples run in their module's namespace (``jnp`` / ``np`` as the module
imports them), with ``NORMALIZE_WHITESPACE``.
"""

import doctest
import importlib
import io
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# modules whose examples are known not to run; strict: once fixed, the entry must go
BROKEN: dict[str, str] = {}


def modules_with_examples() -> list[str]:
    names = []
    for f in sorted((ROOT / "grpojax").rglob("*.py")):
        if ">>>" in f.read_text():
            parts = f.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def run_examples(name: str) -> tuple[int, int, str]:
    """``(examples, failures, report)`` of the docstring examples of module ``name``."""
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    out = io.StringIO()
    for test in doctest.DocTestFinder().find(module):
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    return result.attempted, result.failed, out.getvalue()


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=BROKEN[n], strict=True)) if n in BROKEN else n
    for n in modules_with_examples()])
def test_docstring_examples(name):
    attempted, failed, report = run_examples(name)
    assert attempted > 0, f"{name} has '>>>' in its source but doctest found no example"
    assert failed == 0, report


def test_a_wrong_example_fails(tmp_path, monkeypatch):
    """The runner reports an example whose output differs from what it shows."""
    (tmp_path / "doctest_probe.py").write_text('def f():\n    """\n    >>> 1 + 1\n    3\n    """\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    attempted, failed, report = run_examples("doctest_probe")
    assert (attempted, failed) == (1, 1) and "Expected:\n    3\nGot:\n    2" in report
