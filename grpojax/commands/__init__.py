"""The ``grpojax`` console command: one subcommand per user-facing script.

    grpojax train-grpo CONFIG [key=value ...]     CONFIG: a YAML file or a shipped preset by name
    grpojax train-ppo | train-dpo | train-online-dpo | train-reward | sft   CONFIG [key=value ...]
    grpojax evaluate CONFIG [key=value ...] [--out FILE]
    grpojax sample --model DIR --prompt TEXT --max-new-tokens N ...
    grpojax convert-hf SRC DST [--to-hf] ...      grpojax plan-memory --model NAME ...
    grpojax plot-metrics RUN_DIR ...              grpojax demo [--out DIR] ...
    grpojax presets                               (the shipped presets, one name per line)

``COMMANDS`` maps each name to ``(module, function, summary)``; the function takes ``(argv, prog)`` and is
run through :func:`grpojax.cli.main` (bad input: one ``error: ...`` line, exit 2). Modules are imported
only when their command runs (``plan-memory`` sets XLA flags before JAX is imported). The scripts in the
repository's ``scripts/`` call the same functions. ``grpojax CMD --help`` prints the command's usage; for
the training commands and ``evaluate`` also every config key with its default and description.
"""

from __future__ import annotations

import importlib
import sys

from grpojax import cli

_TRAIN = {"train-grpo": "grpo", "train-ppo": "ppo", "train-dpo": "dpo", "train-online-dpo": "online_dpo",
          "train-reward": "reward", "sft": "sft"}
_SUMMARY = {"grpo": "multi-objective GRPO", "ppo": "PPO-RLHF", "dpo": "offline preference losses (DPO, IPO, "
            "GR-DPO, GR-IPO, ...)", "online_dpo": "online DPO on the policy's own samples",
            "reward": "multi-label reward model", "sft": "supervised fine-tuning"}

COMMANDS = {
    **{name: ("grpojax.commands", "train_command", f"train: {_SUMMARY[kind]}") for name, kind in _TRAIN.items()},
    "evaluate": ("grpojax.commands.evaluate", "run", "evaluate a run on held-out data (one JSON object)"),
    "sample": ("grpojax.commands", "sample_command", "sample completions from a HF checkpoint"),
    "convert-hf": ("grpojax.commands", "convert_hf_command", "convert a HF checkpoint to Orbax or back"),
    "plan-memory": ("grpojax.commands", "plan_memory_command", "ahead-of-time memory / FLOP plan of a step"),
    "plot-metrics": ("grpojax.commands.plot_metrics", "run", "plot a run's metrics.jsonl as PNG curves"),
    "demo": ("grpojax.commands", "demo_command", "the end-to-end CPU demo (grpojax.demo)"),
    "presets": ("grpojax.commands", "presets_command", "list the shipped presets (names for CONFIG)"),
}


def train_command(argv, prog: str) -> int:
    """``grpojax train-<kind> CONFIG [key=value ...]`` (and ``grpojax sft``)."""
    from grpojax.train.scripting import TASKS, train_main

    kind = _TRAIN[prog.split()[-1]]
    return train_main(kind, TASKS[kind], f"{prog} CONFIG [key=value ...]")(argv)


def sample_command(argv, prog: str) -> int:
    from grpojax.sampling.cli import main

    return main(argv, prog=prog)


def convert_hf_command(argv, prog: str) -> int:
    from grpojax.commands.convert_hf import main

    return main(argv, prog=prog)


def plan_memory_command(argv, prog: str) -> int:
    from grpojax.commands.plan_memory import main

    return main(argv, prog=prog)


def demo_command(argv, prog: str) -> int:
    from grpojax.demo.__main__ import main

    return main(argv, prog=prog)


def presets_command(argv, prog: str) -> int:
    from grpojax.config.presets import PRESET_DIR, preset_names

    if argv:
        raise cli.UserError(f"{prog} takes no arguments; the presets live in {PRESET_DIR}")
    print("\n".join(preset_names()))
    return 0


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: grpojax COMMAND [ARGS ...]   (grpojax COMMAND --help for its arguments)", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, _, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> None:
    """Entry point of the ``grpojax`` console script (``[project.scripts]``): dispatches to a command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if args else cli.EXIT_USER_ERROR)
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(cli.EXIT_USER_ERROR)
    module, func, _ = COMMANDS[name]
    fn = getattr(importlib.import_module(module), func)
    cli.main(lambda a: fn(a, prog=f"grpojax {name}"), rest)
