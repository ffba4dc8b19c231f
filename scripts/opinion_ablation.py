"""Ablations of the demo's group-opinion stage: IPO vs GR-IPO under other task / training settings.

    python scripts/opinion_ablation.py --seed 1 --out runs/opinion_ablation/s1 \\
        --small-fraction 0.25 --runs ipo,gr_ipo@0.001,gr_ipo@0.01 [--no-category] [--one-rejected] \\
        [--sft train.steps=150 ...] [--pref train.steps=100 train.schedule=constant ...]

Builds the demo world of ``--seed`` with the given :func:`grpojax.demo.opinions.opinion_pairs` settings
(``--small-fraction``, ``--no-category``: prompts without the category, ``--one-rejected``: one random
rejected letter per training question), runs the demo's ``opinion_sft`` stage (the reference) and then
every run of ``--runs`` (``ipo``, ``gr_ipo``, ``dpo``, ``gr_dpo``; ``gr_ipo@0.001`` sets ``eta_alpha``)
with the demo's configs (``configs/demo/``) plus the ``--sft`` / ``--pref`` overrides. Each run gets its
own run directory, so a second invocation with other ``--runs`` / ``--pref`` reuses the world and the
reference (``--tag`` keeps the directories of different ``--pref`` settings apart). Prints one line per run
and writes ``OUT/ablation_<tag>.json`` (per-group / worst-group test loss and reward accuracy, alpha, the
reference's test NLL per group). This is how the settings in ``grpojax/demo/opinions.py`` ("What did not
work") and ``docs/demo.md`` were compared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from grpojax import cli  # noqa: E402
from grpojax.cli import UserError  # noqa: E402

LOSSES = ("ipo", "gr_ipo", "dpo", "gr_dpo")
KEYS = ("worst_group_test_loss", "group_test_loss", "worst_group_test_reward_accuracy",
        "group_test_reward_accuracy", "alpha", "reference_group_test_nll")


def parse_runs(text: str) -> list[tuple[str, float | None]]:
    """``"ipo,gr_ipo@0.003"`` -> ``[("ipo", None), ("gr_ipo", 0.003)]``; bad entries are a UserError."""
    runs = []
    for spec in filter(None, text.split(",")):
        loss, _, eta = spec.partition("@")
        if loss not in LOSSES:
            raise UserError(f"--runs: {spec!r}: unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
        if eta and not loss.startswith("gr_"):
            raise UserError(f"--runs: {spec!r}: @eta_alpha only applies to gr_ipo / gr_dpo")
        try:
            runs.append((loss, float(eta) if eta else None))
        except ValueError:
            raise UserError(f"--runs: {spec!r}: eta_alpha {eta!r} is not a number") from None
    if not runs:
        raise UserError("--runs: no run given (e.g. --runs ipo,gr_ipo@0.003)")
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--small-fraction", type=float, default=0.5)
    p.add_argument("--no-category", action="store_true", help="prompts without the question's category")
    p.add_argument("--one-rejected", action="store_true", help="one random rejected letter per training question")
    p.add_argument("--runs", default="ipo,gr_ipo")
    p.add_argument("--sft", nargs="*", default=[], help="overrides of the opinion_sft stage")
    p.add_argument("--pref", nargs="*", default=[], help="overrides of every preference run")
    p.add_argument("--tag", default="", help="suffix of the preference runs' directories and the JSON file")
    args = p.parse_args(argv)
    runs = parse_runs(args.runs)

    from grpojax.demo import pipeline as P
    from grpojax.demo import pipeline_stages as S
    from grpojax.demo.build import build_world
    from grpojax.train.tasks import SFTTask

    task = dict(small_fraction=args.small_fraction, category_in_prompt=not args.no_category,
                train_all_rejected=not args.one_rejected)
    wdir = os.path.join(args.out, "world")
    settings_path = os.path.join(args.out, "opinion_settings.json")
    if os.path.isfile(os.path.join(wdir, "world.json")):
        with open(settings_path) as f:
            have = json.load(f)
        if have != {**task, "seed": args.seed}:
            raise UserError(f"{args.out} holds a world built with {have}; use another --out")
        world = P.world_at(args.out, args.seed)
    else:
        world = build_world(wdir, args.seed, **task)
        with open(settings_path, "w") as f:
            json.dump({**task, "seed": args.seed}, f)
    with open(world["world"]) as f:
        vocab = json.load(f)["tokenizer"]["vocab_size"]
    data = S.prepare_data(world, os.path.join(args.out, "data"))

    def overrides(stage, extra):
        return P.stage_overrides(stage, args.out, args.seed, vocab, False, extra or {})

    sft_cfg = S.stage_config("opinion_sft", overrides("opinion_sft", {"data.path": data["opinions_sft"]}) + args.sft)
    if S.stage_done(sft_cfg.run_dir) is None:
        S.train_stage(sft_cfg, SFTTask(sft_cfg))
        S.mark_done(sft_cfg.run_dir, {"run_dir": sft_cfg.run_dir})
    results = {}
    for loss, eta in runs:
        name = loss + (f"@{eta:g}" if eta is not None else "") + args.tag
        extra = [f"run_dir={os.path.join(args.out, name)}"] + ([f"preference.eta_alpha={eta}"] if eta else [])
        r = P._robust_stage(loss, lambda stage, ex=None, extra=extra: S.stage_config(
            stage, overrides(stage, ex) + args.pref + extra), data, args.out)
        results[name] = {k: r[k] for k in KEYS if k in r}
        alpha = " ".join(f"{v:.2f}" for v in r.get("alpha", {}).values())
        print(f"{name:24s} worst-group test loss {r['worst_group_test_loss']:.3f}  per group "
              + " ".join(f"{g} {v:.3f}" for g, v in r["group_test_loss"].items())
              + (f"  alpha {alpha}" if alpha else ""), flush=True)
    path = os.path.join(args.out, f"ablation{args.tag}.json")
    with open(path, "w") as f:
        json.dump({"seed": args.seed, "task": task, "sft": args.sft, "pref": args.pref, "runs": results}, f, indent=2)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    cli.main(main)
