"""Worker of ``benchmarks/accelerator.py --suite`` for the JAX groups: ``device``, ``small``, ``large``.

    python benchmarks/accelerator_jax.py --group large --plan DIR/plan.json --result DIR/result_large.json

Every part runs under :meth:`Results.part`, which records its numbers or its error (one line) and rewrites
the result file at once, so a part that crashes or a worker killed at its budget keeps what was done.
One device (the first), random weights, no downloads; only grpojax, jax, flax, optax and numpy are
imported (no ``datasets``, no tokenizer). Formulas and shapes live in ``accelerator.py``.

* ``device``: ``accelerator_device.group_device`` (measured peaks, attention parity).
* ``small`` / ``large``: a random-init train state (bf16 params, float32 Adam moments through
  ``grpojax.sharding.f32_optimizer_state``, born under ``jax.jit``); :func:`mfu` per sequence length; for
  ``large`` then :func:`sampler` per batch size and :func:`grpo_step_part`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import accelerator as A  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from accelerator import T0, log  # noqa: E402
from accelerator_device import bandwidth, group_device, matmul_peak, timed  # noqa: E402
from flax import nnx  # noqa: E402

from grpojax import sharding as shd  # noqa: E402
from grpojax.losses import group_advantages  # noqa: E402
from grpojax.models import PRESETS, Qwen, QwenConfig, apply_lora  # noqa: E402
from grpojax.sampling import sample  # noqa: E402
from grpojax.train.steps.forward import reference_logp_fn  # noqa: E402
from grpojax.train.steps.grpo import GRPOSettings, grpo_step  # noqa: E402
from grpojax.train.steps.state import create_train_state, merge_model  # noqa: E402


def part_budget(budgets: dict, name: str) -> float | None:
    """The plan's max seconds of part ``name`` (``mfu_1024`` falls back to ``mfu``), or None."""
    return budgets.get(name, budgets.get(name.split("_")[0]))


class Results:
    """``name -> dict`` of one group, rewritten to ``path`` after every part. With ``seconds`` (the group's
    time) and ``budgets`` (max seconds per part), a part is skipped, and says why, when less time is left
    than its budget: the worker would be killed in it, and a later, cheaper part may still fit."""

    def __init__(self, path: str, seconds: float | None = None, budgets: dict | None = None):
        self.path, self.data, self.budgets = path, {}, budgets or {}
        self.deadline = None if seconds is None else T0 + seconds

    def part(self, name: str, fn, **meta) -> dict:
        budget = part_budget(self.budgets, name)
        left = None if self.deadline is None else self.deadline - time.perf_counter()
        if budget is not None and left is not None and left < budget:
            fn = lambda: {"skipped": f"{left:.0f}s left in the group, the part's budget is {budget:.0f}s"}  # noqa: E731
        log(f"{name}: start {meta or ''}")
        t = time.perf_counter()
        try:
            r = {**meta, **fn()}
        except Exception as e:  # recorded, and the next part runs
            traceback.print_exc()
            r = {**meta, "error": f"{type(e).__name__}: {' '.join(str(e).split())[:600]}"}
        r["part_seconds"] = time.perf_counter() - t
        self.data[name] = r
        with open(self.path, "w") as f:
            json.dump(self.data, f, indent=1)
        log(f"{name}: {'ERROR ' + r['error'] if 'error' in r else 'done'} in {r['part_seconds']:.1f}s")
        return r


def device_peaks(dev) -> dict:
    """Datasheet bf16 peak and bandwidth of ``dev``; for a kind ``PEAKS`` does not know, measured (small on
    a CPU, accelerator-sized elsewhere)."""
    known = A.known_peaks(dev.device_kind)
    if known:
        return {"peak_flops": known[0], "bandwidth": known[1], "peaks_source": "datasheet"}
    n, mib = (256, 16) if dev.platform == "cpu" else (8192, 2048)
    return {"peak_flops": matmul_peak(n)["flops"], "bandwidth": bandwidth(mib)["bytes_per_s"],
            "peaks_source": f"measured ({dev.device_kind} is not in PEAKS)"}


# ------------------------------------------------------------------------------------------ models

def model_config(spec, scan_layers: bool) -> QwenConfig:
    cfg = PRESETS[spec] if isinstance(spec, str) else QwenConfig(**spec)
    return cfg.replace(scan_layers=scan_layers)


class Model:
    """A random-init train state of one model on a 1-device mesh, and the jitted pieces around it."""

    def __init__(self, cfg: QwenConfig, common: dict, lora_rank: int | None):
        self.cfg, self.common, self.lora_rank = cfg, common, lora_rank
        self.attention = common["attention"]  # Qwen refuses a name not in IMPLEMENTATIONS
        self.mesh = shd.make_mesh({"data": 1}, devices=jax.devices()[:1])
        self.tx = shd.f32_optimizer_state(optax.adamw(1e-6))

        def build():
            m = Qwen(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0), remat=common["remat"],
                     attention=self.attention)
            if lora_rank:
                apply_lora(m, rank=lora_rank, alpha=2 * lora_rank, rngs=nnx.Rngs(1))
            graphdef, state = create_train_state(m, self.tx, jax.random.key(0), lora=bool(lora_rank))
            return state, graphdef

        self.state, self.graphdef, self.state_sh = shd.init_sharded_tree(build, self.mesh)
        jax.block_until_ready(self.state)
        self.cfg_dict = dataclasses.asdict(cfg)
        self.peaks = device_peaks(jax.devices()[0])

    def describe(self) -> dict:
        return {"mode": "lora" if self.lora_rank else "full", "lora_rank": self.lora_rank, "params_dtype": "bfloat16",
                "adam_moments": "float32", "remat": self.common["remat"], "attention": self.attention,
                "scan_layers": self.cfg.scan_layers,
                **self.peaks}

    def step_fn(self, batch: dict, num_micro: int = 1):
        settings = GRPOSettings(beta=0.04, logprob_chunk=self.common["logprob_chunk"])
        fn = functools.partial(grpo_step, graphdef=self.graphdef, tx=self.tx, settings=settings, num_micro=num_micro)
        return shd.jit_step(fn, self.state_sh, shd.batch_shardings(batch, self.mesh), self.mesh)


def random_batch(cfg: QwenConfig, rows: int, prompt: int, completion: int, seed: int = 0) -> dict:
    r = np.random.default_rng(seed)
    return {"prompt_BQ": r.integers(0, cfg.vocab_size, (rows, prompt), dtype=np.int32),
            "prompt_mask_BQ": np.ones((rows, prompt), np.int32),
            "completion_BC": r.integers(0, cfg.vocab_size, (rows, completion), dtype=np.int32),
            "completion_mask_BC": np.ones((rows, completion), np.int32),
            "ref_logp_BC": np.full((rows, completion), -5.0, np.float32),
            "advantages_B": r.standard_normal(rows).astype(np.float32)}


def extra_bytes(compiled) -> int | None:
    """Device bytes a compiled step needs beyond its (resident) arguments: temporaries + unaliased outputs."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return int(m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes)


def xla_flops(compiled) -> float | None:
    c = compiled.cost_analysis()
    c = c[0] if isinstance(c, list | tuple) else c
    return None if not c or "flops" not in c else float(c["flops"])


def compile_fitting(compile_at, n: int, smaller) -> tuple:
    """``compile_at(n) -> (compiled, extra)`` at ``n``, then at ``smaller(n)`` (None: no smaller) while the
    compiled program needs more than 97% of the free device memory (never checked where the backend reports
    none, e.g. a CPU). Returns ``(compiled, extra, n, tried)``."""
    stats = jax.devices()[0].memory_stats() or {}
    free = stats["bytes_limit"] - stats.get("bytes_in_use", 0) if "bytes_limit" in stats else None
    tried = []
    while True:
        t = time.perf_counter()
        compiled, extra = compile_at(n)
        need = extra_bytes(compiled)
        tried.append({"n": n, "extra_bytes": need, "free_bytes": free, "compile_s": time.perf_counter() - t})
        if free is None or need is None or need <= 0.97 * free or smaller(n) is None:
            return compiled, extra, n, tried
        n = smaller(n)


def mfu(model: Model, seq: int, rows: int, steps: int) -> dict:
    """MFU of ``grpo_step`` on ``rows`` random sequences of ``seq`` tokens (half prompt, half completion);
    a batch whose compiled step needs more than the free device memory is halved (``rows_tried``)."""
    prompt = seq // 2

    def compile_at(n):
        host = random_batch(model.cfg, n, prompt, seq - prompt)
        batch = shd.shard(host, shd.batch_shardings(host, model.mesh))
        return model.step_fn(host).lower(model.state, batch, jax.random.key(1)).compile(), batch

    compiled, batch, rows, tried = compile_fitting(compile_at, rows, lambda n: n // 2 or None)

    def one():
        model.state, metrics = compiled(model.state, batch, jax.random.key(1))
        return metrics["loss"]

    first = timed(one, 1)[0]
    times = timed(one, steps)
    step_s = float(np.median(times))
    fl = A.update_flops(model.cfg_dict, rows=rows, prompt=prompt, completion=seq - prompt, lora_rank=model.lora_rank)
    return {"shape": f"{rows} x {seq}", "rows": rows, "seq": seq, "rows_tried": tried, "step_s": step_s,
            "step_s_all": times, "first_step_s": first, "model_flops": fl, "xla_flops": xla_flops(compiled),
            "mfu": fl["flops"] / step_s / model.peaks["peak_flops"],
            "mfu_palm": fl["flops_palm"] / step_s / model.peaks["peak_flops"],
            "tokens_per_s": rows * seq / step_s, **model.describe()}


def sampler(model: Model, rows: int, prompt: int, new: int, repeats: int, group: int = 1) -> dict:
    """Tokens/s of ``grpojax.sampling.sample`` (temperature 1, no EOS: exactly ``new`` tokens per row;
    ``rows / group`` random prompts, ``group`` samples each) on the current weights, against
    :func:`accelerator.sampler_floor` (which counts every row's KV cache)."""
    r = np.random.default_rng(1)
    prompts = r.integers(0, model.cfg.vocab_size, (rows // group, prompt), dtype=np.int32)
    mask = np.ones_like(prompts)
    policy = merge_model(model.graphdef, model.state.params, model.state.frozen)
    last = {}

    def run():
        last["out"] = sample(policy, prompts, mask, jax.random.key(2), max_new_tokens=new, temperature=1.0,
                             num_samples=group)
        return last["out"]

    first = timed(run, 1)[0]
    times = timed(run, repeats)
    made = int(np.asarray(last["out"].completion_mask_BC).sum())
    if made != rows * new:
        raise RuntimeError(f"sampled {made} tokens, expected {rows * new} (an EOS stopped a row?)")
    s = float(np.median(times))
    floor = A.sampler_floor(model.cfg_dict, rows=rows, prompt=prompt, new=new, peak_flops=model.peaks["peak_flops"],
                            bandwidth=model.peaks["bandwidth"])
    shape = f"{rows} x ({prompt} + {new})" + (f", {group} per prompt" if group > 1 else "")
    return {"shape": shape, "seconds": s, "seconds_all": times, "first_call_s": first,
            "tokens_per_s": rows * new / s, "fraction_of_floor": floor["floor_s"] / s, "floor": floor,
            **model.describe()}


def grpo_step_part(model: Model, g: dict, steps: int) -> dict:
    """One whole GRPO step as ``GRPOTask.train_steps`` runs it (minus text decoding): sample ``group``
    completions for each of ``prompts`` random prompts, a token rule reward on the host (share of even ids),
    group advantages, reference log-probs (a copy of the initial trainable params; under LoRA the
    base), the jitted ``grpo_step`` over micro-batches of ``micro_rows`` (halved while the compiled update
    needs more than the free device memory: ``micro_tried``). NeMo RL's metric: (prompt +
    generated tokens) / step seconds / GPUs."""
    nP, G = g["prompts"], g["group"]
    rows = nP * G
    micro = g["micro_rows"] * (2 if model.lora_rank else 1)  # LoRA: no full-size gradients, room for 2x rows
    micro = micro if rows % micro == 0 else rows
    r = np.random.default_rng(3)
    prompts = r.integers(0, model.cfg.vocab_size, (nP, g["prompt"]), dtype=np.int32)
    mask = np.ones_like(prompts)
    ref_fn = reference_logp_fn(model.graphdef, 1.0, model.common["logprob_chunk"], model.mesh)
    ref_params = jax.tree.map(jnp.copy, model.state.params)
    example = random_batch(model.cfg, rows, g["prompt"], g["new"])
    batch_sh = shd.batch_shardings(example, model.mesh)

    def compile_at(m):  # the update of rows // m micro-batches, compiled with the reference already resident
        ex = shd.shard(example, batch_sh)
        return model.step_fn(example, num_micro=rows // m).lower(model.state, ex, jax.random.key(1)).compile(), None

    step, _, micro, tried = compile_fitting(compile_at, micro, lambda m: m // 2 if m % 2 == 0 else None)
    keys = iter(jax.random.split(jax.random.key(4), 4 * (steps + 1)))

    def one():
        t0 = time.perf_counter()
        policy = merge_model(model.graphdef, model.state.params, model.state.frozen)
        out = sample(policy, prompts, mask, next(keys), max_new_tokens=g["new"], num_samples=G, temperature=1.0)
        tokens = np.asarray(out.completion_tokens_BC)
        cmask = np.asarray(out.completion_mask_BC)
        reward = ((tokens % 2 == 0) * cmask).sum(1) / np.maximum(cmask.sum(1), 1)
        batch = {"prompt_BQ": out.prompt_tokens_BT, "prompt_mask_BQ": out.prompt_mask_BT,
                 "completion_BC": out.completion_tokens_BC, "completion_mask_BC": out.completion_mask_BC,
                 "advantages_B": group_advantages(jnp.asarray(reward.reshape(nP, G), jnp.float32)).reshape(-1)}
        t1 = time.perf_counter()
        batch["ref_logp_BC"] = jax.block_until_ready(ref_fn(ref_params, model.state.frozen, batch))
        t2 = time.perf_counter()
        model.state, metrics = step(model.state, shd.shard(batch, batch_sh), next(keys))
        float(metrics["loss"])
        t3 = time.perf_counter()
        used = int(np.asarray(out.prompt_mask_BT).sum()) + int(cmask.sum())
        return {"rollout_s": t1 - t0, "ref_s": t2 - t1, "update_s": t3 - t2, "step_s": t3 - t0, "tokens": used}

    first = one()
    runs = [one() for _ in range(steps)]
    best = sorted(runs, key=lambda x: x["step_s"])[len(runs) // 2]
    return {"shape": f"{nP} prompts x G {G}, {g['prompt']} + {g['new']} tokens, micro-batch {micro}",
            "micro_tried": tried, "first_step": first, "steps": runs, **best, "gpus": 1,
            "tokens_per_s_per_gpu": best["tokens"] / best["step_s"] / 1, **model.describe()}


def group_model(name: str, p: dict, common: dict, res: Results, mode: str) -> None:
    cfg = model_config(p["model"], common["scan_layers"])
    lora = None
    if name == "large":
        stats = jax.devices()[0].memory_stats() or {}
        if mode == "auto":
            mode = "full" if stats.get("bytes_limit", 0) >= 120 * 2 ** 30 or p.get("tiny") else "lora"
        lora = p["lora_rank"] if mode == "lora" else None
    holder = {}
    res.part("build", lambda: holder.setdefault("m", Model(cfg, common, lora)).describe(), model=p["name"])
    model = holder.get("m")
    if model is None:
        return
    for shape in (p["mfu_lora"] if lora else p["mfu"]):
        goal = A.GOALS["mfu_small"] if name == "small" else (
            A.GOALS["mfu_large_1k"] if shape["seq"] <= 1024 else A.GOALS["mfu_large_8k"])
        res.part(f"mfu_{shape['seq']}", lambda s=shape: mfu(model, s["seq"], s["batch"], common["steps"]),
                 model=p["name"], goal=goal)
    if name != "large":
        return
    sp = p["sampler"]
    for rows in sp["batches"]:
        res.part(f"sampler_b{rows}",
                 lambda n=rows: sampler(model, n, sp["prompt"], sp["new"], sp["repeats"], sp["group"]),
                 model=p["name"], goal=A.GOALS["sampler_floor_b16"] if rows == 16 else None)
    res.part("grpo_step", lambda: grpo_step_part(model, p["grpo"], 1), model=p["name"])


def main(argv=None) -> int:
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("--group", required=True, choices=("device", "small", "large"))
    a.add_argument("--plan", required=True)
    a.add_argument("--result", required=True)
    a.add_argument("--cache-dir", default=None, help="persistent XLA cache (JAX_COMPILATION_CACHE_DIR wins)")
    a.add_argument("--seconds", type=float, default=None, help="the group's time budget (parts that would "
                   "not fit in what is left are skipped)")
    args = a.parse_args(argv)
    with open(args.plan) as f:
        plan = json.load(f)
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or args.cache_dir
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    res = Results(args.result, args.seconds, plan.get("part_s", {}).get(args.group))
    log(f"group {args.group} on {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    if args.group == "device":
        group_device(plan["device"], res)
    else:
        p = {**plan[args.group], "tiny": plan["tiny"]}
        group_model(args.group, p, plan["common"], res, plan.get("large_mode") or p.get("mode", "auto"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
