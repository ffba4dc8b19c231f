"""The reward-model task: labelled rows (multi-label regression) or preference pairs (Bradley-Terry) ->
:func:`grpojax.train.steps.reward.reward_step`; held-out per-aspect MSE / Pearson every
``train.eval_every`` steps; ``export`` writes the trained model as a HF ``*ForSequenceClassification``
directory that :func:`grpojax.rollout.reward_scorer.load_reward_scorer` loads as a rollout scorer.
With ``data.packing`` (regression) a step's rows are packed several per row (:mod:`grpojax.data.packing`);
the held-out evaluation stays unpacked.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from grpojax.cli import UserError
from grpojax.data import COLLATE, load_from_config
from grpojax.data.packing import pack_reward
from grpojax.models.lora import merge_lora
from grpojax.models.reward_model import reward_model_to_hf
from grpojax.sharding import is_main_process, to_host, traced_on_mesh
from grpojax.train.build import build_reward_model
from grpojax.train.steps.reward import reward_step
from grpojax.train.steps.state import merge_model
from grpojax.train.tasks.base import BaseTask, host_row, packing_metrics, rows_multiple


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
        raw, d = self._labels(next(self.loader)), self.cfg.data
        if d.packing:  # config: regression only
            raw = pack_reward(raw, d.max_length, self.tok.pad_id, rows_multiple=rows_multiple(self),
                              names=self.loader.last_indices)
        state, metrics = self._step(state, self.placement.global_rows(raw), rngs[0])
        names = self.aspects if self.rc.loss == "regression" else None
        return state, [host_row(metrics, names) | packing_metrics(d, raw)]

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
            x = self.placement.full_rows({k: b[k] for k in ("input_ids_BT", "attention_mask_BT")})
            preds.append(to_host(self._predict(state.params, state.frozen, x["input_ids_BT"],
                                               x["attention_mask_BT"])))
            labels.append(b["labels_BR"]), masks.append(b["label_mask_BR"])
        p, y, m = (np.concatenate(x) for x in (preds, labels, masks))
        row = {}
        for r, name in enumerate(self.aspects):
            sel = m[:, r] > 0
            row[f"eval/mse/{name}"] = float(np.mean((p[sel, r] - y[sel, r]) ** 2))
            r_xy = float(np.corrcoef(p[sel, r], y[sel, r])[0, 1]) if sel.sum() > 2 else float("nan")
            row[f"eval/pearson/{name}"] = r_xy
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
        params, frozen = to_host((state.params, state.frozen))
        if not is_main_process():
            return None
        model = merge_model(self.graphdef, params, frozen)
        if self.lora:
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
