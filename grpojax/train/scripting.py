"""The body shared by the training commands (``grpojax train-grpo ...``, ``scripts/train_*.py``): each is
a thin shell over :func:`train_main` with the task class of its kind (``TASKS``)."""

from __future__ import annotations

from grpojax import cli

TASKS = {  # config kind -> the task class that trains it ("module:Class", imported when the command runs)
    "grpo": "grpojax.train.grpo_task:GRPOTask",
    "ppo": "grpojax.train.ppo_task:PPOTask",
    "dpo": "grpojax.train.preference_task:PreferenceTask",
    "online_dpo": "grpojax.train.online_dpo_task:OnlineDPOTask",
    "reward": "grpojax.train.reward_task:RewardTask",
    "sft": "grpojax.train.tasks:SFTTask",
}


def train_main(kind: str, task_factory_path: str, usage: str):
    """``cli.main``-compatible body: parse ``CONFIG key=value ...`` (``--help`` lists every config key of
    ``kind``), load + validate, train."""

    def body(argv):
        path, overrides = cli.parse_config_argv(argv, usage, kinds=(kind,))
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
