"""Reward-model training (ALGORITHMS.md 1.1) and loading a trained reward model as a GRPO scorer.

``reward_step`` is pure: multi-label regression (masked MSE, NaN labels masked, optional per-aspect
weights) on ``labels_BR`` mapped by the declared label affine ``y' = scale * y + offset``; or pairwise
Bradley-Terry on one score for preference pairs. The trained model stores the inverse map, so
``RewardModel.to_label_space`` returns scores on the labels' original scale.

``RewardTask.export`` writes the trained model as a HF ``*ForSequenceClassification`` directory;
``load_reward_scorer`` (:mod:`grpojax.train.reward_scorer`, re-exported here) turns that directory or the
reward ``run_dir`` into the scorer of GRPO / PPO / online-DPO rollouts.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax.cli import UserError
from grpojax.data import COLLATE, load_from_config
from grpojax.losses import bradley_terry_loss, regression_weight, reward_regression_loss
from grpojax.train.accumulate import accumulate, apply_gradients
from grpojax.sharding import is_main_process, to_host, traced_on_mesh
from grpojax.train.runner import DTYPES, maybe_lora, preset_config
from grpojax.train.state import TrainState, merge_model
from grpojax.train.tasks import BaseTask, host_row


def reward_step(state: TrainState, batch: dict, rng, *, graphdef, tx, loss: str = "regression",
                aspect_weights: tuple | None = None, margin: float = 0.0, num_micro: int = 1):
    """One update of the reward model. Regression batch: ``input_ids_BT, attention_mask_BT, labels_BR,
    label_mask_BR``; Bradley-Terry batch: ``chosen_*`` / ``rejected_*`` sequences (score 0 is trained).

    Under gradient accumulation the regression loss of every micro-batch is normalised by the weighted
    label count of the WHOLE step (:func:`grpojax.losses.regression_weight`), so loss, gradient and the
    per-aspect ``mse`` are those of the full batch however unevenly labels are missing; Bradley-Terry pairs
    are all valid, so each micro-batch's mean over its equal share of pairs is divided by ``num_micro``."""
    del rng
    if loss == "regression":
        num_items = regression_weight(batch["labels_BR"], batch["label_mask_BR"], aspect_weights)

    def scores(model, mb, prefix):
        return model(mb[f"{prefix}input_ids_BT"], mb[f"{prefix}attention_mask_BT"])

    def loss_fn(params, mb):
        model = merge_model(graphdef, params, state.frozen)
        if loss == "regression":
            value, aux = reward_regression_loss(scores(model, mb, ""), mb["labels_BR"], mb["label_mask_BR"],
                                                aspect_weights, num_items=num_items)
            return value, {"sq_R": aux.mse_R * aux.count_R, "count_R": aux.count_R}
        value, aux = bradley_terry_loss(scores(model, mb, "chosen_")[:, 0], scores(model, mb, "rejected_")[:, 0],
                                        margin=margin or None)
        return value / num_micro, {"accuracy": aux.accuracy, "margin": aux.margin_mean}

    value, grads, metrics = accumulate(loss_fn, state.params, batch, num_micro)
    if loss == "regression":  # micro-batch means of sums and counts: their ratio is the full-batch MSE
        metrics = {"mse": metrics["sq_R"] / jnp.maximum(metrics["count_R"], 1e-9)}
    state, opt_metrics = apply_gradients(state, tx, grads, value)
    return state, {"loss": value, **metrics, **opt_metrics}


def label_map(label_affine):
    """``(scale, offset)`` of ``y' = scale*y + offset`` -> the model's (label_scale, label_shift) inverse."""
    if label_affine is None:
        return None, None
    a, c = label_affine
    return 1.0 / a, -c / a


def build_reward_model(cfg, pad_token_id: int | None = None):
    """The reward model of a reward run config: HF backbone (``model.path``) or a random preset, R = the
    number of aspects, the label map stored, LoRA on the backbone when configured (the head trains too).
    ``pad_token_id``: the training tokenizer's pad id (never pooled, as transformers)."""
    from grpojax.models.reward_model import RewardModel, reward_model_from_hf

    mc, R, seed = cfg.model, len(cfg.reward.aspects), cfg.train.seed
    scale, shift = label_map(cfg.reward.label_affine)
    dtype = DTYPES[mc.dtype]
    if mc.path:
        try:
            model = reward_model_from_hf(mc.path, num_labels=R, dtype=dtype, param_dtype=DTYPES[mc.param_dtype],
                                         rngs=nnx.Rngs(seed), label_scale=scale, label_shift=shift,
                                         remat=mc.remat, scan_layers=mc.scan_layers, pad_token_id=pad_token_id)
        except (FileNotFoundError, OSError, ValueError) as e:
            raise UserError(f"cannot load reward backbone {mc.path!r}: {e}") from None
    else:
        model = RewardModel(preset_config(mc), R, dtype=dtype, param_dtype=DTYPES[mc.param_dtype],
                            rngs=nnx.Rngs(seed), label_scale=scale, label_shift=shift, remat=mc.remat,
                            pad_token_id=pad_token_id)
    if mc.lora.rank:
        maybe_lora(model.backbone, mc, seed=seed)
    return model


class RewardTask(BaseTask):
    kind = "reward"

    def __init__(self, cfg):
        self.rc = cfg.reward
        self.kind = "reward" if self.rc.loss == "regression" else "dpo"
        super().__init__(cfg)
        self.aspects = list(self.rc.aspects)
        self.eval_set = None
        if cfg.train.eval_every:
            if not (cfg.data.eval_split or cfg.data.eval_path):
                raise UserError("train.eval_every > 0 needs evaluation data: set data.eval_path or eval_split")
            self.eval_set = load_from_config(cfg.data, self.kind, split=cfg.data.eval_split or "validation",
                                             **self.data_options())

    def data_options(self) -> dict:
        """A named builder labels the aspects it knows (PKU-SafeRLHF: safety) in ``reward.aspects`` order,
        the others missing."""
        return {"aspects": tuple(self.rc.aspects)}

    def new_model(self):
        return build_reward_model(self.cfg, self.tok.pad_id)

    def _compile(self, graphdef):
        weights = tuple(self.rc.aspect_weights) or None
        self._step = self.jit_step(functools.partial(
            reward_step, graphdef=graphdef, tx=self.tx, loss=self.rc.loss, aspect_weights=weights,
            margin=self.rc.margin, num_micro=self.cfg.train.grad_accum), self.cfg.train.batch_size)

        def predict(params, frozen, ids, mask):
            return merge_model(graphdef, params, frozen)(ids, mask)

        self._predict = jax.jit(traced_on_mesh(predict, self.mesh))

    def _labels(self, raw):
        """Collated rows (NumPy) with the label affine applied."""
        raw = {k: np.asarray(v) for k, v in raw.items()}
        if self.rc.label_affine is not None and "labels_BR" in raw:
            a, c = self.rc.label_affine
            raw = dict(raw, labels_BR=(raw["labels_BR"] * a + c).astype(raw["labels_BR"].dtype))
        return raw

    def train_steps(self, state, step, rngs):
        state, metrics = self._step(state, self.global_rows(self._labels(next(self.loader))), rngs[0])
        names = self.aspects if self.rc.loss == "regression" else None
        return state, [host_row(metrics, names)]

    def evaluate(self, state) -> dict:
        """Held-out per-aspect MSE and Pearson correlation (on the model's training scale)."""
        if self.rc.loss != "regression":
            return {}
        d = self.cfg.data
        collate = functools.partial(COLLATE["reward"], self.tok, max_prompt_length=d.max_prompt_length,
                                    max_length=d.max_length)
        preds, labels, masks = [], [], []
        bs = self.cfg.train.batch_size
        for i in range(0, len(self.eval_set) - len(self.eval_set) % bs or len(self.eval_set), bs):
            b = self._labels(collate(self.eval_set[i:i + bs]))
            x = self.full_rows({k: b[k] for k in ("input_ids_BT", "attention_mask_BT")})
            preds.append(to_host(self._predict(state.params, state.frozen, x["input_ids_BT"],
                                               x["attention_mask_BT"])))
            labels.append(b["labels_BR"]), masks.append(b["label_mask_BR"])
        p, y, m = (np.concatenate(x) for x in (preds, labels, masks))
        row = {}
        for r, name in enumerate(self.aspects):
            sel = m[:, r] > 0
            row[f"eval/mse/{name}"] = float(np.mean((p[sel, r] - y[sel, r]) ** 2))
            row[f"eval/pearson/{name}"] = float(np.corrcoef(p[sel, r], y[sel, r])[0, 1]) if sel.sum() > 2 else float("nan")
        row["eval/mse"] = float(np.mean([row[f"eval/mse/{a}"] for a in self.aspects]))
        return row

    def after_steps(self, state, step, rows):
        if self.eval_set is not None and step % self.cfg.train.eval_every == 0:
            rows[-1].update(self.evaluate(state))
        return state

    def export(self, state, out_dir: str) -> str | None:
        """The trained reward model as a HF ``*ForSequenceClassification`` directory (LoRA merged,
        ``id2label`` = the aspects, the label map and the prompt formatting under config.json ``"grpojax"``)
        plus the tokenizer: loadable by transformers and as ``grpo.reward_model`` / ``ppo.reward_model``.
        Process 0 writes (the weights are gathered to every host first, a collective all run)."""
        from grpojax.models.reward_model import reward_model_to_hf

        params, frozen = to_host((state.params, state.frozen))
        if not is_main_process():
            return None
        model = merge_model(self.graphdef, params, frozen)
        if self.lora:
            from grpojax.models.lora import merge_lora

            model = merge_lora(model)
        meta = {"chat_template": self.tok.use_chat_template, "system_prompt": self.tok.system_prompt,
                "loss": self.rc.loss}
        try:
            path = reward_model_to_hf(model, out_dir, pad_token_id=self.tok.pad_id, aspects=self.aspects,
                                      meta=meta)
        except FileExistsError as e:
            raise UserError(f"export_hf: {e}") from None
        self.tok.hf.save_pretrained(out_dir)
        print(f"exported the reward model to {path}")
        return path


from grpojax.train.reward_scorer import load_reward_scorer  # noqa: E402  (re-exported: callers import it here)
