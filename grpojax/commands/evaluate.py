"""Evaluate a trained run on held-out data and print one JSON object.

    grpojax evaluate configs/tiny_grpo.yaml run_dir=runs/grpo data.eval_path=prompts.jsonl
    grpojax evaluate tiny_dpo run_dir=runs/gr_ipo data.eval_path=pairs.jsonl

The config's kind picks the evaluation: ``grpo``, ``ppo``, ``online_dpo`` -- per-aspect reward (reward
model and/or reward functions of the method's section) and mean reward of the policy's samples on held-out
prompts, the same numbers for the three methods; ``dpo`` -- per-group and
worst-group preference loss, reward accuracy and log-prob accuracy. The policy is the latest checkpoint of
``run_dir`` (or the initial model when the run has none, e.g. to score the base model). ``--out FILE``
also writes the JSON there. Bad input: one line 'error: ...' on stderr and exit status 2.
``python scripts/evaluate.py ...`` (a clone) is the same command.
"""

import json

from grpojax import cli

USAGE = "{prog} CONFIG.yaml [key=value ...] [--out FILE]"
KINDS = ("grpo", "ppo", "online_dpo", "dpo")


def run(argv, prog: str = "evaluate.py"):
    """``cli.main`` body; ``prog`` names the command in the usage line."""
    usage = USAGE.format(prog=prog)
    out = None
    if "--out" in argv:
        i = argv.index("--out")
        if i + 1 >= len(argv):
            raise cli.UserError(f"--out needs a file name; usage: {usage}")
        out, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    path, overrides = cli.parse_config_argv(argv, usage, kinds=KINDS)
    from grpojax.config import load_config

    cfg = load_config(path, overrides)
    if cfg.kind not in KINDS:
        raise cli.UserError(f"{path}: {prog} handles kind grpo, ppo, online_dpo or dpo configs, got {cfg.kind!r}")
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
        data = load_from_config(cfg.data, "grpo", split=cfg.data.eval_split or "validation")
        columns = {k: data[k] for k in data.column_names if k != "prompt"}  # for the reward functions
        result = task.evaluate(state, list(data["prompt"]), seed=cfg.train.seed, columns=columns)
    else:
        result = task.evaluate(state)
    result = {"run_dir": cfg.run_dir, "step": step, **result}
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    return 0
