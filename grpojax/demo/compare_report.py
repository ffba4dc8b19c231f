"""Tables and plots of the method comparison (:mod:`grpojax.demo.compare`, ``scripts/compare_methods.py``):
mean ± std over seeds of every per-method number, the markdown table, the grouped bar plot, and the XLA
cross-check of the FLOP formula's training term (:func:`xla_grpo_step_flops`)."""

from __future__ import annotations


def mean_std(values) -> dict:
    """``{"mean", "std", "n"}`` over seeds; std is Bessel-corrected (ddof 1), None for a single seed."""
    import numpy as np

    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else None, "n": int(v.size)}


SUMMARY_KEYS = ("wall_seconds", "cpu_seconds", "peak_rss_mib", "train_loop_seconds", "final_train_reward")


def summarise(per_seed: dict, aspects: list, weights: list, score_kinds=("ground_truth", "reward_model")) -> dict:
    """``per_seed[seed][method]`` rows -> ``{method: {"<kind>/<aspect>" | "rm_weighted" | cost key: mean_std}}``.
    ``rm_weighted`` = the reward-model aspect means combined with the GRPO reward weights (the scalar all
    methods optimise)."""
    methods = list(next(iter(per_seed.values())))
    out = {}
    for m in methods:
        rows = [per_seed[s][m] for s in per_seed if m in per_seed[s]]
        res = {}
        for kind in score_kinds:
            for a in aspects:
                res[f"{kind}/{a}"] = mean_std([r.get(kind, {}).get(a) for r in rows])
        res["rm_weighted"] = mean_std([sum(w * r["reward_model"][a] for a, w in zip(aspects, weights))
                                       for r in rows if r.get("reward_model")])
        for k in SUMMARY_KEYS:
            res[k] = mean_std([r.get(k) for r in rows])
        res["flops_per_step"] = mean_std([r.get("flops", {}).get("total") for r in rows])
        res["total_flops"] = mean_std([r.get("total_flops") for r in rows])
        out[m] = res
    return out


def _fmt(ms: dict, digits: int = 3, scale: float = 1.0) -> str:
    if ms["mean"] is None:
        return "-"
    text = f"{ms['mean'] * scale:.{digits}f}"
    return text if ms["std"] is None else f"{text} ± {ms['std'] * scale:.{digits}f}"


def markdown_table(summary: dict, aspects: list, kind: str) -> str:
    """The comparison table: per method the ``kind`` aspect means, the weighted RM score and the costs
    (mean ± std over seeds)."""
    head = (["method"] + list(aspects) + ["RM score (weighted)", "wall s", "CPU s", "peak RSS MiB",
                                          "GFLOP / opt. step", "total TFLOP"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, res in summary.items():
        cells = [m] + [_fmt(res[f"{kind}/{a}"]) for a in aspects] + [_fmt(res["rm_weighted"])]
        if m == "sft":
            cells += ["-"] * 5
        else:
            cells += [_fmt(res["wall_seconds"], 0), _fmt(res["cpu_seconds"], 0), _fmt(res["peak_rss_mib"], 0),
                      _fmt(res["flops_per_step"], 2, 1e-9), _fmt(res["total_flops"], 2, 1e-12)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_plot(summary: dict, aspects: list, kind: str, path: str, title: str) -> str:
    """Grouped bars: one group per aspect, one bar per method, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = list(summary)
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(aspects), 3.6))
    x = np.arange(len(aspects))
    for i, m in enumerate(methods):
        stats = [summary[m][f"{kind}/{a}"] for a in aspects]
        mean = [s["mean"] if s["mean"] is not None else np.nan for s in stats]
        err = [s["std"] if s["std"] is not None else 0.0 for s in stats]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, mean, width, yerr=err, capsize=2, label=m)
    ax.set_xticks(x)
    ax.set_xticklabels(aspects)
    ax.set_ylabel("ground-truth mean" if kind == "ground_truth" else "reward-model score")
    ax.set_title(title, fontsize=9)
    top = max((s["mean"] or 0.0) + (s["std"] or 0.0) for m in methods for s in
              (summary[m][f"{kind}/{a}"] for a in aspects))
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), top * 1.22 if top > 0 else 1.0)
    ax.legend(fontsize=8, ncol=len(methods), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def xla_grpo_step_flops(policy_dir: str, *, rows: int, prompt_len: int, completion_len: int) -> dict:
    """Cross-check of the training term: XLA's ``cost_analysis()`` FLOPs of the compiled GRPO update step
    (forward + backward + AdamW, full fine-tuning) of the checkpoint ``policy_dir`` on ``rows`` random
    sequences, against ``6 x params x rows x (prompt_len + completion_len)``."""
    import functools

    import jax
    import numpy as np

    from grpojax.models import from_hf
    from grpojax.train.steps.grpo import GRPOSettings, grpo_step
    from grpojax.train.steps.optim import make_optimizer
    from grpojax.train.steps.state import create_train_state

    model = from_hf(policy_dir)
    V = model.config.vocab_size
    tx = make_optimizer(1e-3, total_steps=10)
    graphdef, state = create_train_state(model, tx, jax.random.key(0))
    r = np.random.default_rng(0)
    batch = {"prompt_BQ": r.integers(0, V, (rows, prompt_len)).astype(np.int32),
             "prompt_mask_BQ": np.ones((rows, prompt_len), np.int32),
             "completion_BC": r.integers(0, V, (rows, completion_len)).astype(np.int32),
             "completion_mask_BC": np.ones((rows, completion_len), np.int32),
             "old_logp_BC": np.full((rows, completion_len), -7.0, np.float32),
             "ref_logp_BC": np.full((rows, completion_len), -7.0, np.float32),
             "advantages_B": r.standard_normal(rows).astype(np.float32)}
    settings = GRPOSettings(beta=0.04, max_completion_length=completion_len)
    step = jax.jit(functools.partial(grpo_step, graphdef=graphdef, tx=tx, settings=settings))
    cost = step.lower(state, batch, jax.random.key(0)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    from grpojax.demo.compare import count_params

    params = count_params(policy_dir)
    formula = 6.0 * params * rows * (prompt_len + completion_len)
    return {"xla_flops": float(cost["flops"]), "formula_flops": formula, "params": params,
            "xla_over_formula": float(cost["flops"]) / formula}
