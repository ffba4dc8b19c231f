"""RL with a verifiable reward on the arithmetic world: ``python -m grpojax.demo --task arithmetic [--seed N]``.

Stages (library runs under ``OUT`` = ``--out``, default ``runs/arithmetic``; configs in ``configs/demo/``):

1. ``world``: :func:`grpojax.demo.arithmetic.build_arithmetic_world` (tokenizer, SFT / GRPO / held-out JSONL).
2. ``sft``: SFT of a tiny random-init policy on noisy worked solutions (``arithmetic_sft.yaml``): a partial
   accuracy.
3. ``grpo``: GRPO of the SFT policy with the built-in ``exact_match`` reward reading each training
   problem's ``answer`` column (``arithmetic_grpo.yaml``).
4. evaluation of the SFT (before) and GRPO (after) policies on the held-out problems: exact-match accuracy
   of the greedy completion and the mean over ``EVAL_SAMPLES`` sampled completions (temperature 1), overall
   and per operation, with :func:`grpojax.rewards.verifiable.answers_match`.
5. ``OUT/summary.json`` and a short report on stdout.

Everything is seeded by ``--seed`` (world, initialisation, data order, sampling). An existing
``OUT/summary.json`` is printed again, not replaced, unless ``--overwrite``; finished stages are reused.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np

from grpojax.cli import UserError
from grpojax.demo import pipeline_stages as S
from grpojax.demo.arithmetic import OPS, build_arithmetic_world

STAGES = ("world", "sft", "grpo")
EVAL_SAMPLES = 8


def _log(msg: str) -> None:
    print(f"[arithmetic] {msg}", flush=True)


def stage_overrides(stage: str, out: str, seed: int, vocab: int) -> list[str]:
    """Overrides of ``configs/demo/arithmetic_<stage>.yaml`` for a run writing to ``out``."""
    world = os.path.join(out, "world")
    o = [f"run_dir={os.path.join(out, stage)}", f"export_hf={os.path.join(out, stage, 'hf')}",
         f"tokenizer.path={os.path.join(world, 'tokenizer')}", f"train.seed={seed}", f"data.shuffle_seed={seed}",
         f"compilation_cache_dir={os.environ.get('JAX_COMPILATION_CACHE_DIR') or os.path.join(out, 'xla_cache')}"]
    if stage == "sft":
        return o + [f"model.shape.vocab_size={vocab}", f"data.path={os.path.join(world, 'sft.jsonl')}"]
    return o + [f"model.path={os.path.join(out, 'sft', 'hf')}", f"data.path={os.path.join(world, 'grpo_train.jsonl')}"]


def heldout_accuracy(policy_dir: str, cfg, rows: list[dict], *, seed: int, num_samples: int = EVAL_SAMPLES) -> dict:
    """Exact-match accuracy of a policy on held-out problems: ``greedy`` (argmax decoding) and ``sampled``
    (mean over ``num_samples`` completions at temperature 1), overall and per operation (``greedy/+``, ...),
    plus a few greedy examples."""
    import jax

    from grpojax.data import load_tokenizer
    from grpojax.rewards.verifiable import answers_match
    from grpojax.sampling import sample
    from grpojax.train.build import build_model

    tok = load_tokenizer(cfg.tokenizer_path)
    model = build_model(cfg.model, path=policy_dir)
    pb = tok.prompt_batch([r["prompt"] for r in rows], cfg.data.max_prompt_length)
    out = {}
    for mode, n in (("greedy", 1), ("sampled", num_samples)):
        res = sample(model, pb.prompt_ids_BT, pb.prompt_mask_BT, jax.random.key(seed),
                     max_new_tokens=cfg.grpo.max_completion_length, temperature=1.0, greedy=mode == "greedy",
                     eos_ids=tok.eos_ids, pad_id=tok.pad_id, num_samples=n)
        tokens, mask = jax.device_get((res.completion_tokens_BC, res.completion_mask_BC))
        texts = [tok.decode(t[: int(m.sum())]) for t, m in zip(tokens, mask)]
        hits = np.array([answers_match(texts[i], rows[i // n]["answer"]) for i in range(len(texts))], np.float64)
        out[mode] = float(hits.mean())
        ops = np.array([rows[i // n]["op"] for i in range(len(texts))])
        out.update({f"{mode}/{op}": float(hits[ops == op].mean()) for op in OPS if np.any(ops == op)})
        if mode == "greedy":
            out["examples"] = [{"prompt": rows[i]["prompt"], "answer": rows[i]["answer"], "completion": texts[i]}
                               for i in range(6)]
    out["n"] = len(rows)
    return out


def report_text(summary: dict) -> str:
    b, a = summary["before"], summary["after"]
    lines = [(f"arithmetic task, seed {summary['seed']}: held-out exact-match accuracy ({b['n']} problems), "
              "SFT policy -> GRPO policy")]
    for key in ("greedy", "sampled", *[f"greedy/{op}" for op in OPS]):
        lines.append(f"  {key:<10} {b[key]:.3f} -> {a[key]:.3f}")
    lines.append(f"  stage seconds: {summary['stage_seconds']}, total {summary['seconds']} s")
    return "\n".join(lines)


def run_arithmetic(out: str = "runs/arithmetic", seed: int = 0, overwrite: bool = False,
                   overrides: dict[str, list[str]] | None = None) -> dict:
    """Run every stage (module docstring) and return the summary also written to ``OUT/summary.json``.
    ``overrides`` (``{"sft" | "grpo": ["key=value", ...]}``, applied last) are for settings studies
    (``docs/verifiable.md``); the command line has none."""
    t0 = time.perf_counter()
    summary_path = os.path.join(out, "summary.json")
    if os.path.exists(summary_path) and not overwrite:
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
        if summary.get("seed") != seed:
            raise UserError(f"{summary_path} holds the arithmetic run of seed {summary.get('seed')}, not {seed}; "
                            "pass --overwrite or another --out")
        _log(f"{summary_path}: finished earlier; its report again (--overwrite re-runs it):")
        print(report_text(summary), flush=True)
        return summary
    from grpojax.compilation import use_compilation_cache
    from grpojax.train.tasks import GRPOTask, SFTTask

    if overwrite:
        for name in (*STAGES, "summary.json"):
            path = os.path.join(out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(out, exist_ok=True)
    use_compilation_cache(os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(out, "xla_cache"),
                          min_compile_seconds=0.2)
    timed = S.StageTimer(_log)
    seconds = timed.seconds

    manifest_path = os.path.join(out, "world", "world.json")
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            if json.load(f)["seed"] != seed:
                raise UserError(f"{manifest_path} is another seed's world; pass --overwrite or another --out")
    else:
        timed("world", lambda: build_arithmetic_world(os.path.join(out, "world"), seed))
    with open(manifest_path, encoding="utf-8") as f:
        vocab = json.load(f)["vocab_size"]

    def cfg_of(stage):
        return S.stage_config(f"arithmetic_{stage}", stage_overrides(stage, out, seed, vocab)
                              + list((overrides or {}).get(stage, ())))

    def train(stage, task_cls):
        cfg = cfg_of(stage)
        if S.stage_done(cfg.run_dir) is None:
            S.train_stage(cfg, task_cls(cfg))
            S.mark_done(cfg.run_dir, {"run_dir": cfg.run_dir})
        return cfg

    timed("sft", lambda: train("sft", SFTTask))
    grpo_cfg = timed("grpo", lambda: train("grpo", GRPOTask))
    rows = S.read_jsonl(os.path.join(out, "world", "heldout.jsonl"))
    ev = timed("evaluate", lambda: {when: heldout_accuracy(os.path.join(out, stage, "hf"), grpo_cfg, rows,
                                                           seed=seed + 1000)
                                    for when, stage in (("before", "sft"), ("after", "grpo"))})
    summary = {"seed": seed, "overrides": overrides or {}, "before": ev["before"], "after": ev["after"],
               "stage_seconds": seconds,
               "seconds": round(time.perf_counter() - t0, 1),
               "grpo_reward": S.last_metrics(grpo_cfg.run_dir).get("rewards/exact_match/mean")}
    with open(summary_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    os.replace(summary_path + ".tmp", summary_path)
    print(report_text(summary), flush=True)
    return summary


def table(run_dirs: list[str]) -> str:
    """A markdown table of finished runs' held-out accuracies (one row per seed, then mean ± std)."""
    runs = []
    for d in run_dirs:
        with open(os.path.join(d, "summary.json"), encoding="utf-8") as f:
            runs.append(json.load(f))
    keys = ("greedy", "sampled", *[f"greedy/{op}" for op in OPS])
    lines = ["| seed | " + " | ".join(f"{k} SFT -> GRPO" for k in keys) + " | seconds |",
             "|---" * (len(keys) + 2) + "|"]
    for r in runs:
        cells = [f"{r['before'][k]:.3f} -> {r['after'][k]:.3f}" for k in keys]
        lines.append(f"| {r['seed']} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |")
    mean = [f"{np.mean([r['before'][k] for r in runs]):.3f} ± {np.std([r['before'][k] for r in runs], ddof=1):.3f}"
            f" -> {np.mean([r['after'][k] for r in runs]):.3f} ± {np.std([r['after'][k] for r in runs], ddof=1):.3f}"
            for k in keys] if len(runs) > 1 else []
    if mean:
        lines.append("| mean ± std | " + " | ".join(mean) + " | |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m grpojax.demo.arithmetic_pipeline OUT_SEED0 OUT_SEED1 ...: the table
    import sys

    print(table(sys.argv[1:]))
