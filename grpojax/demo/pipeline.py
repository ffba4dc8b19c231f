"""The end-to-end demo on the built-in world: ``python -m grpojax.demo [--out runs/demo] [--seed 0] [--quick]``.

Stages (each one a normal library run with ``config.yaml``, ``metrics.jsonl``, TensorBoard events and an
Orbax checkpoint under ``OUT/<stage>``; configs in ``configs/demo/``):

1. ``world``: :func:`grpojax.demo.build_world` (tokenizer + JSONL files), then ``data``: the same rows in
   the library's column layout.
2. ``policy_sft``: SFT of a tiny random-init Qwen2-architecture policy on mixed-quality responses.
3. ``reward``: the 4-output reward regression model, initialised from the SFT policy (its embeddings
   already tell the request's topic, which meaningfulness needs); held-out per-aspect MSE / Pearson.
4. ``grpo``: multi-objective GRPO of the SFT policy against the learned reward model (weighted sum).
5. evaluation of the SFT (before) and GRPO (after) policies on held-out requests: the mean of every
   ground-truth aspect score and of the reward model's scores over sampled completions.
6. ``opinion_sft`` (the reference), then ``ipo`` / ``gr_ipo`` (and ``dpo`` / ``gr_dpo`` with
   ``--dpo``) on the group-opinion task: per-group and worst-group test loss / reward accuracy, alpha.
7. ``OUT/summary.json``, PNG plots under ``OUT/plots`` and a short report on stdout.

Compiled programs persist in ``OUT/xla_cache`` (or ``$JAX_COMPILATION_CACHE_DIR``; :func:`cache_dir`), so a
resumed or repeated run, and a stage compiling a program an earlier stage did, loads instead of compiling.

Everything is seeded by ``--seed`` (world, initialisation, data order, sampling), so a rerun gives the
same numbers. An existing ``OUT/summary.json`` is never replaced without ``--overwrite``: a second run of
the same command prints the finished run's report again and exits 0 (:func:`finished_run`); an interrupted
pipeline resumes (finished stages are skipped, the runner resumes an unfinished one from its checkpoint).
"""

from __future__ import annotations

import json
import os
import shutil
import time

from grpojax.cli import UserError
from grpojax.demo import pipeline_stages as S

STAGES = ("world", "data", "policy_sft", "reward", "grpo", "opinion_sft", "ipo", "gr_ipo", "dpo", "gr_dpo",
          "plots")
ROBUST = ("ipo", "gr_ipo")
ROBUST_DPO = ("dpo", "gr_dpo")  # --dpo adds the DPO pair
EVAL_SAMPLES = {False: 16, True: 8}  # completions per held-out request in the before/after evaluation
# --quick (CI): the same pipeline with fewer steps; nothing else changes.
QUICK = {
    "policy_sft": ["train.steps=200"],
    "reward": ["train.steps=200", "train.eval_every=200"],
    "grpo": ["train.steps=16"],
    "opinion_sft": ["train.steps=150"],
    "ipo": ["train.steps=30", "train.eval_every=30"],
    "gr_ipo": ["train.steps=30", "train.eval_every=30"],
}
def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def cache_dir(out: str) -> str:
    """The persistent XLA compilation cache of a demo run: ``$JAX_COMPILATION_CACHE_DIR`` when set, else
    ``OUT/xla_cache`` (kept by ``--overwrite``: entries are keyed by program, never stale)."""
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(out, "xla_cache")


def stage_overrides(stage: str, out: str, seed: int, vocab: int, quick: bool, extra: dict) -> list[str]:
    """The command-line overrides of ``stage``'s config in a pipeline writing to ``out`` (run_dir, the world's
    tokenizer, seeds, the shared XLA cache, where it loads from / exports to), then ``extra``, then the
    ``--quick`` ones. Used by the demo and by the scripts that rerun its stages (compare_methods,
    opinion_ablation)."""
    o = [f"run_dir={os.path.join(out, stage)}", f"tokenizer.path={os.path.join(out, 'world', 'tokenizer')}",
         f"train.seed={seed}", f"data.shuffle_seed={seed}", f"compilation_cache_dir={cache_dir(out)}"]
    if stage in ("policy_sft", "opinion_sft"):
        o.append(f"model.shape.vocab_size={vocab}")
    if stage == "reward":  # the reward model starts from the SFT policy (InstructGPT's recipe)
        o.append(f"model.path={os.path.join(out, 'policy_sft', 'hf')}")
    if stage in ("policy_sft", "grpo", "opinion_sft"):
        o.append(f"export_hf={os.path.join(out, stage, 'hf')}")
    o += [f"{k}={v}" for k, v in extra.items()]
    return o + (QUICK.get(stage, []) if quick else [])


def _clear(out: str) -> None:
    """--overwrite: remove this pipeline's own outputs under ``out`` (nothing else)."""
    for name in STAGES + ("summary.json",):
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def world_at(out: str, seed: int) -> dict:
    """The built-in world under ``out/world`` (file paths by name): reused when it is this seed's, built
    otherwise; a world of another seed is a UserError."""
    from grpojax.demo.build import build_world

    wdir = os.path.join(out, "world")
    manifest = os.path.join(wdir, "world.json")
    if os.path.isfile(manifest):  # resuming: reuse it only if it is this seed's world
        with open(manifest, encoding="utf-8") as f:
            have = json.load(f)["seed"]
        if have != seed:
            raise UserError(f"{wdir} holds the world of seed {have}, not {seed}; pass --overwrite or another --out")
        names = ["sft", "reward_train", "reward_heldout", "grpo_train", "grpo_heldout", "opinions_train",
                 "opinions_val", "opinions_test", "opinions_sft"]
        paths = {n: os.path.join(wdir, f"{n}.jsonl") for n in names}
        return dict(paths, tokenizer=os.path.join(wdir, "tokenizer"), world=manifest)
    return build_world(wdir, seed)


def run_pipeline(out: str = "runs/demo", seed: int = 0, quick: bool = False, overwrite: bool = False,
                 dpo: bool = False) -> dict:
    """Run every stage (module docstring) and return the summary also written to ``OUT/summary.json``."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    summary_path = os.path.join(out, "summary.json")
    if os.path.exists(summary_path) and not overwrite:  # checked before any heavy import
        return finished_run(summary_path, seed, quick, dpo)
    from grpojax.compilation import use_compilation_cache
    from grpojax.demo.pipeline_report import report_text, write_plots
    from grpojax.train.tasks import SFTTask
    from grpojax.train.tasks.grpo import GRPOTask
    from grpojax.train.tasks.reward import RewardTask

    if overwrite:
        _clear(out)
    os.makedirs(out, exist_ok=True)
    # every stage's compiled programs persist: a resumed or repeated run (and a stage compiling a program
    # an earlier one did) loads them instead of compiling (the tiny models' steps take seconds to compile)
    use_compilation_cache(cache_dir(out), min_compile_seconds=0.2)
    timed = S.StageTimer(_log)
    seconds = timed.seconds

    world = timed("world", lambda: world_at(out, seed))
    with open(world["world"], encoding="utf-8") as f:
        manifest = json.load(f)
    vocab = manifest["tokenizer"]["vocab_size"]
    data = timed("data", lambda: S.prepare_data(world, os.path.join(out, "data")))

    def cfg_of(stage, extra=None, name=None):
        return S.stage_config(name or stage, stage_overrides(stage, out, seed, vocab, quick, extra or {}))

    def train(stage, task_cls, extra=None, result=None):
        cfg = cfg_of(stage, extra)
        done = S.stage_done(cfg.run_dir)
        if done is not None:
            _log(f"stage {stage}: finished earlier, reusing {cfg.run_dir}")
            return done
        S.train_stage(cfg, task_cls(cfg))
        return S.mark_done(cfg.run_dir, result(cfg) if result else {"run_dir": cfg.run_dir})

    timed("policy_sft", lambda: train("policy_sft", SFTTask, {"data.path": data["sft"]}))

    def reward_result(cfg):
        m = S.last_metrics(cfg.run_dir)
        return {"run_dir": cfg.run_dir, "heldout": {a: {"mse": m[f"eval/mse/{a}"], "pearson": m[f"eval/pearson/{a}"]}
                                                    for a in cfg.reward.aspects}}

    rm = timed("reward", lambda: train("reward", RewardTask, {"data.path": data["reward_train"],
                                                              "data.eval_path": data["reward_heldout"]},
                                       reward_result))
    policy_hf = os.path.join(out, "policy_sft", "hf")
    grpo_extra = {"data.path": data["grpo_train"], "model.path": policy_hf, "grpo.reward_model": rm["run_dir"]}
    timed("grpo", lambda: train("grpo", GRPOTask, grpo_extra))

    def evaluate():
        cfg = cfg_of("grpo", grpo_extra)
        prompts = [r["prompt"] for r in S.read_jsonl(data["grpo_heldout"])]
        n = EVAL_SAMPLES[quick]
        return {when: S.evaluate_policy(path, rm["run_dir"], cfg, prompts, num_samples=n, seed=seed + 1000)
                for when, path in (("before", policy_hf), ("after", os.path.join(out, "grpo", "hf")))}

    ev = timed("evaluate", evaluate)
    timed("opinion_sft", lambda: train("opinion_sft", SFTTask, {"data.path": data["opinions_sft"]}))
    robust = {}
    for loss in ROBUST + (ROBUST_DPO if dpo else ()):
        robust[loss] = timed(loss, lambda loss=loss: _robust_stage(loss, cfg_of, data, out))
    summary = {
        "seed": seed, "quick": quick,
        "aspects": {a: {"before": ev["before"]["ground_truth"][a], "after": ev["after"]["ground_truth"][a],
                        "before_sem": ev["before"]["ground_truth_sem"][a],
                        "after_sem": ev["after"]["ground_truth_sem"][a],
                        "reward_model_before": ev["before"]["reward_model"][a],
                        "reward_model_after": ev["after"]["reward_model"][a]} for a in S.ASPECTS},
        "evaluation": {"heldout_requests": len(ev["before"]["examples"]), "samples": ev["before"]["n"],
                       "examples": {w: ev[w]["examples"][:6] for w in ("before", "after")}},
        "reward_model": rm["heldout"],
        "robust": robust,
        "world": {"vocab_size": vocab, "sizes": manifest["sizes"]},
        "run_dirs": {s: os.path.join(out, s) for s in ("policy_sft", "reward", "grpo", "opinion_sft", *robust)},
    }
    summary["plots"] = timed("plots", lambda: write_plots(summary, out))
    summary["stage_seconds"] = seconds
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["cpu_seconds_main_process"] = round(time.process_time() - cpu0, 1)
    with open(summary_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    os.replace(summary_path + ".tmp", summary_path)
    print(report_text(summary), flush=True)
    return summary


def finished_run(summary_path: str, seed: int, quick: bool, dpo: bool) -> dict:
    """A second run into the same ``--out``: print the finished run's report again and return its summary.

    The run must be the one asked for (same seed, ``--quick`` and ``--dpo``); anything else (another
    seed, an unreadable or foreign ``summary.json``) is a :class:`UserError` that names the file and
    leaves it untouched. ``--overwrite`` re-runs instead.
    """
    from grpojax.demo.pipeline_report import report_text

    try:
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{summary_path} exists but is not a readable demo summary ({e}); pass --overwrite "
                        "to replace this demo run (or use --out)") from None
    missing = [k for k in ("seed", "quick", "aspects", "robust") if not isinstance(summary, dict) or k not in summary]
    if missing:
        raise UserError(f"{summary_path} exists but is not a demo summary (missing {', '.join(missing)}); "
                        "pass --overwrite to replace it (or use --out)")
    have = {"seed": summary["seed"], "quick": summary["quick"], "dpo": all(k in summary["robust"] for k in ROBUST_DPO)}
    want = {"seed": seed, "quick": quick, "dpo": dpo}
    if have["seed"] != seed or have["quick"] != quick or (dpo and not have["dpo"]):
        diff = ", ".join(f"{k}={have[k]} (asked {want[k]})" for k in want if have[k] != want[k])
        raise UserError(f"{summary_path} holds a finished demo run with {diff}; pass --overwrite to replace "
                        "it (or use another --out)")
    _log(f"{summary_path}: this demo run (seed {seed}{', quick' if quick else ''}) finished earlier; its "
         "report again (--overwrite re-runs it):")
    print(report_text(summary), flush=True)
    return summary


def _robust_stage(loss: str, cfg_of, data: dict, out: str) -> dict:
    cfg = cfg_of(loss, {"data.path": data["opinions_train"], "data.eval_path": data["opinions_val"],
                        "model.path": os.path.join(out, "opinion_sft", "hf")})
    done = S.stage_done(cfg.run_dir)
    if done is not None:
        _log(f"stage {loss}: finished earlier, reusing {cfg.run_dir}")
        return done
    task = S.preference_task_with_test(cfg, data["opinions_test"])
    S.train_stage(cfg, task)
    m = S.last_metrics(cfg.run_dir)
    result = dict(task.test_metrics, run_dir=cfg.run_dir, beta=cfg.preference.beta,
                  val_worst_group_loss=m.get("eval/worst_group/loss"))
    alpha = {g: m[f"robust/alpha/{g}"] for g in S.GROUPS if f"robust/alpha/{g}" in m}
    if alpha:
        result["alpha"] = alpha
    return S.mark_done(cfg.run_dir, result)
