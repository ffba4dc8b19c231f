"""Tests for grpojax.losses.reward: masked multi-label regression, Bradley-Terry, label affine map."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.losses import (
    LabelAffine,
    bradley_terry_loss,
    label_affine_from_range,
    make_label_affine,
    reward_regression_loss,
)

NAN = float("nan")
j_regression = jax.jit(reward_regression_loss)
j_regression_grad = jax.jit(jax.grad(lambda s, y, m, w: reward_regression_loss(s, y, m, w)[0]))
j_bt = jax.jit(bradley_terry_loss)
j_bt_grad = jax.jit(jax.grad(lambda c, r, mg, m: bradley_terry_loss(c, r, mg, m)[0], argnums=(0, 1)))


def np_regression(scores, labels, mask, weights):
    s, y = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
    num = den = 0.0
    per_num, per_den = np.zeros(s.shape[1]), np.zeros(s.shape[1])
    for b in range(s.shape[0]):
        for r in range(s.shape[1]):
            if mask[b, r] and not np.isnan(y[b, r]):
                e = (s[b, r] - y[b, r]) ** 2
                num += weights[r] * e
                den += weights[r]
                per_num[r] += e
                per_den[r] += 1
    return num / den, per_num / np.maximum(per_den, 1), per_den


def test_regression_hand_case():
    # labelled entries (b, r): (0,0) s-y = 1, (0,2) 0, (1,0) 0.5, (1,1) -1 ; (0,1) NaN unlabelled
    scores = jnp.array([[1.0, 0.3, 2.0], [0.5, 0.0, 9.0]])
    labels = jnp.array([[0.0, NAN, 2.0], [0.0, 1.0, NAN]])
    mask = jnp.array([[1, 0, 1], [1, 1, 0]])
    loss, aux = j_regression(scores, labels, mask, None)
    np.testing.assert_allclose(loss, (1 + 0 + 0.25 + 1) / 4, rtol=1e-6)  # 0.5625
    np.testing.assert_allclose(aux.mse_R, [(1 + 0.25) / 2, 1.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(aux.count_R, [2, 1, 1])
    # weights (2, 1, 0): (2*1 + 2*0.25 + 1*1 + 0*0) / (2 + 2 + 1 + 0) = 3.5 / 5
    loss_w, _ = j_regression(scores, labels, mask, jnp.array([2.0, 1.0, 0.0]))
    np.testing.assert_allclose(loss_w, 0.7, rtol=1e-6)


def test_regression_matches_reference_and_gradient_with_nan_labels():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 4)).astype(np.float32)
    labels = rng.uniform(size=(7, 4)).astype(np.float32)
    mask = rng.uniform(size=(7, 4)) < 0.7
    labels[~mask] = np.nan
    labels[0, 0], mask[0, 0] = np.nan, True  # NaN label with a set mask: treated as missing
    w = np.array([1.0, 0.5, 2.0, 1.5], np.float32)
    loss, aux = j_regression(scores, labels, mask, w)
    want, want_mse, want_count = np_regression(scores, labels, mask, w)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(aux.mse_R, want_mse, rtol=1e-5)
    np.testing.assert_array_equal(aux.count_R, want_count)
    grad = j_regression_grad(scores, labels, mask, w)
    live = mask & ~np.isnan(labels)
    den = (live * w[None, :]).sum()
    want_grad = np.where(live, 2 * w[None, :] * (scores - np.nan_to_num(labels)) / den, 0.0)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)


def test_regression_all_masked_is_zero_with_zero_gradient():
    scores, labels = jnp.ones((3, 2)), jnp.full((3, 2), NAN)
    loss, aux = j_regression(scores, labels, jnp.zeros((3, 2)), None)
    assert float(loss) == 0.0 and float(aux.num_labels) == 0.0
    np.testing.assert_array_equal(j_regression_grad(scores, labels, jnp.zeros((3, 2)), jnp.ones(2)), 0.0)


def test_regression_bad_input():
    with pytest.raises(AssertionError):
        reward_regression_loss(jnp.zeros((3,)), jnp.zeros((3,)), jnp.zeros((3,)))
    with pytest.raises(AssertionError):
        reward_regression_loss(jnp.zeros((3, 2)), jnp.zeros((3, 3)), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"aspect_weights must have shape \(2,\)"):
        reward_regression_loss(jnp.zeros((3, 2)), jnp.zeros((3, 2)), jnp.ones((3, 2)), [1.0, 2.0, 3.0])


def test_bradley_terry_hand_cases_and_stability():
    # r_w - r_l = 0 -> log 2; = 2 with margin 1 -> -log sigmoid(1) = log(1 + e^-1) = 0.3132617
    loss, aux = j_bt(jnp.array([1.0, 3.0]), jnp.array([1.0, 1.0]), jnp.array([0.0, 1.0]), None)
    np.testing.assert_allclose(loss, (math.log(2) + math.log1p(math.exp(-1))) / 2, rtol=1e-6)
    np.testing.assert_allclose(aux.accuracy, 0.5)  # a tie is not a win
    np.testing.assert_allclose(aux.margin_mean, 1.0)
    # huge differences stay finite: -log sigmoid(-1e4) = 1e4, -log sigmoid(1e4) = 0
    loss, _ = j_bt(jnp.array([-5e3, 5e3]), jnp.array([5e3, -5e3]), None, None)
    np.testing.assert_allclose(loss, 1e4 / 2, rtol=1e-6)


def test_bradley_terry_reference_gradient_and_mask():
    rng = np.random.default_rng(1)
    c, r = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
    margin = rng.uniform(size=6).astype(np.float32)
    mask = np.array([1, 1, 0, 1, 1, 0], np.float32)
    z = c.astype(np.float64) - r - margin
    nll = np.log1p(np.exp(-z))
    loss, aux = j_bt(c, r, margin, mask)
    np.testing.assert_allclose(loss, (nll * mask).sum() / mask.sum(), rtol=1e-5)
    np.testing.assert_allclose(aux.accuracy, ((c > r) * mask).sum() / mask.sum())
    # d/dc -log sigmoid(z) = -sigmoid(-z), averaged over the 4 active pairs
    gc, gr = j_bt_grad(c, r, margin, mask)
    want = -(1 / (1 + np.exp(z))) * mask / mask.sum()
    np.testing.assert_allclose(gc, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gr, -want, rtol=1e-5, atol=1e-7)
    # a masked pair holding NaN does not poison anything
    c_bad = c.copy()
    c_bad[2] = np.nan
    np.testing.assert_allclose(j_bt(c_bad, r, margin, mask)[0], loss, rtol=1e-6)
    assert np.all(np.isfinite(j_bt_grad(c_bad, r, margin, mask)[0]))
    with pytest.raises(ValueError, match="margin"):
        bradley_terry_loss(jnp.zeros(3), jnp.zeros(3), jnp.zeros(4))
    with pytest.raises(AssertionError):
        bradley_terry_loss(jnp.zeros((3, 1)), jnp.zeros((3, 1)))


def test_label_affine_range_roundtrip_and_nan():
    aff = label_affine_from_range([1.0, -2.0], [5.0, 2.0])  # Likert 1..5 and a [-2, 2] score
    np.testing.assert_allclose(aff.scale_R, [0.25, 0.25])
    np.testing.assert_allclose(aff.shift_R, [-0.25, 0.5])
    y = jnp.array([[1.0, -2.0], [5.0, 2.0], [3.0, NAN]])
    t = aff.apply(y)
    np.testing.assert_allclose(t[:2], [[0.0, 0.0], [1.0, 1.0]], atol=1e-7)
    np.testing.assert_allclose(t[2, 0], 0.5)
    assert np.isnan(t[2, 1])
    np.testing.assert_allclose(aff.invert(t)[:2], y[:2], rtol=1e-6)
    again = LabelAffine.from_dict(aff.to_dict())
    np.testing.assert_array_equal(again.scale_R, aff.scale_R)
    np.testing.assert_array_equal(again.shift_R, aff.shift_R)


def test_label_affine_scalar_pair_applies_to_every_aspect():
    aff = make_label_affine(0.1, -0.5)  # config form: label_affine: [scale, shift]
    y = jnp.array([[5.0, 10.0, 15.0]])
    np.testing.assert_allclose(aff.apply(y), [[0.0, 0.5, 1.0]], atol=1e-7)
    np.testing.assert_allclose(aff.invert(aff.apply(y)), y, rtol=1e-6)
    mixed = make_label_affine([1.0, 2.0], 0.5)  # per-aspect scale, shared shift
    np.testing.assert_allclose(mixed.shift_R, [0.5, 0.5])


def test_label_affine_bad_input():
    with pytest.raises(ValueError, match=r"high > low.*\[1\]"):
        label_affine_from_range([0.0, 3.0], [1.0, 3.0])
    with pytest.raises(ValueError, match=r"non-zero.*\[0\]"):
        make_label_affine([0.0, 1.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        make_label_affine([1.0, 1.0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
        label_affine_from_range([0.0, 0.0], [1.0, 1.0]).apply(jnp.zeros((4, 3)))
    with pytest.raises(KeyError, match="shift"):
        LabelAffine.from_dict({"scale": [1.0]})


def test_regression_num_items_makes_uneven_micro_batches_exact():
    """Micro-batches normalised by the whole batch's weighted label count (``num_items``) add up to the
    full-batch loss and gradient (float64 reference), however unevenly the labels are missing; each
    micro-batch's own mean averaged over micro-batches does not."""
    from grpojax.losses import regression_weight

    rng = np.random.default_rng(3)
    B, R = 8, 3
    scores = rng.normal(size=(B, R)).astype(np.float32)
    labels = rng.uniform(size=(B, R)).astype(np.float32)
    mask = np.zeros((B, R), bool)
    mask[:2] = True                        # rows 0-1 fully labelled
    mask[2:, 0] = rng.uniform(size=B - 2) < 0.3  # the rest sparsely
    mask[5, 2] = True
    labels[~mask] = np.nan
    w = np.array([1.0, 0.5, 2.0], np.float32)
    want, _, _ = np_regression(scores, labels, mask, w)
    n = regression_weight(jnp.asarray(labels), jnp.asarray(mask), w)
    np.testing.assert_allclose(float(n), (mask * w).sum(), rtol=1e-6)
    grad_full = j_regression_grad(scores, labels, mask, w)
    split_grad = jax.jit(jax.grad(lambda s, y, m, w, n: reward_regression_loss(s, y, m, w, num_items=n)[0]))
    for k in (2, 4):
        parts = [slice(i * B // k, (i + 1) * B // k) for i in range(k)]
        total = sum(float(reward_regression_loss(scores[p], labels[p], mask[p], w, num_items=n)[0]) for p in parts)
        np.testing.assert_allclose(total, want, rtol=1e-5)
        grad = np.concatenate([split_grad(scores[p], labels[p], mask[p], w, n) for p in parts])
        np.testing.assert_allclose(grad, grad_full, rtol=1e-5, atol=1e-7)
        naive = np.mean([float(j_regression(scores[p], labels[p], mask[p], w)[0]) for p in parts])
        assert abs(naive - want) > 1e-3
