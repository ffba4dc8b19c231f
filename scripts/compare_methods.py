#!/usr/bin/env python
"""SFT vs GRPO vs PPO vs online DPO from the same SFT checkpoint and reward model, equal completions per
method (issue 8; the comparison of the multi-objective GRPO paper, arXiv 2503.21819).

Built-in world (CPU, offline), per seed: the demo's world / policy SFT / reward-model stages (or a finished
demo run's outputs with --from-demo), then each method in its own subprocess, then the ground-truth and
reward-model evaluation of SFT and every method on the held-out requests:

    python scripts/compare_methods.py --out runs/compare --seeds 0,1,2 [--quick] [--from-demo runs/demo_s{seed}]

Qwen2.5 presets (a GPU / TPU machine; LoRA; PKU-SafeRLHF prompts as a local JSONL / parquet file with a
``prompt`` column; evaluation = reward-model scores on held-out prompts):

    python scripts/compare_methods.py --out runs/compare_0.5b --preset qwen2.5-0.5b --lora-rank 16 \\
        --policy Qwen/Qwen2.5-0.5B-Instruct --reward-model runs/reward_qwen2.5-0.5b/hf --prompts pku.jsonl

Outputs: OUT/compare.json (every number, per seed), OUT/compare.md (mean ± std table), OUT/compare.png.
Per-seed run directories live under OUT/seed<N>/; a finished method (measure.json) or evaluation
(eval.json) is reused when the command is rerun. Bad input: one line 'error: ...' and exit 2; an existing
OUT/compare.json is never replaced without --overwrite.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from grpojax import cli  # noqa: E402
from grpojax.cli import UserError  # noqa: E402

PRESETS = ("qwen2.5-0.5b", "qwen2.5-7b", "qwen2.5-14b")
DEMO_NEEDS = ("world/world.json", "world/tokenizer", "data/grpo_train.jsonl", "data/grpo_heldout.jsonl",
              "policy_sft/hf/config.json", "policy_sft/stage_done.json", "reward/stage_done.json")


def _log(msg: str) -> None:
    print(f"[compare] {msg}", flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="compare_methods.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--methods", default="grpo,ppo,online_dpo", help="subset of grpo,ppo,online_dpo")
    p.add_argument("--quick", action="store_true", help="built-in world: the demo's shortened settings")
    p.add_argument("--from-demo", metavar="DIR_TEMPLATE",
                   help="reuse a finished demo run per seed, e.g. runs/demo_s{seed} (world, SFT, reward model)")
    p.add_argument("--spec", help="comparison spec (default configs/compare/demo.yaml or <preset>.yaml)")
    p.add_argument("--preset", choices=PRESETS, help="run on a real Qwen2.5 checkpoint instead of the world")
    p.add_argument("--policy", help="--preset: the SFT policy (HF directory or hub id)")
    p.add_argument("--reward-model", help="--preset: the 4-aspect reward model (HF directory or reward run_dir)")
    p.add_argument("--prompts", help="--preset: local JSONL / parquet of PKU-SafeRLHF prompts (column 'prompt')")
    p.add_argument("--lora-rank", type=int, help="--preset: LoRA rank of every method (0 = full fine-tuning)")
    p.add_argument("--eval-prompts", type=int, help="held-out prompts (--preset; default from the spec)")
    p.add_argument("--eval-samples", type=int, help="completions per held-out prompt (default from the spec)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every method (a grpo./ppo./online_dpo./preference. key: that "
                        "method only; PPO / online DPO copy GRPO's rollout fields)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/compare.json")
    return p.parse_args(argv)


def check_args(a) -> tuple[list[int], list[str]]:
    """Everything checkable before any heavy import; raises UserError with one clear line."""
    from grpojax.demo.compare import METHODS

    try:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {a.seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {a.seeds!r}: give one or more distinct seeds")
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise UserError(f"--methods: unknown method(s) {bad or methods}; valid methods: {', '.join(METHODS)}")
    if os.path.exists(os.path.join(a.out, "compare.json")) and not a.overwrite:
        raise UserError(f"{os.path.join(a.out, 'compare.json')} exists; pass --overwrite to replace it (or use "
                        "another --out)")
    for kv in a.set:
        if "=" not in kv:
            raise UserError(f"--set {kv!r}: expected KEY=VALUE")
    if a.preset:
        missing = [f"--{n.replace('_', '-')}" for n in ("policy", "reward_model", "prompts") if not getattr(a, n)]
        if missing:
            raise UserError(f"--preset {a.preset} needs {', '.join(missing)}")
        if not os.path.isfile(a.prompts):
            raise UserError(f"--prompts {a.prompts}: file not found (a local JSONL / parquet export of "
                            "PKU-Alignment/PKU-SafeRLHF with a 'prompt' column)")
        if a.from_demo or a.quick:
            raise UserError("--from-demo / --quick are for the built-in world; they do not apply with --preset")
    else:
        for n in ("policy", "reward_model", "prompts", "lora_rank", "eval_prompts"):
            if getattr(a, n) is not None:
                raise UserError(f"--{n.replace('_', '-')} needs --preset (the built-in world brings its own)")
    if a.from_demo:
        if len(seeds) > 1 and "{seed}" not in a.from_demo:
            raise UserError(f"--from-demo {a.from_demo!r}: several seeds need a {{seed}} placeholder, "
                            "e.g. runs/demo_s{seed}")
        for s in seeds:
            d = a.from_demo.format(seed=s)
            lost = [n for n in DEMO_NEEDS if not os.path.exists(os.path.join(d, n))]
            if lost:
                raise UserError(f"--from-demo {d}: not a finished demo run (missing {', '.join(lost)}); run "
                                f"python -m grpojax.demo --out {d} --seed {s} first")
            with open(os.path.join(d, "world", "world.json"), encoding="utf-8") as f:
                have = json.load(f).get("seed")
            if have != s:
                raise UserError(f"--from-demo {d}: holds the world of seed {have}, not {s}")
    return seeds, methods


def split_overrides(sets: list[str]) -> tuple[dict, dict]:
    """``--set`` items -> (common ``{key: value}``, ``{method: {key: value}}``); values stay YAML text."""
    common, per = {}, {}
    owner = {"grpo": ["grpo"], "ppo": ["ppo"], "online_dpo": ["online_dpo"], "preference": ["online_dpo"]}
    for kv in sets:
        k, v = kv.split("=", 1)
        sec = k.split(".", 1)[0]
        for m in owner.get(sec, []):
            per.setdefault(m, {})[k] = v
        if sec not in owner:
            common[k] = v
    return common, per


# ------------------------------------------------------------------------------------------- sources
def demo_sources(a, seed: int, sdir: str) -> dict:
    """SFT policy, reward model, prompt files and tokenizer of the built-in world for ``seed``."""
    if a.from_demo:
        d = a.from_demo.format(seed=seed)
        _log(f"seed {seed}: reusing the demo run {d} (world, SFT policy, reward model)")
        return {"policy": os.path.join(d, "policy_sft", "hf"), "reward": os.path.join(d, "reward"),
                "tokenizer": os.path.join(d, "world", "tokenizer"),
                "train": os.path.join(d, "data", "grpo_train.jsonl"),
                "heldout": os.path.join(d, "data", "grpo_heldout.jsonl")}
    from grpojax.demo import pipeline as P
    from grpojax.demo import pipeline_stages as S
    from grpojax.train.tasks import SFTTask
    from grpojax.train.tasks.reward import RewardTask

    _log(f"seed {seed}: demo stages world / data / policy_sft / reward in {sdir}")
    world = P.world_at(sdir, seed)
    with open(world["world"], encoding="utf-8") as f:
        vocab = json.load(f)["tokenizer"]["vocab_size"]
    data = S.prepare_data(world, os.path.join(sdir, "data"))
    for stage, task_cls, extra in (("policy_sft", SFTTask, {"data.path": data["sft"]}),
                                   ("reward", RewardTask, {"data.path": data["reward_train"],
                                                           "data.eval_path": data["reward_heldout"]})):
        cfg = S.stage_config(stage, P.stage_overrides(stage, sdir, seed, vocab, a.quick, extra))
        if S.stage_done(cfg.run_dir) is not None:
            _log(f"seed {seed}: stage {stage} finished earlier, reusing {cfg.run_dir}")
            continue
        _log(f"seed {seed}: stage {stage} ...")
        S.train_stage(cfg, task_cls(cfg))
        S.mark_done(cfg.run_dir, {"run_dir": cfg.run_dir})
    return {"policy": os.path.join(sdir, "policy_sft", "hf"), "reward": os.path.join(sdir, "reward"),
            "tokenizer": os.path.join(world["tokenizer"]), "train": data["grpo_train"],
            "heldout": data["grpo_heldout"]}


def preset_sources(a, seed: int, sdir: str, heldout: int) -> dict:
    """Split ``--prompts`` (seeded shuffle) into train / held-out JSONL files under ``sdir/data``."""
    import numpy as np

    from grpojax.data.sources import read_local

    rows = read_local(a.prompts)
    if "prompt" not in rows.column_names:
        raise UserError(f"--prompts {a.prompts}: no 'prompt' column (columns: {rows.column_names})")
    prompts = [str(p) for p in rows["prompt"]]
    if len(prompts) <= heldout:
        raise UserError(f"--prompts {a.prompts}: {len(prompts)} rows, need more than the {heldout} held-out "
                        "prompts (--eval-prompts)")
    order = np.random.default_rng(seed).permutation(len(prompts))
    os.makedirs(os.path.join(sdir, "data"), exist_ok=True)
    out = {}
    for name, idx in (("train", order[:-heldout]), ("heldout", order[-heldout:])):
        out[name] = os.path.join(sdir, "data", f"prompts_{name}.jsonl")
        with open(out[name], "w", encoding="utf-8") as f:
            for i in idx:
                f.write(json.dumps({"prompt": prompts[i]}) + "\n")
    return {**out, "policy": a.policy, "reward": a.reward_model, "tokenizer": None}


# ------------------------------------------------------------------------------------------- one seed
def run_seed(a, spec, seed: int, methods: list[str], C) -> dict:
    sdir = os.path.join(a.out, f"seed{seed}")
    os.makedirs(sdir, exist_ok=True)
    ev = spec["evaluation"]
    src = preset_sources(a, seed, sdir, ev["heldout_prompts"]) if a.preset else demo_sources(a, seed, sdir)
    common, per = split_overrides(a.set)
    common.update({"model.path": src["policy"], "data.path": src["train"], "train.seed": seed,
                   "data.shuffle_seed": seed})
    if a.preset:
        common.update({"data.format": "columns", "data.prompt_column": "prompt", "data.eval_split": None})
        if a.lora_rank is not None:
            common["model.lora.rank"] = a.lora_rank
    else:
        common["tokenizer.path"] = src["tokenizer"]
    sets = {m: {f"{m}.reward_model": src["reward"], "run_dir": os.path.join(sdir, m),
                "export_hf": os.path.join(sdir, m, "hf"), **per.get(m, {})} for m in C.METHODS}
    if a.quick:
        from grpojax.demo.pipeline import QUICK

        sets["grpo"].update(kv.split("=", 1) for kv in QUICK.get("grpo", []))
    cfgs = C.method_configs(spec, common, sets)
    gcfg = cfgs["grpo"]["cfg"]
    _log(f"seed {seed}: {cfgs['grpo']['completions']} sampled completions per method; optimizer steps: "
         + ", ".join(f"{m} {cfgs[m]['cfg'].train.steps}" for m in methods))
    P, Prm = C.count_params(src["policy"]), C.count_params(src["reward"])
    rows = {}
    for m in methods:
        cfg, result = cfgs[m]["cfg"], os.path.join(sdir, m, "measure.json")
        if os.path.isfile(result):
            _same_job(os.path.join(sdir, m, "job.json"), cfgs[m])
            _log(f"seed {seed}: {m} finished earlier, reusing {result}")
            with open(result, encoding="utf-8") as f:
                meas = json.load(f)
        else:
            if os.path.isdir(cfg.run_dir):  # an interrupted earlier attempt: its timing would be partial
                _log(f"seed {seed}: removing the unfinished run {cfg.run_dir}")
                shutil.rmtree(cfg.run_dir)
            os.makedirs(cfg.run_dir)
            _log(f"seed {seed}: training {m} ({cfg.train.steps} optimizer steps) in a subprocess ...")
            meas = C.run_child({"method": m, "base": cfgs[m]["base"], "overrides": cfgs[m]["overrides"],
                                "result": result}, os.path.join(sdir, m, "job.json"))
            _log(f"seed {seed}: {m} done: {meas['wall_seconds']:.0f} s wall, {meas['cpu_seconds']:.0f} s CPU, "
                 f"peak RSS {meas['peak_rss_mib']:.0f} MiB")
        Pc = 0
        if m == "ppo" and cfg.ppo.critic == "separate":
            Pc = C.count_params(cfg.ppo.critic_path or src["policy"])
        flops = C.flops_per_step(m, cfg, policy_params=P, rm_params=Prm, critic_params=Pc)
        rows[m] = {**meas, "flops": flops, "total_flops": flops["total"] * cfg.train.steps,
                   "completions": cfgs[m]["completions"], "rollouts": cfgs[m]["rollouts"],
                   "final_train_reward": _final_reward(cfg.run_dir)}
    evals = evaluate_seed(a, seed, sdir, src, gcfg, methods, rows, ev)
    for m, e in evals.items():
        rows.setdefault(m, {}).update(e)
    g = gcfg.grpo
    return {"rows": rows, "params": {"policy": P, "reward_model": Prm}, "sources": src,
            "steps": {m: cfgs[m]["cfg"].train.steps for m in methods}, "aspects": list(g.aspects),
            "weights": list(g.reward_weights) or [1.0] * len(g.aspects)}


def _same_job(job_path: str, now: dict) -> None:
    """A finished method is reused only if it was trained from the same base config and overrides."""
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    if job["base"] != now["base"] or job["overrides"] != now["overrides"]:
        diff = sorted(set(job["overrides"]) ^ set(now["overrides"]))[:4]
        raise UserError(f"{os.path.dirname(job_path)} was trained with another config (differing: "
                        f"{diff or [job['base'], now['base']]}); use another --out or remove that directory")


def _final_reward(run_dir: str) -> float | None:
    """Mean logged training reward over the last 10% of the metric rows (at least one)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        vals = [r["reward"] for r in map(json.loads, f) if "reward" in r]
    if not vals:
        return None
    k = max(1, len(vals) // 10)
    return float(sum(vals[-k:]) / k)


def evaluate_seed(a, seed, sdir, src, gcfg, methods, rows, ev) -> dict:
    path = os.path.join(sdir, "eval.json")
    policies = {"sft": src["policy"], **{m: rows[m]["export_hf"] for m in methods}}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            done = json.load(f)
        if set(done) >= set(policies):
            _log(f"seed {seed}: evaluation finished earlier, reusing {path}")
            return done
    with open(src["heldout"], encoding="utf-8") as f:
        prompts = [json.loads(line)["prompt"] for line in f if line.strip()]
    from grpojax.demo import compare as C

    n = a.eval_samples or (8 if a.quick else ev["num_samples"])
    key = seed + ev["seed_offset"]
    out = {}
    scorer = None
    for name, policy in policies.items():
        _log(f"seed {seed}: evaluating {name} on {len(prompts)} held-out prompts x {n} samples ...")
        if a.preset:
            if scorer is None:
                from grpojax.data import load_tokenizer

                tok = load_tokenizer(gcfg.tokenizer_path, gcfg.tokenizer.chat_template, gcfg.tokenizer.system_prompt)
                scorer = C.reward_scorer_for(gcfg, tok, "grpo")
            out[name] = C.evaluate_reward_model(policy, gcfg, prompts, num_samples=n, seed=key, scorer=scorer)
        else:
            from grpojax.demo import pipeline_stages as S

            r = S.evaluate_policy(policy, src["reward"], gcfg, prompts, num_samples=n, seed=key)
            out[name] = {k: r[k] for k in ("ground_truth", "reward_model", "ground_truth_sem", "n")}
            out[name]["examples"] = r["examples"][:3]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
    return out


# ------------------------------------------------------------------------------------------- main
def main(argv) -> int:
    a = parse_args(argv)
    seeds, methods = check_args(a)
    from grpojax.demo import compare as C
    from grpojax.demo import compare_report as CR

    spec_path = a.spec or os.path.join(C.ROOT, "configs", "compare", f"{a.preset or 'demo'}.yaml")
    spec = C.load_spec(spec_path)
    if a.eval_prompts is not None:
        spec["evaluation"]["heldout_prompts"] = a.eval_prompts
    os.makedirs(a.out, exist_ok=True)
    per_seed, info = {}, {}
    for s in seeds:
        r = run_seed(a, spec, s, methods, C)
        per_seed[s] = {"sft": r["rows"]["sft"], **{m: r["rows"][m] for m in methods}}
        info[s] = {k: r[k] for k in ("params", "sources", "steps")}
    aspects, weights = r["aspects"], r["weights"]  # the weighted RM score uses the GRPO reward weights
    kind = "reward_model" if a.preset else "ground_truth"
    summary = CR.summarise(per_seed, aspects, weights)
    cmd = "python scripts/compare_methods.py " + " ".join(shlex.quote(x) for x in argv)
    completions = next(iter(per_seed.values()))[methods[0]]["completions"]
    report = {"command": cmd, "spec": os.path.relpath(spec_path, C.ROOT), "seeds": seeds, "methods": methods,
              "completions_per_method": completions, "aspects": aspects, "reward_weights": weights,
              "flops_formula": C.__doc__.split("(:func:`flops_per_step`), with")[1].split("Attention")[0].strip(),
              "summary": summary, "per_seed": {str(s): v for s, v in per_seed.items()},
              "info": {str(s): v for s, v in info.items()}}
    with open(os.path.join(a.out, "compare.json.tmp"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    table = CR.markdown_table(summary, aspects, kind)
    what = "ground-truth aspect means" if kind == "ground_truth" else "reward-model aspect scores"
    md = (f"# Method comparison ({what}; mean ± std over seeds {seeds})\n\nCommand: `{cmd}`\n\n"
          f"{completions} sampled completions per method; costs are per training subprocess.\n\n{table}")
    if kind == "ground_truth":
        md += "\nReward-model scores (the learned RM, label scale):\n\n" + CR.markdown_table(summary, aspects,
                                                                                             "reward_model")
    with open(os.path.join(a.out, "compare.md"), "w", encoding="utf-8") as f:
        f.write(md)
    CR.bar_plot(summary, aspects, kind, os.path.join(a.out, "compare.png"),
               f"{what}, mean ± std over seeds {','.join(map(str, seeds))}; {completions} completions per method")
    os.replace(os.path.join(a.out, "compare.json.tmp"), os.path.join(a.out, "compare.json"))
    print(md, flush=True)
    _log(f"wrote {os.path.join(a.out, 'compare.json')}, compare.md, compare.png")
    return 0


if __name__ == "__main__":
    cli.main(main)
