"""GRPO vs group-robust GRPO on the demo world: ``python -m grpojax.demo.robust_grpo --out DIR --seeds 0 1 2``.

The groups: ``standard`` requests are the demo's; ``dialect`` requests ask for the same tasks in a
dialect of the world's language that neither the SFT data nor the reward model's data contain
(:data:`DIALECT`: other function words, the task and its nouns unchanged, so the ground-truth scorers read
them as usual). The SFT policy serves the dialect worse (on seed 100, held-out ground-truth reward 0.567
vs 0.656, mostly meaningfulness: it loses the request's topic). Training prompts: the demo's 116 train
requests plus one dialect request per task (29 of 145, mu = 0.2; the dialect template drawn from the
seed); held-out: the demo's 29 held-out requests and 29 dialect requests, each task in a dialect template
other than its training one.

Per seed, in ``DIR/s<seed>`` (a demo run directory: its world, ``policy_sft`` and ``reward`` stages are
reused when a demo run of that seed finished them, else trained here with the demo's configs):

1. the prompt files ``data/robust_grpo_{train,heldout}.jsonl`` (columns prompt, group);
2. ``robust_grpo/<method>``: the demo's GRPO stage (``configs/demo/grpo.yaml``: 60 steps x 64 completions,
   same SFT policy, reward model, seed, data order) on these prompts, for ``grpo`` and for ``robust_grpo``
   (the same plus ``grpo.robust`` with :data:`SETTINGS`): equal budgets;
3. the ground-truth reward of each group, before (SFT) and after each method: :data:`EVAL_SAMPLES` samples
   of every held-out request, scored by the world's rule scorers, aggregated with GRPO's reward weights
   normalised to sum 1 (so a reward lies in [0, 1]); alpha over the steps from ``metrics.jsonl``.

``DIR/robust_grpo.json``, ``.md`` (the table) and ``.png`` gather the seeds
(:mod:`grpojax.demo.robust_grpo_report`). ``--eta`` / ``--chi`` / ``--tag`` run other settings into
``robust_grpo/robust_grpo_<tag>`` (the tuning runs).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from grpojax import cli

GROUPS = ("standard", "dialect")
DIALECT = ("yo fam , how i gotta {task} ?", "pls show me how 2 {task} , ok ?", "wanna {task} , wat do ?",
           "how 2 {task} fam ?", "any trix 2 {task} ?")
SETTINGS = {"eta_alpha": 0.1, "chi": 0.5}  # chosen on tuning seeds 100, 101 (docs/robust_grpo.md)
EVAL_SAMPLES = 32
METHODS = ("grpo", "robust_grpo")


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def group_prompts(seed: int) -> dict[str, list[dict]]:
    """``{"train": rows, "heldout": rows}`` with keys prompt (the request text), group (module docstring)."""
    from grpojax.demo.world import TOPICS, split_requests

    train, held = split_requests(seed)
    rng = np.random.default_rng([seed, 30])
    tasks = [task for topic in TOPICS.values() for task in topic.tasks]
    pick = {task: rng.choice(len(DIALECT), size=2, replace=False) for task in tasks}  # (train, held-out)
    return {"train": [{"prompt": r.text, "group": "standard"} for r in train] +
                     [{"prompt": DIALECT[pick[t][0]].format(task=t), "group": "dialect"} for t in tasks],
            "heldout": [{"prompt": r.text, "group": "standard"} for r in held] +
                       [{"prompt": DIALECT[pick[t][1]].format(task=t), "group": "dialect"} for t in tasks]}


def prepare(out: str, seed: int, quick: bool = False) -> dict:
    """The seed's world, policy SFT and reward model (reused when finished), and the group prompt files."""
    from grpojax.compilation import use_compilation_cache
    from grpojax.demo import pipeline as P
    from grpojax.demo import pipeline_stages as S
    from grpojax.demo.datasets import write_jsonl
    from grpojax.train.tasks import SFTTask
    from grpojax.train.tasks.reward import RewardTask

    os.makedirs(out, exist_ok=True)
    use_compilation_cache(P.cache_dir(out), min_compile_seconds=0.2)
    world = P.world_at(out, seed)
    with open(world["world"], encoding="utf-8") as f:
        vocab = json.load(f)["tokenizer"]["vocab_size"]
    data = S.prepare_data(world, os.path.join(out, "data"))
    for stage, cls, extra in (("policy_sft", SFTTask, {"data.path": data["sft"]}),
                              ("reward", RewardTask, {"data.path": data["reward_train"],
                                                      "data.eval_path": data["reward_heldout"]})):
        cfg = S.stage_config(stage, P.stage_overrides(stage, out, seed, vocab, quick, extra))
        if S.stage_done(cfg.run_dir) is None:
            _log(f"robust_grpo: stage {stage} ...")
            S.train_stage(cfg, cls(cfg))
            S.mark_done(cfg.run_dir, {"run_dir": cfg.run_dir})
    files = {split: write_jsonl(rows, os.path.join(out, "data", f"robust_grpo_{split}.jsonl"), overwrite=True)
             for split, rows in group_prompts(seed).items()}
    return {"vocab": vocab, "files": files}


def grpo_config(out: str, seed: int, vocab: int, name: str, robust: dict | None, *, quick: bool = False,
                steps: int | None = None):
    """The demo's GRPO stage config on the group prompts, into ``robust_grpo/<name>``."""
    from grpojax.demo import pipeline as P
    from grpojax.demo import pipeline_stages as S

    run_dir = os.path.join(out, "robust_grpo", name)
    extra = {"data.path": os.path.join(out, "data", "robust_grpo_train.jsonl"),
             "model.path": os.path.join(out, "policy_sft", "hf"), "grpo.reward_model": os.path.join(out, "reward")}
    over = P.stage_overrides("grpo", out, seed, vocab, quick, extra)
    over += [f"run_dir={run_dir}", f"export_hf={os.path.join(run_dir, 'hf')}"]
    if robust is not None:
        over += ["grpo.robust.group_column=group"] + [f"grpo.robust.{k}={v}" for k, v in robust.items()]
    if steps is not None:
        over.append(f"train.steps={steps}")
    return S.stage_config("grpo", over)


def group_rewards(policy_dir: str, out: str, cfg, seed: int, samples: int) -> dict:
    """Ground-truth reward (weights normalised to 1) and aspect means of each group on held-out requests."""
    from grpojax.demo import pipeline_stages as S
    from grpojax.demo.datasets import read_jsonl
    from grpojax.demo.scorers import ASPECTS

    rows = read_jsonl(os.path.join(out, "data", "robust_grpo_heldout.jsonl"))
    w = np.asarray(cfg.grpo.reward_weights, np.float64)
    w = w / w.sum()
    result = {}
    for g in GROUPS:
        prompts = [r["prompt"] for r in rows if r["group"] == g]
        ev = S.evaluate_policy(policy_dir, os.path.join(out, "reward"), cfg, prompts, num_samples=samples,
                               seed=seed + 1000)
        gt = ev["ground_truth"]
        result[g] = {"reward": float(sum(wi * gt[a] for wi, a in zip(w, ASPECTS))), "aspects": gt,
                     "samples": ev["n"]}
    return result


def alpha_curve(run_dir: str) -> dict:
    """``{"step": [...], "<group>": [...]}``: alpha after every logged step of a group-robust run."""
    from grpojax.metrics import read_metrics

    rows = [r for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if "robust/alpha/dialect" in r]
    return {"step": [r["step"] for r in rows], **{g: [r[f"robust/alpha/{g}"] for r in rows] for g in GROUPS}}


def run_seed(out: str, seed: int, *, settings: dict, tag: str | None = None, quick: bool = False,
             steps: int | None = None, samples: int = EVAL_SAMPLES, methods=METHODS) -> dict:
    """Both methods on one seed (module docstring); the result is also ``robust_grpo/summary[_<tag>].json``."""
    from grpojax.demo import pipeline_stages as S
    from grpojax.train.tasks.grpo import GRPOTask

    prep = prepare(out, seed, quick)
    base = grpo_config(out, seed, prep["vocab"], "grpo", None, quick=quick, steps=steps)
    before_path = os.path.join(out, "robust_grpo", f"before_{samples}.json")
    if os.path.isfile(before_path):
        with open(before_path, encoding="utf-8") as f:
            before = json.load(f)
    else:
        before = group_rewards(os.path.join(out, "policy_sft", "hf"), out, base, seed, samples)
        os.makedirs(os.path.dirname(before_path), exist_ok=True)
        with open(before_path, "w", encoding="utf-8") as f:
            json.dump(before, f, indent=2)
    train = group_prompts(seed)["train"]
    mu = {g: sum(r["group"] == g for r in train) / len(train) for g in GROUPS}
    result = {"seed": seed, "settings": settings, "steps": base.train.steps, "before": before, "after": {},
              "mu": mu, "alpha": None}
    for method in methods:
        name = method if method == "grpo" or tag is None else f"{method}_{tag}"
        cfg = grpo_config(out, seed, prep["vocab"], name, settings if method != "grpo" else None,
                          quick=quick, steps=steps)
        if S.stage_done(cfg.run_dir) is None:
            _log(f"robust_grpo: seed {seed} {name} ...")
            S.train_stage(cfg, GRPOTask(cfg))
            S.mark_done(cfg.run_dir, {"run_dir": cfg.run_dir,
                                      "after": group_rewards(os.path.join(cfg.run_dir, "hf"), out, cfg, seed,
                                                             samples)})
        result["after"][method] = S.stage_done(cfg.run_dir)["after"]
        if method != "grpo":
            result["alpha"] = alpha_curve(cfg.run_dir)
    path = os.path.join(out, "robust_grpo", f"summary{'' if tag is None else '_' + tag}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m grpojax.demo.robust_grpo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/robust_grpo", help="one demo run directory per seed: OUT/s<seed>")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eta", type=float, default=SETTINGS["eta_alpha"], help="grpo.robust.eta_alpha")
    p.add_argument("--chi", type=float, default=SETTINGS["chi"], help="grpo.robust.chi")
    p.add_argument("--tag", default=None, help="name of a settings variant (tuning): robust_grpo_<tag>")
    p.add_argument("--steps", type=int, default=None, help="GRPO steps (default: the demo's 60)")
    p.add_argument("--quick", action="store_true", help="the demo's --quick stage lengths (tests)")
    p.add_argument("--samples", type=int, default=EVAL_SAMPLES, help="evaluation samples per held-out request")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="default: both")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from grpojax.demo.robust_grpo_report import write_report

    settings = {"eta_alpha": args.eta, "chi": args.chi}
    results = [run_seed(os.path.join(args.out, f"s{s}"), s, settings=settings, tag=args.tag, quick=args.quick,
                        steps=args.steps, samples=args.samples, methods=args.methods) for s in args.seeds]
    print(write_report(results, args.out, args.tag), flush=True)
    return 0


if __name__ == "__main__":
    cli.main(main)
