"""The import direction of grpojax, read from the source with ``ast`` (imports inside functions too).

Each package may import only the packages listed for it in ``ALLOWED`` (besides itself and
``grpojax.types`` / ``grpojax.cli``, which everything may use): ``losses`` and ``sharding`` nothing above
them, ``models`` may use ``sharding`` (not the reverse), the pure ``train.steps`` use ``losses``, ``models``
and ``sharding``, ``rollout`` (sampling and scoring) sits below ``train.tasks``, and the tasks use the
steps, the rollout and the data but never the runner or each other (only ``tasks.base`` /
``tasks.reference``). No module imports a ``_private`` name of another module.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = {"grpojax.types", "grpojax.cli"}
DATA = {"grpojax.data", "grpojax.config", "grpojax.checkpoint", "grpojax.metrics", "grpojax.compilation"}
ALLOWED = {
    "grpojax.losses": set(),
    "grpojax.sharding": set(),
    "grpojax.models": {"grpojax.sharding"},
    "grpojax.sampling": {"grpojax.models", "grpojax.sharding"},
    "grpojax.rewards": {"grpojax.losses"},
    "grpojax.data": set(),
    "grpojax.config": {"grpojax.models"},
    "grpojax.checkpoint": {"grpojax.config"},
    "grpojax.train.steps": {"grpojax.losses", "grpojax.models", "grpojax.sharding"},
    "grpojax.train.build": {"grpojax.models", "grpojax.train.steps"},
    "grpojax.train.placement": {"grpojax.sharding", "grpojax.sampling", "grpojax.train.steps"},
    "grpojax.rollout": {"grpojax.losses", "grpojax.models", "grpojax.sharding", "grpojax.sampling",
                        "grpojax.rewards", "grpojax.train.steps", "grpojax.train.build"} | DATA,
    "grpojax.train.tasks": {"grpojax.losses", "grpojax.models", "grpojax.sharding", "grpojax.train.steps",
                            "grpojax.train.build", "grpojax.train.placement", "grpojax.rollout"} | DATA,
    "grpojax.train.runner": {"grpojax.sharding"} | DATA,
}
def _modules():
    for root, _, files in os.walk(os.path.join(ROOT, "grpojax")):
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), ROOT)[:-3].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), os.path.join(root, f)


def _imports(path):
    """``(module imported, [names])`` of every absolute grpojax import in the file, at any depth."""
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "grpojax":
            assert node.level == 0
            if node.module == "grpojax":  # from grpojax import sharding as shd
                for a in node.names:
                    yield f"grpojax.{a.name}", []
            else:
                yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "grpojax":
                    yield a.name, []


def _layer(module):
    """The longest ``ALLOWED`` key that ``module`` is in (None: a layer this test does not constrain)."""
    hits = [k for k in ALLOWED if module == k or module.startswith(k + ".")]
    return max(hits, key=len) if hits else None


def _target_layer(module):
    hits = [k for k in set(ALLOWED) | BASE | DATA | {"grpojax.rollout", "grpojax.train.runner"}
            if module == k or module.startswith(k + ".")]
    return max(hits, key=len) if hits else module


def test_every_package_imports_only_the_layers_below_it():
    bad = []
    for module, path in _modules():
        layer = _layer(module)
        if layer is None:
            continue
        for imported, _ in _imports(path):
            target = _target_layer(imported)
            if target == layer or target in BASE or target in ALLOWED[layer]:
                continue
            bad.append(f"{module} imports {imported}")
    assert not bad, "\n".join(bad)


def test_tasks_import_no_sibling_task_and_nothing_imports_a_private_name():
    shared = {"grpojax.train.tasks.base", "grpojax.train.tasks.reference"}
    bad = []
    for module, path in _modules():
        for imported, names in _imports(path):
            if module.startswith("grpojax.train.tasks.") and imported.startswith("grpojax.train.tasks.") \
                    and imported not in shared and module != imported:
                bad.append(f"{module} imports the task {imported}")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and imported != module:
                bad.append(f"{module} imports {private} from {imported}")
    assert not bad, "\n".join(bad)


def test_the_rules_see_imports_inside_functions(tmp_path):
    """The parser reads an import nested in a function body (where the old sharding -> train one was)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    if True:\n        from grpojax.train.steps.state import _x\n")
    assert list(_imports(str(f))) == [("grpojax.train.steps.state", ["_x"])]
