"""The Python API: one trainer class per kind, the scripts' code path driven from a notebook.

    GRPOTrainer, PPOTrainer, OnlineDPOTrainer     (prompt data; reward callables)
    DPOTrainer, RewardTrainer, SFTTrainer         (pairs / labelled / supervised data)

Each takes a model (a HF directory / hub id, or a ``grpojax.models.Qwen`` module), a training dataset (a
``datasets.Dataset``, a list of dicts or a data file), a config (a :class:`grpojax.config.RunConfig`, a
dict of sections, a YAML file or a shipped preset name; None = the kind's defaults) and, for the online
kinds, reward callables ``fn(prompts, completions) -> [N] floats`` (TRL's convention). What it does with
them, before building the same validated config a YAML file gives:

- ``model``: a string sets ``model.path`` (and drops the config's ``model.preset`` / ``model.shape``); a
  module is exported once as a HF directory to ``run_dir/base_model`` and used from there;
- ``train_dataset`` / ``eval_dataset``: a ``Dataset`` or list is written to ``run_dir/data/train.jsonl``
  (``eval.jsonl``) and read from there as ``data.format: columns`` (the column names of ``data.*``,
  ``prompt`` by default); a string is a data file or hub id. Without evaluation data ``train.eval_every``
  becomes 0;
- ``reward_funcs``: callables are registered by name (``fn.__name__``; see
  :func:`grpojax.rollout.text_rewards.register`) and replace the section's ``reward_funcs`` (strings are
  the config's own reward names); each is an aspect, logged as ``rewards/<name>/mean``;
- ``overrides``: ``{"train.steps": 10}`` or ``["train.steps=10"]``, applied last; ``run_dir`` likewise.

:meth:`Trainer.train` builds the task of the kind (``grpojax.train.scripting.TASKS``) and runs
:func:`grpojax.train.runner.run` -- checkpoints, resume, metrics.jsonl, completions.jsonl, W&B, export
as with the scripts -- with the ``callbacks`` given; afterwards ``trainer.model`` is the trained policy and
``trainer.metrics()`` the logged rows.

Example (docs/python_api.md)::

    trainer = GRPOTrainer("Qwen/Qwen2.5-0.5B-Instruct", dataset, reward_funcs=[brevity],
                          config={"train": {"steps": 200}}, run_dir="runs/notebook")
    trainer.train()
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any

from grpojax.cli import UserError
from grpojax.config import RunConfig, config_from_dict, config_to_dict, load_config
from grpojax.train.callbacks import Callback

ROLLOUT_KINDS = ("grpo", "ppo", "online_dpo")


class _Final(Callback):
    """Keeps the final train state for :attr:`Trainer.model`."""

    def __init__(self):
        self.state = None

    def on_train_end(self, step, state, ctx):
        self.state = state


def _set(raw: dict, dotted: str, value) -> None:
    *sections, key = dotted.split(".")
    for s in sections:
        raw = raw.setdefault(s, {})
        if not isinstance(raw, dict):
            raise UserError(f"override {dotted!r}: {s!r} is a value, not a section")
    raw[key] = value


def _config_dict(config, kind: str) -> dict:
    if config is None:
        return {"kind": kind}
    if isinstance(config, str):
        return config_to_dict(load_config(config, kind=kind))
    if isinstance(config, dict):
        raw = copy.deepcopy(config)
        if raw.setdefault("kind", kind) != kind:
            raise UserError(f"config: this is a kind={raw['kind']!r} config but the trainer needs kind={kind!r}")
        return raw
    if hasattr(config, "kind") and hasattr(config, "train"):  # a RunConfig
        if config.kind != kind:
            raise UserError(f"config: this is a kind={config.kind!r} config but the trainer needs kind={kind!r}")
        return config_to_dict(config)
    raise TypeError(f"config must be None, a RunConfig, a dict, a YAML path or a preset name, got {type(config)}")


def _data_file(data, path: str) -> str:
    if isinstance(data, str):
        return data
    import datasets

    if isinstance(data, list):
        data = datasets.Dataset.from_list(data)
    if not isinstance(data, datasets.Dataset):
        raise TypeError(f"a dataset must be a datasets.Dataset, a list of dicts or a file path, got {type(data)}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data.to_json(path, lines=True)
    return path


def _reward_names(funcs: Sequence[str | Callable]) -> list[str]:
    from grpojax.rollout import text_rewards

    names = []
    for i, fn in enumerate(funcs):
        if isinstance(fn, str):
            names.append(fn)
            continue
        name = getattr(fn, "__name__", "")
        name = name if name and name != "<lambda>" else f"reward{i}"
        names.append(text_rewards.register(name, fn))
    if len(set(names)) != len(names):
        raise ValueError(f"reward functions need distinct names, got {names}")
    return names


class Trainer:
    """Trains one kind of run from Python (see the module docstring); subclasses set ``kind``."""

    kind = ""

    def __init__(self, model: Any = None, train_dataset: Any = None, config: Any = None, *,
                 eval_dataset: Any = None, tokenizer: str | None = None,
                 reward_funcs: Sequence[str | Callable] = (), overrides: dict | Sequence[str] | None = None,
                 callbacks: Sequence[Callback] = (), run_dir: str | None = None):
        raw = _config_dict(config, self.kind)
        if run_dir is not None:
            raw["run_dir"] = run_dir
        run_dir = raw.get("run_dir") or "runs/default"
        if model is not None:
            if not isinstance(model, str):  # a grpojax Qwen module: exported once, then loaded as a checkpoint
                from grpojax.models import to_hf

                model = to_hf(model, os.path.join(run_dir, "base_model"), overwrite=True)
            m = raw.setdefault("model", {})
            m.update(path=model, preset=None)
            m.pop("shape", None)
        if tokenizer is not None:
            _set(raw, "tokenizer.path", tokenizer)
        if train_dataset is not None:
            d = raw.setdefault("data", {})
            d.update(path=_data_file(train_dataset, os.path.join(run_dir, "data", "train.jsonl")),
                     format="columns", name=None, split="train", eval_split=None, eval_path=None)
            if eval_dataset is not None:
                d["eval_path"] = _data_file(eval_dataset, os.path.join(run_dir, "data", "eval.jsonl"))
            else:
                _set(raw, "train.eval_every", 0)
        elif eval_dataset is not None:
            _set(raw, "data.eval_path", _data_file(eval_dataset, os.path.join(run_dir, "data", "eval.jsonl")))
        if reward_funcs:
            if self.kind not in ROLLOUT_KINDS:
                raise TypeError(f"{type(self).__name__} takes no reward functions (only {', '.join(ROLLOUT_KINDS)})")
            _set(raw, f"{self.kind}.reward_funcs", _reward_names(reward_funcs))
        items = overrides.items() if isinstance(overrides, dict) else (
            item.split("=", 1) for item in (overrides or ()))
        for key, value in items:
            _set(raw, key.strip(), value)
        self.config: RunConfig = config_from_dict(raw, self.kind, source=type(self).__name__)
        self.callbacks = list(callbacks)
        self.task = self.state = None

    def train(self) -> dict:
        """Runs the training (resuming from ``run_dir``'s latest checkpoint if there is one); returns the
        runner's summary ``{"start_step", "end_step", "stopped_early", "seconds"}``."""
        from grpojax.train.runner import run
        from grpojax.train.scripting import TASKS

        module, name = TASKS[self.kind].split(":")
        self.task = getattr(importlib.import_module(module), name)(self.config)
        final = _Final()
        summary = run(self.config, self.task, callbacks=[*self.callbacks, final])
        self.state = final.state
        return summary

    @property
    def model(self):
        """The trained model (a ``grpojax.models.Qwen``; a reward run: its reward model) after :meth:`train`."""
        if self.state is None:
            raise RuntimeError("call train() first")
        return self.task.model_of(self.state)

    def metrics(self) -> list[dict]:
        """The rows of ``run_dir/metrics.jsonl``."""
        from grpojax.metrics import read_metrics

        return read_metrics(os.path.join(self.config.run_dir, "metrics.jsonl"))


class GRPOTrainer(Trainer):
    """Multi-objective GRPO (``grpojax train-grpo``)."""

    kind = "grpo"


class PPOTrainer(Trainer):
    """PPO-RLHF (``grpojax train-ppo``)."""

    kind = "ppo"


class OnlineDPOTrainer(Trainer):
    """Online DPO on the policy's own samples (``grpojax train-online-dpo``)."""

    kind = "online_dpo"


class DPOTrainer(Trainer):
    """Offline preference losses: DPO, IPO, hinge, GR-DPO, GR-IPO, IS-DPO (``grpojax train-dpo``)."""

    kind = "dpo"


class RewardTrainer(Trainer):
    """Multi-label / Bradley-Terry reward model (``grpojax train-reward``)."""

    kind = "reward"


class SFTTrainer(Trainer):
    """Supervised fine-tuning (``grpojax sft``)."""

    kind = "sft"
