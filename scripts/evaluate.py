#!/usr/bin/env python
"""Evaluate a trained run on held-out data and print one JSON object.

    python scripts/evaluate.py configs/tiny_grpo.yaml run_dir=runs/grpo data.eval_path=prompts.jsonl
    python scripts/evaluate.py configs/tiny_dpo.yaml  run_dir=runs/gr_ipo data.eval_path=pairs.jsonl

The config's kind picks the evaluation: ``grpo``, ``ppo``, ``online_dpo`` -- per-aspect reward (reward
model and/or reward functions of the method's section) and mean reward of the policy's samples on held-out
prompts, the same numbers for the three methods; ``dpo`` -- per-group and
worst-group preference loss, reward accuracy and log-prob accuracy. The policy is the latest checkpoint of
``run_dir`` (or the initial model when the run has none, e.g. to score the base model). ``--out FILE``
also writes the JSON there. Bad input: one line 'error: ...' on stderr and exit status 2.
"""

import json

from grpojax import cli

USAGE = "evaluate.py CONFIG.yaml [key=value ...] [--out FILE]"


def run(argv):
    out = None
    if "--out" in argv:
        i = argv.index("--out")
        if i + 1 >= len(argv):
            raise cli.UserError(f"--out needs a file name; usage: {USAGE}")
        out, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    path, overrides = cli.parse_config_argv(argv, USAGE)
    from grpojax.config import load_config

    cfg = load_config(path, overrides)
    if cfg.kind not in ("grpo", "ppo", "online_dpo", "dpo"):
        raise cli.UserError(f"{path}: evaluate.py handles kind grpo, ppo, online_dpo or dpo configs, got {cfg.kind!r}")
    if not (cfg.data.eval_path or cfg.data.eval_split):
        raise cli.UserError("set data.eval_path (or data.eval_split) to the held-out data")
    from grpojax.checkpoint import Checkpointer, abstract_like
    from grpojax.data import load_from_config

    if cfg.kind == "grpo":
        from grpojax.train.tasks.grpo import GRPOTask as Task
    elif cfg.kind == "ppo":
        from grpojax.train.tasks.ppo import PPOTask as Task
    elif cfg.kind == "online_dpo":
        from grpojax.train.tasks.online_dpo import OnlineDPOTask as Task
    else:
        from grpojax.train.tasks.preference import PreferenceTask as Task
    task = Task(cfg)
    state = task.init_state()
    step = 0
    with Checkpointer(cfg.run_dir, save_every=1, keep=1000) as ckpt:
        restored = ckpt.restore_latest(abstract_like(state))
    if restored is not None:
        state, step = restored.state, restored.step
    if cfg.kind != "dpo":  # prompts: sampled and scored by the method's own reward
        prompts = list(load_from_config(cfg.data, "grpo", split=cfg.data.eval_split or "validation")["prompt"])
        result = task.evaluate(state, prompts, seed=cfg.train.seed)
    else:
        result = task.evaluate(state)
    result = {"run_dir": cfg.run_dir, "step": step, **result}
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    cli.main(run)
