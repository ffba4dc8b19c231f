"""The import direction of the bottom layers: ``losses`` and ``sharding`` depend on nothing above them in
grpojax, ``models`` may use ``sharding`` but not the reverse.

Every ``import`` / ``from ... import`` of a ``grpojax`` module in a package's files is read from the source
(those inside functions included), so an import that runs only when a function is called counts too.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "grpojax"

# package -> the grpojax packages (top-level names under grpojax/) it may import
ALLOWED = {
    "types": set(),
    "losses": {"types"},
    "sharding": {"types"},
    "models": {"sharding", "types"},
}


def grpojax_imports(package: str, root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    """``{file: {top-level grpojax package it imports, other than its own}}`` for every file of ``package``
    (a relative import counts as ``"<relative>"``: grpojax writes absolute imports only)."""
    path = root / package
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    out = {}
    for f in files:
        found = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = ([f"grpojax.{a.name}" for a in node.names] if node.module == "grpojax"
                         else [node.module])
            elif isinstance(node, ast.ImportFrom):
                names = ["grpojax.<relative>"]
            else:
                continue
            found |= {n.split(".")[1] for n in names if n.startswith("grpojax.") and n.count(".") >= 1}
        found.discard(package)
        out[f.relative_to(root.parent).as_posix()] = found
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_layers_below(package):
    bad = {f: sorted(used - ALLOWED[package]) for f, used in grpojax_imports(package).items()
           if used - ALLOWED[package]}
    assert not bad, f"grpojax.{package} may import only {sorted(ALLOWED[package])} of grpojax; found {bad}"


def test_reader_sees_imports_inside_functions(tmp_path):
    """The reader counts an import written inside a function body (the way the sharding -> models and
    sharding -> train imports were hidden), ``from grpojax import x`` and relative imports."""
    pkg = tmp_path / "grpojax" / "fake"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("def f():\n    from grpojax.models import init_cache\n    return init_cache\n")
    (pkg / "b.py").write_text("import jax\nfrom grpojax import train as t\nfrom grpojax.fake import a\n")
    (pkg / "c.py").write_text("from . import a\n")
    assert grpojax_imports("fake", tmp_path / "grpojax") == {
        "grpojax/fake/a.py": {"models"}, "grpojax/fake/b.py": {"train"}, "grpojax/fake/c.py": {"<relative>"}}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_private_name_imported_across_modules(package):
    """A ``_name`` is private to its module: no file of ``package`` imports one from another module."""
    path = ROOT / package
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    bad = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("grpojax"):
                bad += [f"{f.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad
