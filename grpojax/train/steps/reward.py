"""The pure reward-model step (ALGORITHMS.md 1.1): multi-label regression (masked MSE, NaN labels masked,
optional per-aspect weights) on ``labels_BR`` mapped by the declared label affine ``y' = scale * y +
offset``; or pairwise Bradley-Terry on one score for preference pairs.

A packed regression batch (``data.packing``, :func:`grpojax.data.packing.pack_reward`: ``input_ids_BT,
positions_BT, segment_ids_BT`` and per-slot ``labels_BXR, label_mask_BXR``) scores each example at its own
last token (:meth:`grpojax.models.reward_model.RewardModel.packed`); its ``[B * X, R]`` scores and labels
(empty slots unlabelled) give the same sum over the same labelled entries and the same normaliser."""

from __future__ import annotations

import jax.numpy as jnp

from grpojax.losses import bradley_terry_loss, regression_weight, reward_regression_loss
from grpojax.train.steps.accumulate import accumulate, apply_gradients
from grpojax.train.steps.state import TrainState, merge_model


def reward_step(state: TrainState, batch: dict, rng, *, graphdef, tx, loss: str = "regression",
                aspect_weights: tuple | None = None, margin: float = 0.0, num_micro: int = 1):
    """One update of the reward model. Regression batch: ``input_ids_BT, attention_mask_BT, labels_BR,
    label_mask_BR``; Bradley-Terry batch: ``chosen_*`` / ``rejected_*`` sequences (score 0 is trained).

    Under gradient accumulation the regression loss of every micro-batch is normalised by the weighted
    label count of the WHOLE step (:func:`grpojax.losses.regression_weight`), so loss, gradient and the
    per-aspect ``mse`` are those of the full batch however unevenly labels are missing; Bradley-Terry pairs
    are all valid, so each micro-batch's mean over its equal share of pairs is divided by ``num_micro``."""
    del rng
    packed = "segment_ids_BT" in batch
    if packed and loss != "regression":
        raise ValueError("reward_step: packed rows are for the regression loss")
    if loss == "regression":
        num_items = regression_weight(*_labels(batch, packed), aspect_weights)

    def scores(model, mb, prefix):
        if packed:
            X = mb["labels_BXR"].shape[1]
            scores_BXR = model.packed(mb["input_ids_BT"], mb["positions_BT"], mb["segment_ids_BT"], X)
            return scores_BXR.reshape(-1, scores_BXR.shape[-1])
        return model(mb[f"{prefix}input_ids_BT"], mb[f"{prefix}attention_mask_BT"])

    def loss_fn(params, mb):
        model = merge_model(graphdef, params, state.frozen)
        if loss == "regression":
            value, aux = reward_regression_loss(scores(model, mb, ""), *_labels(mb, packed),
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


def _labels(batch: dict, packed: bool):
    """``(labels, label_mask)`` as ``[rows, R]``: a packed batch's ``[B, X, R]`` slots flattened."""
    if not packed:
        return batch["labels_BR"], batch["label_mask_BR"]
    return tuple(batch[k].reshape(-1, batch[k].shape[-1]) for k in ("labels_BXR", "label_mask_BXR"))
