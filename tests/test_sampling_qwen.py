"""The sampler on real (tiny, random-weight) Qwen checkpoints.

* cached prefill + one-token decode gives the same logits as the full forward pass at every real position
  of a left-padded mixed-length batch;
* greedy output equals ``transformers`` ``generate(do_sample=False)`` (Qwen2 and Qwen3, padded batches,
  with an EOS that stops some rows);
* the sampler's per-token log-probs equal a training forward pass's log-probs of the same tokens at the
  same temperature (the rollout / training mismatch, ~0 in float32).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from grpojax import sampling
from grpojax.models import from_hf, init_cache

VOCAB = 96
PROMPTS = [[5, 17, 3, 88, 41, 9, 60], [12, 7], [33, 2, 71, 71], [90]]


def tiny_hf(arch, seed=0):
    kw = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6,
              max_position_embeddings=128, tie_word_embeddings=arch == "qwen3")
    cfg = Qwen3Config(head_dim=16, **kw) if arch == "qwen3" else Qwen2Config(**kw)
    torch.manual_seed(seed)
    model = (Qwen3ForCausalLM if arch == "qwen3" else Qwen2ForCausalLM)(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a wider spread than HF's init, so that mistakes change the argmax
        for name, p in model.named_parameters():
            p.copy_((1.0 + 0.2 * torch.randn(p.shape, generator=g)) if name.endswith("norm.weight")
                    else 0.15 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """``get(arch) -> (torch model, our model loaded with from_hf from its save_pretrained dir)``, cached."""
    made = {}

    def get(arch):
        if arch not in made:
            hf = tiny_hf(arch)
            d = tmp_path_factory.mktemp(f"tiny-{arch}")
            hf.save_pretrained(d)
            made[arch] = hf, from_hf(str(d))
        return made[arch]

    return get


@pytest.fixture(scope="module", params=["qwen2", "qwen3"])
def pair(request, checkpoints):
    return checkpoints(request.param)


@pytest.fixture(scope="module")
def qwen2_pair(checkpoints):
    # The sampler is architecture-agnostic; the Qwen3 path (q/k norm, explicit head_dim, tied head) is
    # covered end to end by the transformers parity test below, the Qwen2 one by all tests.
    return checkpoints("qwen2")


def padded(prompts, side, pad=0):
    width = max(map(len, prompts))
    toks = np.full((len(prompts), width), pad, np.int32)
    mask = np.zeros((len(prompts), width), np.int32)
    for i, p in enumerate(prompts):
        sl = slice(0, len(p)) if side == "right" else slice(width - len(p), width)
        toks[i, sl], mask[i, sl] = p, 1
    return toks, mask


def full_forward_logits(model, prompt_BT, prompt_mask_BT, completion_BC, completion_mask_BC):
    """Training-style forward over [prompt | completion] (no cache): float32 logits [B, T+L, V]."""
    tokens = jnp.concatenate([prompt_BT, completion_BC], axis=1)
    mask = jnp.concatenate([prompt_mask_BT, completion_mask_BC], axis=1)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    return model(tokens, positions, attn_mask_BT=mask.astype(bool))


def test_cached_decode_equals_full_forward(qwen2_pair):
    _, model = qwen2_pair
    toks, mask = padded(PROMPTS, "right")
    prompt_BT, pmask_BT, pos_BT = sampling.left_pad(jnp.asarray(toks), jnp.asarray(mask), pad_id=0)
    steps = 6
    completion_BC = jax.random.randint(jax.random.key(0), (len(PROMPTS), steps), 0, VOCAB)
    full_BTV = jax.jit(full_forward_logits, static_argnums=0)(model, prompt_BT, pmask_BT, completion_BC,
                                                              jnp.ones_like(completion_BC))

    T = prompt_BT.shape[1]
    slots_BS = jnp.concatenate([pmask_BT.astype(bool), jnp.ones((len(PROMPTS), steps), bool)], axis=1)
    cache = init_cache(model.config, len(PROMPTS), T + steps)
    step = jax.jit(lambda tok, pos, cache, at: model(tok, pos, attn_mask_BT=slots_BS, cache=cache, cache_pos=at))
    prefill_BTV, cache = step(prompt_BT, pos_BT, cache, 0)
    cached = [prefill_BTV]
    lens_B = pmask_BT.sum(1)
    for i in range(steps):
        logits_B1V, cache = step(completion_BC[:, i : i + 1], (lens_B + i)[:, None], cache, T + i)
        cached.append(logits_B1V)
    cached_BTV = jnp.concatenate(cached, axis=1)
    real = np.concatenate([np.asarray(pmask_BT, bool), np.ones((len(PROMPTS), steps), bool)], axis=1)
    diff = np.abs(np.asarray(cached_BTV) - np.asarray(full_BTV))[real]
    print(f"max |cached - full| logits = {diff.max():.3g}")
    assert diff.max() < 1e-4
    assert np.all(np.isfinite(np.asarray(cached_BTV)))


def hf_greedy(hf, prompts, steps, eos, pad):
    toks, mask = padded(prompts, "left", pad)
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor(toks, dtype=torch.long),
                          attention_mask=torch.tensor(mask, dtype=torch.long), do_sample=False,
                          max_new_tokens=steps, min_new_tokens=0, eos_token_id=eos, pad_token_id=pad,
                          top_k=None, top_p=None, temperature=None)
    gen = out[:, toks.shape[1]:].numpy()
    return np.pad(gen, ((0, 0), (0, steps - gen.shape[1])), constant_values=pad)


@pytest.mark.parametrize("side", ["left", "right"])
def test_greedy_equals_transformers_generate(pair, side):
    hf, model = pair
    steps, pad = 10, 0
    free = hf_greedy(hf, PROMPTS, steps, eos=None, pad=pad)
    eos = int(free[1, 3])  # makes row 1 stop at index <= 3; other rows may stop or run to the end
    ref = hf_greedy(hf, PROMPTS, steps, eos=eos, pad=pad)
    toks, mask = padded(PROMPTS, side, pad)
    out = sampling.sample(model, toks, mask, jax.random.key(0), max_new_tokens=steps, greedy=True,
                          eos_ids=eos, pad_id=pad)
    np.testing.assert_array_equal(out.completion_tokens_BC, ref)
    for i in range(len(PROMPTS)):
        hit = np.flatnonzero(ref[i] == eos)
        n = hit[0] + 1 if hit.size else steps
        np.testing.assert_array_equal(out.completion_mask_BC[i], [1] * n + [0] * (steps - n))
        assert bool(out.truncated_B[i]) == (hit.size == 0)
    assert not out.truncated_B[1] and int(out.num_steps) == (steps if out.truncated_B.any() else
                                                             int(out.completion_mask_BC.sum(1).max()))


@pytest.mark.parametrize("tau", [0.7, 1.3])
def test_sampler_logp_equals_training_logp(qwen2_pair, tau):
    _, model = qwen2_pair
    toks, mask = padded(PROMPTS, "right")
    kwargs = dict(temperature=tau, top_k=40, top_p=0.95)
    out = sampling.sample(model, toks, mask, jax.random.key(7), max_new_tokens=8, num_samples=3,
                          eos_ids=[1, 2, 3, 4, 5], pad_id=0, **kwargs)
    T, L = out.prompt_tokens_BT.shape[1], out.completion_tokens_BC.shape[1]
    logits = jax.jit(full_forward_logits, static_argnums=0)(model, out.prompt_tokens_BT, out.prompt_mask_BT,
                                                            out.completion_tokens_BC, out.completion_mask_BC)
    logp_all = jax.nn.log_softmax(logits[:, T - 1 : T + L - 1] / tau, axis=-1)
    train_logp = jnp.take_along_axis(logp_all, out.completion_tokens_BC[:, :, None], axis=-1)[:, :, 0]
    m = np.asarray(out.completion_mask_BC, bool)
    diff = np.abs(np.asarray(train_logp) - np.asarray(out.completion_logp_BC))[m]
    print(f"max |sampler logp - training logp| = {diff.max():.3g} over {m.sum()} tokens ({kwargs})")
    assert diff.max() < 2e-5
    assert np.all(np.asarray(out.completion_logp_BC)[~m] == 0)
    # G rows per prompt share the prompt, and groups are not copies of each other
    np.testing.assert_array_equal(out.prompt_tokens_BT[0], out.prompt_tokens_BT[2])
    assert len({tuple(r) for r in np.asarray(out.completion_tokens_BC)}) > len(PROMPTS)
