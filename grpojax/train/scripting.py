"""The body shared by the ``scripts/train_*.py`` entry points (each is a thin shell over this): parse
``CONFIG key=value ...``, load and validate the config of the script's kind, build the task named by
``module:Class`` and run :func:`grpojax.train.runner.run`."""

from __future__ import annotations

import importlib

from grpojax import cli
from grpojax.config import load_config
from grpojax.train.runner import run


def train_main(kind: str, task_factory_path: str, usage: str):
    """``cli.main``-compatible body: parse ``CONFIG key=value ...``, load + validate, train."""

    def body(argv):
        path, overrides = cli.parse_config_argv(argv, usage)
        cfg = load_config(path, overrides, kind=kind)
        module, name = task_factory_path.split(":")
        task = getattr(importlib.import_module(module), name)(cfg)
        summary = run(cfg, task)
        print(f"done: steps {summary['start_step']} -> {summary['end_step']} in "
              f"{summary['seconds']:.1f}s; run_dir={cfg.run_dir}")
        return 0

    return body
