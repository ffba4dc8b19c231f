"""Online (iterative) DPO from the reward model: preference pairs built from the policy's own samples.

Per step (``train.batch_size`` completions = ``batch_size / online_dpo.num_generations`` prompts): sample
G completions per prompt with the current policy, score and aggregate them exactly as GRPO / PPO do, and
pair the best with the worst completion of each prompt (:func:`best_worst_pairs`; Xiong et al. 2024,
"Iterative Preference Learning from Human Feedback", arXiv 2312.11456; Guo et al. 2024, "Direct Language
Model Alignment from Online AI Feedback", arXiv 2402.04792). The pairs train the existing
:func:`grpojax.train.steps.preference.preference_step` (DPO / IPO / hinge) against the frozen initial policy.

A prompt whose best and worst rewards are equal (or all NaN) has no preference and is skipped: its row is
kept (so every batch has the static shape [prompts per step] and nothing recompiles) but both of its
response masks are zeroed, so both sequence log-probs are exactly 0, the margin ``h`` is 0 and the row's
gradient is exactly 0 (every cotangent into the model is multiplied by the zero mask). The step's mean is
over all rows, so the real pairs' gradient is scaled by ``n_valid / B`` (immaterial under Adam) and the
logged ``loss`` and ``rewards/*`` include the skipped rows' constants; ``pairs/valid_frac`` says how many
rows are real pairs and ``pairs/loss`` is the loss mean over the real pairs only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from grpojax.losses.dpo import dpo_loss
from grpojax.rollout import completion_reward_metrics, text_rewards
from grpojax.rollout.records import completion_records
from grpojax.rollout.scoring import Scorer
from grpojax.sharding import to_host
from grpojax.train.steps.preference import BASE_LOSS, PreferenceSettings, jitted_pair_logprobs, preference_step
from grpojax.train.steps.settings import from_section
from grpojax.train.tasks.base import BaseTask, host_row


def best_worst_pairs(rewards_BG: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index of the best and of the worst completion of every prompt, and whether they form a pair.

    ``best_b = argmax_g R_bg``, ``worst_b = argmin_g R_bg`` over the non-NaN rewards (the first index on
    ties); ``valid_b = max_g R_bg > min_g R_bg``. A row with equal rewards, or fewer than two non-NaN
    rewards, is not valid and gets ``worst_b = best_b``.

    Args:
      rewards_BG: [B, G] aggregated rewards (NaN = not scored).

    Returns:
      ``(best_B, worst_B, valid_B)``: int64, int64, bool.

    >>> best_worst_pairs(np.array([[0.1, 0.9, 0.5], [1.0, 1.0, 1.0]]))
    (array([1, 0]), array([0, 0]), array([ True, False]))
    """
    r = np.asarray(rewards_BG, np.float64)
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"best_worst_pairs: expected [B, G] rewards with G >= 2, got shape {r.shape}")
    finite = ~np.isnan(r)
    best = np.argmax(np.where(finite, r, -np.inf), axis=1)
    worst = np.argmin(np.where(finite, r, np.inf), axis=1)
    hi = np.max(np.where(finite, r, -np.inf), axis=1)
    lo = np.min(np.where(finite, r, np.inf), axis=1)
    valid = (finite.sum(axis=1) >= 2) & (hi > lo)
    best = np.where(finite.any(axis=1), best, 0)
    return best, np.where(valid, worst, best), valid


def pair_batch(sampled: dict, best_B: np.ndarray, worst_B: np.ndarray, valid_B: np.ndarray, G: int) -> dict:
    """Rows of a prompt-major ``[B*G, ...]`` sample batch (host arrays) -> a preference batch of B
    (chosen, rejected) as NumPy; rows that are not ``valid_B`` get all-zero response masks (skipped with
    exactly zero gradient). Host-side on purpose: eager gathers on sharded device arrays are cross-device
    collectives run op by op."""
    s = {k: np.asarray(sampled[k]) for k in ("prompt_BQ", "prompt_mask_BQ", "completion_BC", "completion_mask_BC")}
    base = np.arange(best_B.shape[0]) * G
    c, r = base + best_B, base + worst_B
    keep_B1 = np.asarray(valid_B, s["completion_mask_BC"].dtype)[:, None]
    return {"prompt_BQ": s["prompt_BQ"][base], "prompt_mask_BQ": s["prompt_mask_BQ"][base],
            "chosen_BC": s["completion_BC"][c], "chosen_mask_BC": s["completion_mask_BC"][c] * keep_B1,
            "rejected_BC": s["completion_BC"][r], "rejected_mask_BC": s["completion_mask_BC"][r] * keep_B1}


class OnlineDPOTask(BaseTask):
    kind = "grpo"  # prompt data, as GRPO

    def __init__(self, cfg, *, reward_model_scorer=None):
        super().__init__(cfg)
        o, pc = cfg.online_dpo, cfg.preference
        self.G = o.num_generations
        self.prompts = cfg.train.batch_size // self.G
        self.placement.check_rows(self.prompts, "train.batch_size / online_dpo.num_generations")
        self.scorer = Scorer(cfg, self.tok, reward_model_scorer, mesh=self.mesh)
        text_rewards.check_columns(self.scorer.funcs, self.dataset.column_names, cfg.data.path or cfg.data.format)
        self.settings = from_section(PreferenceSettings, pc, num_groups=1)
        mb = cfg.train.micro_batch_size
        self.num_micro = 1 if mb is None else self.prompts // mb
        if pc.shared_prefix:  # a pair's two responses sit on the device of its prompt (docs/shared_prefix.md)
            self.placement.check_rows(self.prompts // self.num_micro, "preference.shared_prefix: pairs per micro-batch")

    def loader_rows(self) -> int:
        return self.cfg.train.batch_size // self.cfg.online_dpo.num_generations  # prompts per step

    def init_state(self):
        state = super().init_state()
        self._ref = self.frozen_reference(state)
        self._ref_logps = jitted_pair_logprobs(self._ref[0], self.settings, self.mesh)
        return state

    def _compile(self, graphdef):
        self._step = self.jit_step(functools.partial(preference_step, graphdef=graphdef, tx=self.tx,
                                                     settings=self.settings, num_micro=self.num_micro),
                                   self.prompts)

    def sample_records(self, limit: int = 8):
        """``(key, records)`` of the latest rollout for ``completions.jsonl``
        (:func:`grpojax.rollout.records.completion_records`) with each completion's ``pair`` role:
        ``chosen``, ``rejected`` or empty (not in the prompt's pair, or no pair: equal rewards)."""
        if getattr(self, "_samples", None) is None:
            return None, []
        prompts, ro, best, worst, valid = self._samples
        role = [""] * len(ro.completions)
        for b in np.flatnonzero(valid):
            role[b * self.G + int(best[b])], role[b * self.G + int(worst[b])] = "chosen", "rejected"
        return ro, completion_records(prompts, ro.completions, ro.scores_NR, self.scorer.names, ro.rewards_N,
                                      self.G, limit, pair=role)

    def make_batch(self, state, rng):
        """Sample, score, pair; returns ``(batch, valid_B, host metrics)``."""
        rows = self.next_rows()
        prompts = list(rows["prompt"])
        _, ro = self.sample_prompts(self.model_of(state), prompts, rng, self.cfg.online_dpo,
                                    self.scorer, columns=rows)
        rewards_BG = ro.rewards_N.reshape(self.prompts, self.G)
        best, worst, valid = best_worst_pairs(rewards_BG)
        self._samples = (prompts, ro, best, worst, valid)
        batch = self.placement.full_rows(pair_batch(to_host(ro.batch), best, worst, valid, self.G))
        ref = self.placement.full_rows(self._ref_logps(*self.ref_arrays(state), batch))
        batch["ref_chosen_logp_B"], batch["ref_rejected_logp_B"] = ref
        rows = np.arange(self.prompts)
        gap = (rewards_BG[rows, best] - rewards_BG[rows, worst])[valid]
        metrics = {**completion_reward_metrics(ro), "pairs/valid_frac": float(valid.mean()),
                   "pairs/reward_gap": float(gap.mean()) if gap.size else 0.0,
                   "pairs/chosen_reward": float(rewards_BG[rows, best][valid].mean()) if gap.size else float("nan")}
        return batch, valid, metrics

    def train_steps(self, state, step, rngs):
        batch, valid, ro_metrics = self.make_batch(state, jax.random.fold_in(rngs[0], 1))
        state, metrics = self._step(state, batch, rngs[0])
        row = host_row(metrics)
        # the step's loss is Σ_b ℓ_b / B over all rows; a skipped row's ℓ is the constant loss at h = 0
        B, n = valid.shape[0], int(valid.sum())
        s, zero = self.settings, jnp.zeros((1,), jnp.float32)
        c = float(dpo_loss(zero, zero, zero, zero, beta=s.beta, loss_type=BASE_LOSS[s.loss],
                           label_smoothing=s.label_smoothing)[0])
        row["pairs/loss"] = (B * row["loss"] - (B - n) * c) / n if n else float("nan")
        return state, [{**ro_metrics, **row}]

    def evaluate(self, state, prompts: list, *, batch_prompts: int | None = None, seed: int = 0,
                 columns: dict | None = None) -> dict:
        """Mean reward and per-aspect scores of the policy on held-out ``prompts`` with the ``online_dpo``
        section's sampling and reward, as GRPO's evaluation (:meth:`BaseTask.evaluate_policy`)."""
        return self.evaluate_policy(state, prompts, self.cfg.online_dpo, self.scorer,
                                    batch_prompts=batch_prompts, seed=seed, columns=columns)
