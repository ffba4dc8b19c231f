"""The body shared by the ``scripts/train_*.py`` entry points (each is a thin shell over this)."""

from __future__ import annotations

from grpojax import cli


def train_main(kind: str, task_factory_path: str, usage: str):
    """``cli.main``-compatible body: parse ``CONFIG key=value ...``, load + validate, train."""

    def body(argv):
        path, overrides = cli.parse_config_argv(argv, usage)
        from grpojax.config import load_config

        cfg = load_config(path, overrides, kind=kind)
        import importlib

        module, name = task_factory_path.split(":")
        task = getattr(importlib.import_module(module), name)(cfg)
        from grpojax.train.runner import run

        summary = run(cfg, task)
        print(f"done: steps {summary['start_step']} -> {summary['end_step']} in "
              f"{summary['seconds']:.1f}s; run_dir={cfg.run_dir}")
        return 0

    return body
