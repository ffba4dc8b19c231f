"""The method comparison (``scripts/compare_methods.py``): SFT vs GRPO vs PPO vs online DPO.

Every method starts from the same SFT checkpoint, is scored by the same reward model and samples the same
number of completions ``C`` (default: GRPO's ``train.steps x train.batch_size``):

- GRPO: ``C / batch_size`` optimizer steps, one rollout each (``num_iterations`` = 1);
- PPO: ``C / batch_size`` rollouts, each reused for ``ppo_epochs x num_mini_batches`` optimizer steps;
- online DPO: ``C / batch_size`` steps, one best-vs-worst pair per prompt.

The sampling and reward fields of PPO / online DPO (G, temperature, top-p/k, completion length, reward
model, aspects, weights, aggregation) and the data / model / tokenizer paths are copied from the GRPO
config, so the only differences are the algorithms' own settings. A comparison *spec* (YAML, e.g.
``configs/compare/demo.yaml``) names each method's base run config (``base``) and extra ``set`` overrides,
and the evaluation settings.

Each method trains in its own subprocess (``python -m grpojax.demo.compare train SPEC.json``) so that its
peak resident memory (``VmHWM`` of ``/proc/self/status``, the high-water mark of the child's own address
space) and CPU seconds (``getrusage(RUSAGE_SELF)``: user + system, all threads) are its own.

Model FLOPs per optimizer step (:func:`flops_per_step`), with P = policy parameters, P_rm = reward-model
parameters, P_c = separate-critic parameters (0 for a value head on the policy), T = max_prompt_length +
max_completion_length (the padded length every jitted forward computes), B = completions per rollout:

    training (forward + backward):  6 x params x trained sequences x T
    forward only:                   2 x params x sequences x T   (sampling, reference, reward model, critic)

- GRPO:       6 P B T + (2 P B T [sample] + 2 P_rm B T [RM] + 2 P B T [ref, beta > 0]) / mu
- PPO:        6 (P + P_c) (B / n_mb) T + (2 P B T [sample] + 2 P_rm B T [RM] + 2 (P + P_c) B T [old logp +
              values] + 2 P B T [ref, kl_coef > 0]) / (ppo_epochs x n_mb)
- online DPO: 6 P (2 B / G) T + 2 P B T [sample] + 2 P_rm B T [RM] + 2 P (2 B / G) T [ref]

Attention score FLOPs, norms and the optimizer are ignored (``benchmarks/utilisation.py`` has the
detailed count and an XLA cross-check); under LoRA the frozen weights get no weight gradient, so the
training term is closer to ``4 x params``.
"""

from __future__ import annotations

import json
import os
import sys
import time

from grpojax import cli
from grpojax.cli import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
METHODS = ("grpo", "ppo", "online_dpo")
SPEC_KEYS = {"methods", "evaluation", "completions"}
EVAL_KEYS = {"num_samples", "heldout_prompts", "seed_offset"}
# fields every online method shares with GRPO (same names in GRPOConfig and the rollout sections)
ROLLOUT_FIELDS = ("num_generations", "temperature", "top_p", "top_k", "max_completion_length",
                  "reward_model", "aspects", "reward_weights", "aggregation")


# ------------------------------------------------------------------------------------------- the spec
def load_spec(path: str) -> dict:
    """A comparison spec: ``methods: {grpo|ppo|online_dpo: {base: run-config YAML, set: {key: value}}}``,
    ``evaluation: {num_samples, heldout_prompts, seed_offset}``, ``completions`` (None = GRPO's).
    ``base`` paths are relative to the repository root (or absolute). Unknown keys are errors."""
    import yaml

    if not os.path.isfile(path):
        raise UserError(f"comparison spec not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path}: invalid YAML: {e}") from None
    bad = set(raw) - SPEC_KEYS
    if bad:
        raise UserError(f"{path}: unknown key(s) {sorted(bad)}; valid keys: {sorted(SPEC_KEYS)}")
    methods = raw.get("methods") or {}
    if set(methods) != set(METHODS):
        raise UserError(f"{path}: methods must list exactly {list(METHODS)}, got {sorted(methods)}")
    for m, entry in methods.items():
        if not isinstance(entry, dict) or "base" not in entry or set(entry) - {"base", "set"}:
            raise UserError(f"{path}: methods.{m} needs 'base' (a run config) and optionally 'set', got {entry}")
        base = entry["base"] if os.path.isabs(entry["base"]) else os.path.join(ROOT, entry["base"])
        if not os.path.isfile(base):
            raise UserError(f"{path}: methods.{m}.base: {base} does not exist")
        entry["base"] = base
        entry["set"] = dict(entry.get("set") or {})
    ev = raw.get("evaluation") or {}
    bad = set(ev) - EVAL_KEYS
    if bad:
        raise UserError(f"{path}: unknown evaluation key(s) {sorted(bad)}; valid keys: {sorted(EVAL_KEYS)}")
    c = raw.get("completions")
    if c is not None and (not isinstance(c, int) or c < 1):
        raise UserError(f"{path}: completions must be a positive integer or null, got {c!r}")
    return {"methods": methods, "completions": c,
            "evaluation": {"num_samples": 16, "heldout_prompts": 64, "seed_offset": 1000, **ev}}


def _yaml_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def as_overrides(d: dict) -> list[str]:
    """``{"train.steps": 3, "ppo.aspects": ["a", "b"]}`` -> ``["train.steps=3", "ppo.aspects=[a, b]"]``."""
    return [f"{k}={_yaml_value(v)}" for k, v in d.items()]


def method_configs(spec: dict, common: dict, method_sets: dict | None = None) -> dict:
    """Resolved, validated run configs of the three methods with equal completion budgets.

    ``common``: ``{dotted key: value}`` applied to every method (paths, seeds, model, data, ...);
    ``method_sets``: extra ``{method: {key: value}}`` (after the spec's ``set``). PPO / online DPO get the
    GRPO config's rollout fields (:data:`ROLLOUT_FIELDS`) and their step counts from the budget.
    Returns ``{method: {"base", "overrides", "cfg", "completions", "rollouts"}}``.
    """
    from grpojax.config import load_config

    method_sets = method_sets or {}

    def load(m, extra):
        entry = spec["methods"][m]
        over = as_overrides({**entry["set"], **common, **method_sets.get(m, {}), **extra})
        return entry["base"], over, load_config(entry["base"], over, kind=m)

    base, over, gcfg = load("grpo", {})
    g = gcfg.grpo
    if g.num_iterations != 1:
        raise UserError(f"the comparison runs GRPO with grpo.num_iterations=1 (one optimizer step per "
                        f"rollout), got {g.num_iterations}")
    budget = spec["completions"] or gcfg.train.steps * gcfg.train.batch_size
    out = {}
    gsteps = _divide(budget, gcfg.train.batch_size, "grpo")
    base, over, gcfg = load("grpo", {"train.steps": gsteps})
    out["grpo"] = {"base": base, "overrides": over, "cfg": gcfg, "completions": budget, "rollouts": gsteps}
    shared = {f"{sec}.{f}": getattr(g, f) for sec in ("ppo", "online_dpo") for f in ROLLOUT_FIELDS}
    paths = {k: _yaml_value(v) for k, v in (("model.path", gcfg.model.path), ("tokenizer.path", gcfg.tokenizer.path),
                                            ("data.path", gcfg.data.path)) if v is not None}
    for m in ("ppo", "online_dpo"):
        sync = {k: v for k, v in shared.items() if k.startswith(m + ".")}
        sync.update({"data.max_prompt_length": gcfg.data.max_prompt_length, "data.max_length": gcfg.data.max_length,
                     **paths})
        _, _, cfg = load(m, sync)
        rollouts = _divide(budget, cfg.train.batch_size, m)
        per = cfg.ppo.ppo_epochs * cfg.ppo.num_mini_batches if m == "ppo" else 1
        base, over, cfg = load(m, {**sync, "train.steps": rollouts * per})
        out[m] = {"base": base, "overrides": over, "cfg": cfg, "completions": budget, "rollouts": rollouts}
    return out


def _divide(budget: int, batch: int, method: str) -> int:
    if budget % batch:
        raise UserError(f"{method}: train.batch_size={batch} does not divide the completion budget {budget} "
                        "(every method must sample the same number of completions)")
    return budget // batch


# ------------------------------------------------------------------------------------------- FLOPs
def count_params(path: str) -> int:
    """Parameters of a HF checkpoint (safetensors headers only, no weights read) or of a reward run_dir
    (``config.yaml``: its backbone + the R x D head, counted on an abstract model)."""
    if os.path.isfile(os.path.join(path, "config.yaml")):
        from flax import nnx

        from grpojax.config import load_config
        from grpojax.train.build import build_reward_model

        rcfg = load_config(os.path.join(path, "config.yaml"), kind="reward")
        if rcfg.model.path:
            hidden = _hf_config(rcfg.model.path)["hidden_size"]
            return count_params(rcfg.model.path) + hidden * len(rcfg.reward.aspects)
        abstract = nnx.eval_shape(lambda: build_reward_model(rcfg))
        return int(sum(x.size for x in __import__("jax").tree.leaves(nnx.state(abstract, nnx.Param))))
    from safetensors import safe_open

    from grpojax.models.hf_io import resolve_checkpoint

    ckpt = resolve_checkpoint(path)
    files = sorted(f for f in os.listdir(ckpt) if f.endswith(".safetensors"))
    if not files:
        raise UserError(f"{ckpt}: no *.safetensors files to count parameters from")
    total = 0
    for name in files:
        with safe_open(os.path.join(ckpt, name), framework="numpy") as f:
            for k in f.keys():
                n = 1
                for d in f.get_slice(k).get_shape():
                    n *= d
                total += n
    return total


def _hf_config(path: str) -> dict:
    from grpojax.models.hf_io import read_hf_config, resolve_checkpoint

    return read_hf_config(resolve_checkpoint(path))


def flops_per_step(method: str, cfg, *, policy_params: int, rm_params: int, critic_params: int = 0) -> dict:
    """Model FLOPs of one optimizer step of ``method`` (module docstring formula), split into the training
    (forward + backward) and the forward-only parts; rollout costs are spread over the optimizer steps
    that reuse the rollout. Returns ``{"train", "forward", "total", "tokens_per_sequence"}`` (floats)."""
    P, Prm, Pc = float(policy_params), float(rm_params), float(critic_params)
    B = cfg.train.batch_size
    if method == "grpo":
        g = cfg.grpo
        T = cfg.data.max_prompt_length + g.max_completion_length
        train = 6 * P * B * T
        fwd = (2 * P * B * T + 2 * Prm * B * T + (2 * P * B * T if g.beta > 0 else 0.0)) / g.num_iterations
    elif method == "ppo":
        p = cfg.ppo
        T = cfg.data.max_prompt_length + p.max_completion_length
        train = 6 * (P + Pc) * (B / p.num_mini_batches) * T
        ref = 2 * P * B * T if (p.kl_coef > 0 or p.adaptive_kl) else 0.0
        fwd = (2 * P * B * T + 2 * Prm * B * T + 2 * (P + Pc) * B * T + ref) / (p.ppo_epochs * p.num_mini_batches)
    elif method == "online_dpo":
        o = cfg.online_dpo
        T = cfg.data.max_prompt_length + o.max_completion_length
        pairs = 2 * B / o.num_generations
        train = 6 * P * pairs * T
        fwd = 2 * P * B * T + 2 * Prm * B * T + 2 * P * pairs * T
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    return {"train": train, "forward": fwd, "total": train + fwd, "tokens_per_sequence": float(T)}


# ------------------------------------------------------------------------------------------- training child
def _vm_hwm_mib() -> float:
    """Peak resident set size of this process's own address space (``VmHWM``), MiB."""
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("/proc/self/status has no VmHWM line")


def reward_scorer_for(cfg, tok, section: str):
    """The reward-model scorer of ``cfg.<section>`` (grpo / ppo / online_dpo), built once."""
    from grpojax.rollout.reward_scorer import load_reward_scorer

    rc = getattr(cfg, section)
    if rc.reward_model is None:
        return None
    return load_reward_scorer(rc.reward_model, cfg, tok, section=section)


def train_child(job: dict) -> dict:
    """Train one method (``job``: ``method, base, overrides, result``) and write its measurements."""
    t0 = time.perf_counter()
    from grpojax.config import load_config
    from grpojax.train.runner import run

    method = job["method"]
    cfg = load_config(job["base"], job["overrides"], kind=method)
    if method == "grpo":
        from grpojax.train.tasks.grpo import GRPOTask as Task
    elif method == "ppo":
        from grpojax.train.tasks.ppo import PPOTask as Task
    else:
        from grpojax.train.tasks.online_dpo import OnlineDPOTask as Task
    task = Task(cfg)  # builds its reward-model scorer on the run's mesh (a one-device scorer cannot score
    # the rollouts the sharded sampler leaves on every device of the mesh)
    if cfg.model.lora.rank > 0:
        _own_reference_weights(task)
        _writable_merge_lora()
    summary = run(cfg, task)
    if summary["stopped_early"]:
        raise SystemExit(f"{method}: interrupted at step {summary['end_step']}")
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    result = {"method": method, "steps": cfg.train.steps, "train_loop_seconds": summary["seconds"],
              "wall_seconds": time.perf_counter() - t0, "cpu_seconds": ru.ru_utime + ru.ru_stime,
              "peak_rss_mib": _vm_hwm_mib(), "ru_maxrss_mib": ru.ru_maxrss / 1024.0,
              "run_dir": cfg.run_dir, "export_hf": cfg.export_hf}
    with open(job["result"] + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    os.replace(job["result"] + ".tmp", job["result"])
    return result


def _own_reference_weights(task) -> None:
    """Workaround (LoRA only): the tasks' frozen reference shares the base weights of ``state.frozen``,
    which the jitted step donates, so the reference's buffers are deleted after the first update
    ("Buffer has been deleted or donated"). Give the reference its own copy of the frozen weights."""
    import jax
    import jax.numpy as jnp

    init = task.init_state

    def init_state():
        state = init()
        ref = getattr(task, "_ref", None)
        if ref is not None:
            task._ref = ref._replace(frozen=jax.tree.map(jnp.copy, ref.frozen))
        return state

    task.init_state = init_state


def _writable_merge_lora() -> None:
    """Workaround (LoRA only): the export gathers the weights to host NumPy arrays, which are read-only,
    and ``merge_lora`` folds the adapters in place ("assignment destination is read-only"). Merge on
    writable copies instead."""
    import jax
    import numpy as np
    from flax import nnx

    from grpojax.models import lora

    merge = lora.merge_lora
    if getattr(merge, "_compare_writable", False):
        return

    def merge_lora(model):
        graphdef, state = nnx.split(model)
        state = jax.tree.map(lambda x: np.array(x) if isinstance(x, np.ndarray) else x, state)
        return merge(nnx.merge(graphdef, state))

    merge_lora._compare_writable = True
    lora.merge_lora = merge_lora


def run_child(job: dict, job_path: str) -> dict:
    """Run :func:`train_child` for ``job`` in a fresh Python process; its output streams through.

    The child runs in the caller's working directory (relative paths -- ``job_path``, ``--out``, the
    reward model, run directories -- mean the same in both) and imports this checkout's ``grpojax``
    (``ROOT`` first on ``PYTHONPATH``), so the comparison runs from any directory, not only the repository.
    """
    import subprocess

    with open(job_path, "w", encoding="utf-8") as f:
        json.dump(job, f, indent=2)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-m", "grpojax.demo.compare", "train", job_path], env=env)
    if proc.returncode == cli.EXIT_USER_ERROR:
        raise UserError(f"{job['method']} training stopped on bad input (the 'error:' line above); job: {job_path}")
    if proc.returncode != 0 or not os.path.isfile(job["result"]):
        raise RuntimeError(f"{job['method']} training failed (exit {proc.returncode}); see the output above "
                           f"and {job_path}")
    with open(job["result"], encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------- evaluation
def evaluate_reward_model(policy_dir: str, cfg, prompts: list[str], *, num_samples: int, seed: int,
                          scorer) -> dict:
    """Mean reward-model score per aspect of ``num_samples`` completions per prompt (the GRPO config's
    sampling settings, key ``PRNGKey(seed)``): the evaluation when there is no ground truth (Qwen path)."""
    import jax
    import numpy as np

    from grpojax.data import load_tokenizer
    from grpojax.rollout import SamplingSettings, sample_and_score
    from grpojax.train.build import build_model

    g = cfg.grpo
    tok = load_tokenizer(cfg.tokenizer_path, cfg.tokenizer.chat_template, cfg.tokenizer.system_prompt)
    model = build_model(cfg.model, path=policy_dir)
    sums, n = np.zeros(len(g.aspects)), 0
    chunk = max(1, cfg.train.batch_size // g.num_generations)
    for i in range(0, len(prompts), chunk):
        part = prompts[i:i + chunk]
        pb = tok.prompt_batch(part, cfg.data.max_prompt_length)
        ro = sample_and_score(model, pb.prompt_ids_BT, pb.prompt_mask_BT, part,
                                jax.random.fold_in(jax.random.key(seed), i), tok=tok,
                                score_fn=lambda b, p, t: np.asarray(scorer(b, p, t), np.float32),
                                aspect_names=list(g.aspects),
                                sampling=SamplingSettings(num_samples, g.max_completion_length, g.temperature,
                                                          g.top_k, None if g.top_p >= 1.0 else g.top_p))
        sums += ro.scores_NR.astype(np.float64).sum(axis=0)
        n += ro.scores_NR.shape[0]
    return {"reward_model": {a: float(sums[r] / n) for r, a in enumerate(g.aspects)}, "n": n}




if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "train":
        sys.exit("usage: python -m grpojax.demo.compare train JOB.json")
    with open(sys.argv[2], encoding="utf-8") as fh:
        _job = json.load(fh)
    cli.main(lambda argv: (train_child(_job), 0)[1], [])
