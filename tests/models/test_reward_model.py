"""Reward model: pure head against a NumPy reference, HF Qwen2ForSequenceClassification parity with pad
handling, backbone initialised from a causal-LM checkpoint, label affine map."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from hf_tiny import VOCAB
from hypothesis import given, settings
from hypothesis import strategies as st

from grpojax.models import from_hf, last_token_index, reward_head, reward_model_from_hf


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=5, max_size=5), min_size=1, max_size=4),
       st.integers(0, 2**31 - 1))
def test_reward_head_matches_numpy(mask_rows, seed):
    mask = np.array(mask_rows, bool)
    mask[:, 0] |= ~mask.any(1)  # every row has one real token
    B, T, D, R = mask.shape[0], mask.shape[1], 3, 2
    rs = np.random.RandomState(seed % 2**31)
    hidden, w, b = rs.standard_normal((B, T, D)), rs.standard_normal((D, R)), rs.standard_normal(R)
    last = np.array([np.nonzero(row)[0].max() for row in mask])
    ref = np.stack([hidden[i, last[i]] for i in range(B)]) @ w + b
    got = reward_head({"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)},
                      jnp.asarray(hidden, jnp.float32), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(last_token_index(jnp.asarray(mask))), last)


def test_reward_head_left_right_padding_and_jit_vmap():
    hidden = jnp.arange(2 * 4 * 2, dtype=jnp.float32).reshape(2, 4, 2)
    w = jnp.eye(2)
    right = jnp.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    left = jnp.array([[0, 0, 1, 1], [0, 1, 1, 1]], bool)
    np.testing.assert_array_equal(np.asarray(reward_head({"w": w}, hidden, right)), [[2, 3], [14, 15]])
    np.testing.assert_array_equal(np.asarray(jax.jit(reward_head)({"w": w}, hidden, left)), [[6, 7], [14, 15]])
    vm = jax.vmap(lambda h, m: reward_head({"w": w}, h[None], m[None])[0])(hidden, left)
    np.testing.assert_array_equal(np.asarray(vm), [[6, 7], [14, 15]])


def _padded_batch(side, pad_id=0):
    rs = np.random.RandomState(4)
    T, lengths = 8, np.array([8, 3, 5])
    mask = np.arange(T)[None, :] < lengths[:, None]
    if side == "left":
        mask = mask[:, ::-1].copy()
    toks = np.where(mask, rs.randint(1, VOCAB, (3, T)), pad_id)
    return toks, mask


@pytest.mark.parametrize("side", ["right", "left"])
def test_sequence_classification_parity(hf_seqcls_checkpoint, side):
    ckpt, hf = hf_seqcls_checkpoint
    model = reward_model_from_hf(ckpt)
    assert model.num_labels == 3
    toks, mask = _padded_batch(side)
    with torch.no_grad():
        # HF pools the rightmost non-pad token (input_ids != pad_token_id); RoPE is relative, so its
        # default arange positions give the same scores as our cumsum positions for left padding.
        ref = hf(torch.tensor(toks), attention_mask=torch.tensor(mask.astype(np.int64))).logits.numpy()
    ours = np.asarray(nnx.jit(lambda m, t, k: m(t, k))(model, jnp.asarray(toks), jnp.asarray(mask)))
    err = np.abs(ours - ref).max()
    print(f"\n[reward parity {side}-padded] max |scores - HF| = {err:.3e}")
    assert ours.shape == (3, 3)
    assert err <= 1e-4


def test_reward_model_from_causal_lm_checkpoint(hf_checkpoint):
    ckpt, _ = hf_checkpoint("qwen2-gqa2-untied")
    with pytest.raises(ValueError, match="pass num_labels"):
        reward_model_from_hf(ckpt)
    rm = reward_model_from_hf(ckpt, num_labels=4, rngs=nnx.Rngs(5),
                              label_scale=[2.0, 1.0, 1.0, 10.0], label_shift=[0.0, -1.0, 0.0, 5.0])
    assert rm.head_w[...].shape == (32, 4) and rm.backbone.lm_head is None
    assert float(jnp.std(rm.head_w[...])) > 0
    toks, mask = _padded_batch("right")
    lm = from_hf(ckpt)

    @nnx.jit
    def run(rm, lm, t, k):
        pos = jnp.maximum(jnp.cumsum(k, axis=1) - 1, 0)
        hidden = lm(t, pos, attn_mask_BT=k, return_hidden=True)
        return rm(t, k), reward_head(rm.head_params(), hidden, k)

    scores, from_lm = run(rm, lm, jnp.asarray(toks), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(scores), np.asarray(from_lm), atol=1e-5)
    labels = rm.to_label_space(scores)
    np.testing.assert_allclose(np.asarray(labels), np.asarray(scores) * [2, 1, 1, 10] + [0, -1, 0, 5],
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(rm.from_label_space(labels)), np.asarray(scores), atol=1e-5)
    # the label map is not a trainable parameter
    assert "label_scale" not in nnx.to_pure_dict(nnx.state(rm, nnx.Param))


def test_reward_model_errors(hf_seqcls_checkpoint):
    ckpt, _ = hf_seqcls_checkpoint
    with pytest.raises(ValueError, match="checkpoint has num_labels=3, asked for 2"):
        reward_model_from_hf(ckpt, num_labels=2)
    with pytest.raises(ValueError, match="label_scale has shape"):
        reward_model_from_hf(ckpt, label_scale=[1.0, 2.0])
    with pytest.raises(ValueError, match="non-zero"):
        reward_model_from_hf(ckpt, label_scale=[1.0, 0.0, 1.0])


def test_reward_model_export_round_trip(hf_checkpoint, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from grpojax.models import reward_model_to_hf
    ckpt, _ = hf_checkpoint("qwen3-gqa2-tied")
    rm = reward_model_from_hf(ckpt, num_labels=2, rngs=nnx.Rngs(1), label_scale=[4.0, 0.5],
                              label_shift=[1.0, 0.0])
    rm.head_w[...] = rm.head_w[...] * 50.0  # scores of order 1
    toks, mask = _padded_batch("left")
    ours = np.asarray(nnx.jit(lambda m, t, k: m(t, k))(rm, jnp.asarray(toks), jnp.asarray(mask)))
    out = reward_model_to_hf(rm, str(tmp_path / "rm"), pad_token_id=0)
    hf = AutoModelForSequenceClassification.from_pretrained(out)
    with torch.no_grad():
        ref = hf(torch.tensor(toks), attention_mask=torch.tensor(mask.astype(np.int64))).logits.numpy()
    err = np.abs(ours - ref).max()
    print(f"\n[reward export] max |HF(exported) - ours| = {err:.3e}")
    assert err <= 1e-4
    back = reward_model_from_hf(out)
    np.testing.assert_array_equal(np.asarray(back.label_scale[...]), [4.0, 0.5])
    np.testing.assert_array_equal(np.asarray(back.label_shift[...]), [1.0, 0.0])
    with pytest.raises(FileExistsError):
        reward_model_to_hf(rm, out)


EOS = 7  # pad == EOS, as in Qwen base tokenizers (<|endoftext|>)


def _pad_is_eos_rows():
    """The scorer's layout: left-padded prompts then right-padded completions, padding = EOS = pad id, and
    completions that end with EOS (one also has EOS inside its prompt, one is truncated, one is empty)."""
    P, L = 6, 7
    prompts = [[3, 9, 4], [5, 6, EOS, 8, 2, 9], [4, 4], [10, 11, 12]]
    completions = [[20, 21, EOS], [30, 31, 32, 33, 34, 35, EOS], [40, 41, 42, 43, 44, 45, 46], [EOS]]
    ids = np.full((4, P + L), EOS, np.int64)
    mask = np.zeros((4, P + L), bool)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        ids[b, P - len(p):P], mask[b, P - len(p):P] = p, True
        ids[b, P:P + len(c)], mask[b, P:P + len(c)] = c, True
    return ids, mask


@pytest.mark.parametrize("arch", ["qwen2-gqa2-untied", "qwen3-gqa2-tied"])
def test_pooling_matches_transformers_when_pad_is_eos(arch, tmp_path):
    """transformers pools the rightmost token whose id != pad_token_id (transformers 5
    GenericForSequenceClassification); with pad == EOS a completion ending in EOS is pooled at the token
    before it, and so is ours, for rows padded on both sides as the scorer builds them."""
    from hf_tiny import Qwen2ForSequenceClassification, hf_config, randomize_
    from transformers import Qwen3ForSequenceClassification

    cls = Qwen3ForSequenceClassification if arch.startswith("qwen3") else Qwen2ForSequenceClassification
    torch.manual_seed(2)
    hf = randomize_(cls(hf_config(arch, num_labels=2, pad_token_id=EOS, eos_token_id=EOS)), 2)
    hf.save_pretrained(tmp_path)
    model = reward_model_from_hf(str(tmp_path))
    assert model.pad_token_id == EOS
    ids, mask = _pad_is_eos_rows()
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64))).logits.numpy()
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    call = nnx.jit(lambda m, t, k, p: m(t, k, p))
    ours = np.asarray(call(model, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(positions)))
    err = np.abs(ours - ref).max()
    print(f"\n[reward pooling pad == eos, {arch}] max |scores - HF| = {err:.3e}")
    assert err <= 1e-4
    # the rollout scorer on the same rows (prompt_BQ | completion_BC, as the sampler returns them)
    import types

    from grpojax.rollout.reward_scorer import load_reward_scorer
    section = types.SimpleNamespace(grpo=types.SimpleNamespace(aspects=("a", "b")),
                                    model=types.SimpleNamespace(scan_layers=False))
    scorer = load_reward_scorer(str(tmp_path), section, tok=None)
    batch = {"prompt_BQ": ids[:, :6], "prompt_mask_BQ": mask[:, :6], "completion_BC": ids[:, 6:],
             "completion_mask_BC": mask[:, 6:]}
    np.testing.assert_allclose(np.asarray(scorer(batch)), ref, atol=1e-4)
    model.pad_token_id = None  # pooling the last masked token (the EOS) is not what transformers does
    plain = np.asarray(call(model, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(positions)))
    assert np.abs(plain - ref).max() > 1e-3
