"""Stages of the demo pipeline (:mod:`grpojax.demo.pipeline`): data files, configs, training, evaluation.

Every stage trains with the library's own entry points -- ``load_config`` on ``configs/demo/<stage>.yaml``
plus ``key=value`` overrides, a task of :mod:`grpojax.train`, and :func:`grpojax.train.runner.run` (so
each stage writes ``config.yaml``, ``metrics.jsonl``, TensorBoard events, progress lines and an Orbax
checkpoint in its ``run_dir``). The evaluation helpers score sampled completions with the ground-truth
scorers of :mod:`grpojax.demo.scorers` (which GRPO never sees) and with the learned reward model, and
compute per-group preference metrics on the opinion task's test split in float64 NumPy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np

from grpojax.cli import UserError
from grpojax.config.presets import PRESET_DIR
from grpojax.demo.datasets import read_jsonl, write_jsonl
from grpojax.demo.opinions import GROUPS
from grpojax.demo.scorers import ASPECTS, score_batch
from grpojax.demo.tokenizer import strip_completion

CONFIG_DIR = os.path.join(PRESET_DIR, "demo")
DONE = "stage_done.json"


# ------------------------------------------------------------------------------------------- data files
class StageTimer:
    """``timed(name, fn)`` runs ``fn()`` as the stage ``name``: logs its start and end through ``log`` and
    records its wall seconds (one decimal) in ``timed.seconds[name]``; returns ``fn()``'s result."""

    def __init__(self, log):
        self.log = log
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn):
        self.log(f"stage {name} ...")
        t = time.perf_counter()
        result = fn()
        self.seconds[name] = round(time.perf_counter() - t, 1)
        self.log(f"stage {name} done in {self.seconds[name]:.1f} s")
        return result


def prepare_data(world: dict[str, str], data_dir: str) -> dict[str, str]:
    """The world's JSONL files in the library's column layout, written under ``data_dir``.

    The library applies the tokenizer's chat template to the raw ``prompt`` (the world's template renders
    exactly :func:`grpojax.demo.tokenizer.format_prompt`) and appends EOS to a response, so responses are
    stored as ``" " + text`` (every world word is a space-prefixed BPE token) without the EOS marker.
    """
    out = {}

    def write(name, rows):
        out[name] = write_jsonl(rows, os.path.join(data_dir, f"{name}.jsonl"), overwrite=True)

    write("sft", [{"prompt": r["request"], "response": " " + r["response"]} for r in read_jsonl(world["sft"])])
    for split in ("reward_train", "reward_heldout"):
        write(split, [{"prompt": r["request"], "response": " " + r["response"], **{a: r[a] for a in ASPECTS}}
                      for r in read_jsonl(world[split])])
    for split in ("grpo_train", "grpo_heldout"):
        write(split, [{"prompt": r["request"], "topic": r["topic"], "harmful": r["harmful"]}
                      for r in read_jsonl(world[split])])
    for split in ("train", "val", "test"):
        write(f"opinions_{split}", [
            {"prompt": r["question"], "chosen": " " + r["chosen_letter"], "rejected": " " + r["rejected_letter"],
             "group": r["group"]} for r in read_jsonl(world[f"opinions_{split}"])])
    # one SFT row (the preferred letter) per (group, question) of the train split, however many pairs it has
    rows = {(r["group"], r["question"]): r for r in read_jsonl(world["opinions_train"])}
    write("opinions_sft", [{"prompt": r["question"], "response": " " + r["chosen_letter"], "group": r["group"]}
                           for r in rows.values()])
    return out


# ------------------------------------------------------------------------------------------- configs
def stage_config(name: str, overrides: list[str]):
    """``configs/demo/<name>.yaml`` with ``overrides`` applied (validated by :func:`load_config`)."""
    from grpojax.config import load_config

    path = os.path.join(CONFIG_DIR, f"{name}.yaml")
    if not os.path.isfile(path):
        raise UserError(f"demo config not found: {path} (run from a source checkout: pip install -e .)")
    return load_config(path, overrides)


def train_stage(cfg, task) -> dict:
    """Run ``task`` to the end of ``cfg.train.steps``; a run stopped by a signal aborts the pipeline."""
    from grpojax.train.runner import run

    summary = run(cfg, task)
    if summary["stopped_early"]:
        raise SystemExit(f"stage {cfg.run_dir} was interrupted at step {summary['end_step']}; rerun the same "
                         "command to resume it")
    return summary


def last_metrics(run_dir: str) -> dict:
    """The union of all metric rows of a run (later rows win): final values of every logged key."""
    from grpojax.metrics import read_metrics

    merged = {}
    for row in read_metrics(os.path.join(run_dir, "metrics.jsonl")):
        merged.update(row)
    return merged


def stage_done(run_dir: str) -> dict | None:
    """The stored result of a finished stage (resuming an interrupted pipeline), else None."""
    path = os.path.join(run_dir, DONE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def mark_done(run_dir: str, result: dict) -> dict:
    with open(os.path.join(run_dir, DONE), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result


# ------------------------------------------------------------------------------------------- evaluation
def evaluate_policy(policy_dir: str, reward_dir: str, grpo_cfg, prompts: list[str], *, num_samples: int,
                    seed: int) -> dict:
    """Sample ``num_samples`` completions per held-out prompt and score them two ways.

    Ground truth: the rule scorers on the decoded, stripped response text. Learned: the reward model's
    scores (label scale) of the same sampled tokens. Sampling uses the GRPO config's temperature / length
    and the key ``PRNGKey(seed)``, identical for every policy evaluated with the same seed.

    Returns ``{"ground_truth": {aspect: mean}, "reward_model": {aspect: mean}, "examples": [...]}``.
    """
    import jax

    from grpojax.data import load_tokenizer
    from grpojax.rollout import SamplingSettings, sample_and_score
    from grpojax.rollout.reward_scorer import load_reward_scorer
    from grpojax.train.build import build_model

    tok = load_tokenizer(grpo_cfg.tokenizer_path)
    model = build_model(grpo_cfg.model, path=policy_dir)
    scorer = load_reward_scorer(reward_dir, grpo_cfg, tok)
    R = len(ASPECTS)

    def score_fn(batch, prompts_N, texts_N):
        gt_NR = score_batch(prompts_N, [strip_completion(t) for t in texts_N])
        rm_NR = np.asarray(scorer(batch, prompts_N, texts_N), np.float32)
        return np.concatenate([gt_NR, rm_NR], axis=-1)

    g = grpo_cfg.grpo
    pb = tok.prompt_batch(prompts, grpo_cfg.data.max_prompt_length)
    ro = sample_and_score(model, pb.prompt_ids_BT, pb.prompt_mask_BT, prompts, jax.random.key(seed),
                            tok=tok, score_fn=score_fn, aspect_names=[f"gt/{a}" for a in ASPECTS] +
                            [f"rm/{a}" for a in ASPECTS],
                            sampling=SamplingSettings(num_samples, g.max_completion_length, g.temperature,
                                                      g.top_k, None if g.top_p >= 1.0 else g.top_p))
    s_NR = ro.scores_NR.astype(np.float64)
    prompts_N = [p for p in prompts for _ in range(num_samples)]
    examples = [{"request": prompts_N[i], "response": strip_completion(ro.completions[i]),
                 **{a: float(s_NR[i, r]) for r, a in enumerate(ASPECTS)}} for i in range(0, len(prompts_N),
                                                                                          num_samples)]
    return {"ground_truth": {a: float(s_NR[:, r].mean()) for r, a in enumerate(ASPECTS)},
            "reward_model": {a: float(s_NR[:, R + r].mean()) for r, a in enumerate(ASPECTS)},
            "ground_truth_sem": {a: float(s_NR[:, r].std(ddof=1) / np.sqrt(len(s_NR)))
                                 for r, a in enumerate(ASPECTS)},
            "n": int(s_NR.shape[0]), "examples": examples}


def group_preference_metrics(pw_P, pl_P, rw_P, rl_P, group_P, *, beta: float, loss: str,
                             num_groups: int) -> dict:
    """Per-group mean loss and reward accuracy of preference pairs (float64 NumPy, ALGORITHMS.md 2.1).

    ``h = (pw - rw) - (pl - rl)``; IPO loss ``(h - 1/(2 beta))^2``, DPO loss ``-log sigmoid(beta h)``;
    reward accuracy ``h > 0``. Worst group = max loss / min accuracy over groups. Shapes: all [P].
    """
    h = (np.asarray(pw_P, np.float64) - rw_P) - (np.asarray(pl_P, np.float64) - rl_P)
    if loss.endswith("ipo"):
        per = (h - 1.0 / (2.0 * beta)) ** 2
    elif loss.endswith("dpo"):
        per = np.logaddexp(0.0, -beta * h)
    else:
        raise ValueError(f"loss={loss!r}; expected an *ipo or *dpo loss")
    group_P = np.asarray(group_P)
    present = [g for g in range(num_groups) if np.any(group_P == g)]
    gl = {g: float(per[group_P == g].mean()) for g in present}
    ga = {g: float((h[group_P == g] > 0).mean()) for g in present}
    return {"test_loss": float(per.mean()), "test_reward_accuracy": float((h > 0).mean()),
            "group_test_loss": {GROUPS[g]: gl[g] for g in present},
            "group_test_reward_accuracy": {GROUPS[g]: ga[g] for g in present},
            "worst_group_test_loss": max(gl.values()),
            "worst_group_test_reward_accuracy": min(ga.values())}


def preference_task_with_test(cfg, test_path: str):
    """A :class:`~grpojax.train.tasks.preference.PreferenceTask` that, after its last step, evaluates the final
    policy on the whole ``test_path`` split (one batch, nothing dropped) into ``task.test_metrics``."""
    from grpojax.data import COLLATE, load_from_config
    from grpojax.train.tasks.preference import PreferenceTask

    class _Task(PreferenceTask):
        test_metrics = None

        def after_steps(self, state, step, rows):
            state = super().after_steps(state, step, rows)
            if step == self.cfg.train.steps:
                self.test_metrics = self.test(state)
            return state

        def test(self, state):
            d = self.cfg.data
            test_set = load_from_config(dataclasses.replace(d, eval_path=test_path), "dpo", split="test")
            raw = COLLATE["dpo"](self.tok, test_set[:], max_prompt_length=d.max_prompt_length,
                                 max_length=d.max_length)
            batch = self.make_batch(raw, state)
            pw, pl = self._policy_logps(state.params, state.frozen, batch)
            s = self.settings
            rw_P = np.asarray(batch["ref_chosen_logp_B"], np.float64)
            group_P = np.asarray(batch["group_id_B"])
            out = group_preference_metrics(
                np.asarray(pw), np.asarray(pl), rw_P, np.asarray(batch["ref_rejected_logp_B"], np.float64),
                group_P, beta=s.beta, loss=s.loss, num_groups=s.num_groups)
            # how much the reference (opinion SFT) model learned: its NLL of the preferred answer (letter +
            # EOS) per group, against ln 4 for a uniform guess among the four letters
            out["reference_group_test_nll"] = {GROUPS[g]: float(-rw_P[group_P == g].mean())
                                               for g in range(s.num_groups) if np.any(group_P == g)}
            return out

    return _Task(cfg)
