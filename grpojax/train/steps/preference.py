"""The pure preference step: DPO / IPO / hinge, group-robust GR-DPO / GR-IPO, and IS-DPO / IS-IPO.

Batch (P pairs; the prompt is shared by the two responses of a pair):

    prompt_BQ, prompt_mask_BQ                 left-padded prompts
    chosen_BC, chosen_mask_BC                 right-padded chosen responses (EOS included)
    rejected_BC, rejected_mask_BC             right-padded rejected responses
    ref_chosen_logp_B, ref_rejected_logp_B    reference sequence log-probs (precomputed, frozen)
    group_id_B                                int group of each pair (robust / IS losses only)

A packed batch (``data.packing``, :func:`grpojax.data.packing.pack_preference`) replaces the sequence
arrays by ``input_ids_BT, positions_BT, segment_ids_BT, loss_mask_BT, slot_mask_BX`` and the flat slot
indices ``chosen_index_P, rejected_index_P`` (:func:`pair_logprobs`); the rest is the same per pair.

Group-robust losses (ALGORITHMS.md 2.3, mini-batch form of the official code): alpha is updated FIRST from
the whole step's per-pair losses, then theta descends ``Σ_g w_g ĝ_g / |batch|`` with the new alpha held
constant. With ``num_micro > 1`` the step therefore makes a forward-only pass over the micro-batches to get
every pair's loss (the alpha update needs all of them), then the accumulated gradient pass with fixed
per-pair weights; with ``num_micro == 1`` both happen in one pass. The two give the same update (tested).
The robust step size is ``eta_alpha * eta_alpha_decay_on_lr_cut ** cuts`` where
``state.lr_scale = plateau_factor ** cuts``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from grpojax.losses.dpo import dpo_loss, preference_metrics, sequence_logprob
from grpojax.losses.robust import group_metrics, robust_weights
from grpojax.sharding.jit import traced_on_mesh
from grpojax.train.steps.accumulate import apply_gradients, split_micro
from grpojax.train.steps.forward import completion_logprobs, shared_prefix_logprobs
from grpojax.train.steps.packed import packed_sequence_logprobs
from grpojax.train.steps.state import TrainState, merge_model

PREFERENCE_LOSSES = ("dpo", "ipo", "hinge", "gr_dpo", "gr_ipo", "is_dpo", "is_ipo")
# the dpo_loss loss_type of each preference loss (the GR- and IS- variants reweight the same per-pair loss)
BASE_LOSS = {"dpo": "sigmoid", "ipo": "ipo", "hinge": "hinge", "gr_dpo": "sigmoid", "gr_ipo": "ipo",
             "is_dpo": "sigmoid", "is_ipo": "ipo"}


@dataclasses.dataclass(frozen=True)
class PreferenceSettings:
    """Static options of the preference step, named as the ``preference`` config keys (built from the
    section by :func:`grpojax.train.steps.settings.from_section`).

    group_sizes: N_g of the TRAINING set per group (robust and IS losses); a tuple so it is hashable.
    chi: robust trade-off, weights ``(1 - chi)/K + chi alpha`` (1 = fully robust).
    eta_alpha: the robust step size; eta_alpha_decay_on_lr_cut: multiply it by this at every LR cut of a
    reduce-on-plateau optimizer (paper: 0.5).
    plateau_factor: the LR-on-plateau factor (cuts = log(state.lr_scale) / log(plateau_factor)).
    """

    loss: str = "dpo"
    beta: float = 0.1
    label_smoothing: float = 0.0
    average_logprobs: bool = False
    num_groups: int = 1
    group_sizes: tuple | None = None
    eta_alpha: float = 0.0
    chi: float = 1.0
    eta_alpha_decay_on_lr_cut: float = 1.0
    plateau_factor: float = 0.1
    logprob_chunk: int | None = 128
    shared_prefix: bool = False

    def __post_init__(self):
        if self.loss not in PREFERENCE_LOSSES:
            raise ValueError(f"preference loss {self.loss!r}; valid: {', '.join(PREFERENCE_LOSSES)}")
        if self.weighted and (self.group_sizes is None or len(self.group_sizes) != self.num_groups):
            raise ValueError(f"loss {self.loss!r} needs group_sizes with num_groups={self.num_groups} "
                             f"entries, got {self.group_sizes}")

    @property
    def weighted(self) -> bool:
        return self.loss.startswith(("gr_", "is_"))

    def robust(self):
        chi = 0.0 if self.loss.startswith("is_") else self.chi
        eta = 0.0 if self.loss.startswith("is_") else self.eta_alpha
        return robust_weights(self.num_groups, group_sizes_M=list(self.group_sizes), eta=eta, chi=chi,
                              mu="uniform", mode="minibatch")


def init_robust_state(settings: PreferenceSettings):
    """The ``TrainState.robust`` entry: alpha uniform for weighted losses, else None."""
    return settings.robust().init() if settings.weighted else None


def pair_logprobs(model, mb, settings: PreferenceSettings):
    """Sequence log-probs ``(chosen_B, rejected_B)`` of one micro-batch in a single [2B] forward; of a
    packed batch (``data.packing``) from one forward of its rows, each pair's two sequences read at their
    flat slots ``chosen_index_P`` / ``rejected_index_P`` (:func:`grpojax.data.packing.pack_preference`);
    with ``settings.shared_prefix`` each prompt is computed once for its two responses (the pair shares it
    by construction; :func:`grpojax.train.steps.forward.shared_prefix_logprobs`)."""
    if "segment_ids_BT" in mb:
        seq = packed_sequence_logprobs(model, mb, mb["slot_mask_BX"].shape[1], average=settings.average_logprobs,
                                       chunk_size=settings.logprob_chunk)
        return seq[mb["chosen_index_P"]], seq[mb["rejected_index_P"]]
    P = mb["prompt_BQ"]
    if settings.shared_prefix:
        pair = lambda a, b: jnp.stack([a, b], axis=1)  # noqa: E731  [B, 2, C]: row 2b chosen, 2b + 1 rejected
        mask_B2C = pair(mb["chosen_mask_BC"], mb["rejected_mask_BC"])
        out = shared_prefix_logprobs(model, P, mb["prompt_mask_BQ"], pair(mb["chosen_BC"], mb["rejected_BC"]),
                                     mask_B2C, chunk_size=settings.logprob_chunk, with_entropy=False)
        B, _, C = mask_B2C.shape
        seq = sequence_logprob(out.logp_BC, mask_B2C.reshape(2 * B, C).astype(jnp.float32),
                               average=settings.average_logprobs).reshape(B, 2)
        return seq[:, 0], seq[:, 1]
    two = lambda a, b: jnp.concatenate([a, b], axis=0)  # noqa: E731
    out = completion_logprobs(model, two(P, P), two(mb["prompt_mask_BQ"], mb["prompt_mask_BQ"]),
                              two(mb["chosen_BC"], mb["rejected_BC"]),
                              two(mb["chosen_mask_BC"], mb["rejected_mask_BC"]),
                              chunk_size=settings.logprob_chunk, with_entropy=False)
    mask = two(mb["chosen_mask_BC"], mb["rejected_mask_BC"]).astype(jnp.float32)
    seq = sequence_logprob(out.logp_BC, mask, average=settings.average_logprobs)
    B = P.shape[0]
    return seq[:B], seq[B:]


def jitted_pair_logprobs(graphdef, settings: PreferenceSettings, mesh=None):
    """``fn(params, frozen, batch) -> (chosen_B, rejected_B)`` jitted for the model structure ``graphdef``
    (used for the frozen reference and for evaluation of the policy); traced under ``mesh`` when given, so
    the model's activation pins apply (:func:`grpojax.sharding.traced_on_mesh`)."""

    def fn(params, frozen, batch):
        return pair_logprobs(merge_model(graphdef, params, frozen), batch, settings)

    return jax.jit(traced_on_mesh(fn, mesh))


def _pair_losses(model, mb, settings):
    pw, pl = pair_logprobs(model, mb, settings)
    losses = dpo_loss(pw, pl, mb["ref_chosen_logp_B"], mb["ref_rejected_logp_B"], beta=settings.beta,
                      loss_type=BASE_LOSS[settings.loss], label_smoothing=settings.label_smoothing)
    return losses, (pw, pl)


def preference_step(state: TrainState, batch: dict, rng: jax.Array, *, graphdef, tx,
                    settings: PreferenceSettings, num_micro: int = 1):
    del rng
    B = batch["ref_chosen_logp_B"].shape[0]  # pairs (a packed batch's rows are not pairs)
    if num_micro > 1 and "segment_ids_BT" in batch:
        raise ValueError("preference_step: packed pairs span rows; gradient accumulation needs unpacked pairs")
    cuts = jnp.round(jnp.log(state.lr_scale) / jnp.log(settings.plateau_factor))
    eta_scale = settings.eta_alpha_decay_on_lr_cut ** cuts
    rw = settings.robust() if settings.weighted else None
    sizes = jnp.asarray(settings.group_sizes if settings.weighted else (1,), jnp.float32)

    def model_of(params):
        return merge_model(graphdef, params, state.frozen)

    robust_state, robust_aux = state.robust, None
    if rw is not None and num_micro > 1:
        # pass A: every pair's loss (forward only), then the alpha update on the whole step
        micro = split_micro(batch, num_micro)
        losses = jax.lax.map(lambda mb: _pair_losses(model_of(state.params), mb, settings)[0], micro)
        _, robust_state, robust_aux = rw.update(losses.reshape(B), batch["group_id_B"], state.robust,
                                                eta_scale=eta_scale)

    def coefficients(group_id_B, weights_M):
        # Σ_g w_g (N/N_g) Σ_{i∈g} ℓ_i / |batch|  ==  Σ_i c_i ℓ_i
        return (weights_M * jnp.sum(sizes) / sizes)[group_id_B] / B

    def loss_fn(params, mb):
        losses, (pw, pl) = _pair_losses(model_of(params), mb, settings)
        extra = {}
        if rw is None:
            loss = jnp.sum(losses) / B
        elif num_micro == 1:
            loss, new_robust, aux = rw.update(losses, mb["group_id_B"], state.robust,
                                              eta_scale=eta_scale)
            extra = {"robust_state": new_robust, "robust_aux": aux}
        else:
            loss = jnp.sum(coefficients(mb["group_id_B"], robust_aux.weights_M) * losses)
        pm = preference_metrics(pw, pl, mb["ref_chosen_logp_B"], mb["ref_rejected_logp_B"],
                                beta=settings.beta)
        per_pair = {"losses": jax.lax.stop_gradient(losses), "reward_accuracy": pm.reward_accuracy,
                    "logprob_accuracy": pm.logprob_accuracy, "chosen_rewards": pm.chosen_rewards,
                    "rejected_rewards": pm.rejected_rewards, "margins": pm.margins}
        return loss, (per_pair, extra)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if num_micro == 1:
        (loss, (per_pair, extra)), grads = grad_fn(state.params, batch)
        if rw is not None:
            robust_state, robust_aux = extra["robust_state"], extra["robust_aux"]
    else:
        loss, grads, (per_pair, _) = _accumulate_keep_pairs(loss_fn, state.params, batch, num_micro)

    state, opt_metrics = apply_gradients(state, tx, grads, loss, robust=robust_state)
    metrics = {"loss": loss, **opt_metrics,
               **{f"rewards/{k}": jnp.mean(per_pair[k]) for k in ("chosen_rewards", "rejected_rewards",
                                                                  "margins", "reward_accuracy")},
               "logps/accuracy": jnp.mean(per_pair["logprob_accuracy"])}
    if "group_id_B" in batch:
        gm = group_metrics(per_pair["losses"], per_pair["reward_accuracy"],
                           per_pair["logprob_accuracy"], batch["group_id_B"],
                           num_groups=settings.num_groups)
        metrics.update({"worst_group/loss": gm.worst_loss,
                        "worst_group/reward_accuracy": gm.worst_reward_accuracy,
                        "group_loss": gm.loss_M, "group_reward_accuracy": gm.reward_accuracy_M})
    if robust_aux is not None:
        metrics.update({"robust/alpha": robust_aux.alpha_M, "robust/eta_scale": eta_scale})
    return state, metrics


def _accumulate_keep_pairs(loss_fn, params, batch, num_micro):
    """Like :func:`accumulate` but returns the per-pair aux of every micro-batch concatenated."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    micro = split_micro(batch, num_micro)

    def body(carry, mb):
        loss_acc, grad_acc = carry
        (loss, (per_pair, _)), grads = grad_fn(params, mb)
        return (loss_acc + loss, jax.tree.map(jnp.add, grad_acc, grads)), per_pair

    zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    (loss, grads), per_pair = jax.lax.scan(body, zeros, micro)
    per_pair = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), per_pair)
    return loss, grads, (per_pair, None)
