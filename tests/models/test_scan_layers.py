"""``QwenConfig.scan_layers``: stacked layers run by ``jax.lax.scan`` give the per-layer model's numbers
(forward, gradients under every remat policy, KV-cache decoding, HF import / export against transformers,
LoRA, Orbax), and the compiled program does not grow with depth."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hf_tiny import VOCAB, torch_logits
from safetensors.numpy import load_file

from grpojax.models import PRESETS, Qwen, apply_lora, from_hf, init_cache, merge_lora, to_hf
from grpojax.models.qwen import Dense
from grpojax.sampling import sample

TINY = PRESETS["qwen3-0.6b"].replace(vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=3,
                                     num_heads=4, num_kv_heads=2, head_dim=8)
TOKS = np.random.RandomState(0).randint(0, 97, (2, 7))
MASK = np.array([[0, 0, 1, 1, 1, 1, 1], [1] * 7], bool)


def pair(cfg=TINY, **kw):
    """(per-layer model, scanned model) built from the same keys."""
    return (Qwen(cfg, rngs=nnx.Rngs(0), **kw), Qwen(cfg.replace(scan_layers=True), rngs=nnx.Rngs(0), **kw))


def test_stacked_params_are_the_per_layer_params_and_named_layers():
    a, b = pair()
    for i in range(TINY.num_layers):
        np.testing.assert_array_equal(a.layers[i].attn.q.w[...], b.layers.attn.q.w[...][i])
        np.testing.assert_array_equal(a.layers[i].mlp_norm.scale[...], b.layers.mlp_norm.scale[...][i])
    assert b.layers.attn.q.w.get_metadata()["out_sharding"] == ("layers", "embed", "q_heads", "head_dim")
    assert b.layers.mlp.down.w[...].shape == (3, 48, 32)


@pytest.mark.parametrize("arch", ["qwen3", "qwen2"])
def test_forward_equals_per_layer(arch):
    cfg = TINY if arch == "qwen3" else PRESETS["qwen2.5-0.5b"].replace(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2,
        head_dim=8, tie_word_embeddings=False)
    a, b = pair(cfg)
    pos = np.maximum(np.cumsum(MASK, 1) - 1, 0)
    want = a(TOKS, pos, attn_mask_BT=MASK)
    got = b(TOKS, pos, attn_mask_BT=MASK)
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
    assert float(jnp.abs(want).max()) > 0.05  # not a trivially small comparison


@pytest.mark.parametrize("remat", ["none", "block", "full"])
def test_gradients_equal_per_layer(remat):
    a, b = pair(remat=remat)
    loss = lambda m: jnp.sum(jnp.sin(m(TOKS)))  # noqa: E731
    ga, gb = nnx.grad(loss)(a), nnx.grad(loss)(b)
    for i in range(TINY.num_layers):
        for name in ("q", "k", "v", "o"):
            np.testing.assert_allclose(gb["layers"]["attn"][name]["w"][...][i],
                                       ga["layers"][i]["attn"][name]["w"][...], atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(gb["layers"]["mlp"]["gate"]["w"][...][i],
                                   ga["layers"][i]["mlp"]["gate"]["w"][...], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(gb["embed"][...], ga["embed"][...], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("greedy", [True, False])
def test_decoding_gives_the_same_tokens(greedy):
    """Prefill + while-loop decode with the stacked cache (written in place per layer), 2 samples per
    prompt (the cache is repeated along its batch axis, axis 1 of [L, B, S, K, H])."""
    a, b = pair()
    kw = dict(max_new_tokens=6, temperature=1.0, greedy=greedy, num_samples=1 if greedy else 2)
    sa = sample(a, TOKS, MASK, jax.random.key(3), **kw)
    sb = sample(b, TOKS, MASK, jax.random.key(3), **kw)
    np.testing.assert_array_equal(sb.completion_tokens_BC, sa.completion_tokens_BC)
    np.testing.assert_allclose(sb.completion_logp_BC, sa.completion_logp_BC, atol=1e-5)
    assert len(set(map(tuple, np.asarray(sa.completion_tokens_BC)))) > 1


def test_stacked_cache_layout_and_wrong_layout_is_an_error():
    a, b = pair()
    cache = init_cache(b.config, 2, 9)
    assert set(cache) == {"k", "v"} and cache["k"].shape == (3, 2, 9, 2, 8)
    logits, new = b(TOKS, cache=cache, cache_pos=0)
    np.testing.assert_allclose(logits, a(TOKS), atol=2e-6, rtol=1e-5)
    assert new["k"].shape == cache["k"].shape and float(jnp.abs(new["k"][2, :, :7]).max()) > 0
    assert float(jnp.abs(new["k"][:, :, 7:]).max()) == 0.0  # slots past the written ones untouched
    with pytest.raises(ValueError, match="scan_layers=True"):
        b(TOKS, cache=init_cache(a.config, 2, 9), cache_pos=0)
    with pytest.raises(ValueError, match="scan_layers=False"):
        a(TOKS, cache=cache, cache_pos=0)


def test_compiled_program_does_not_grow_with_depth():
    """The point of scanning: the lowered train forward+backward of 8 layers is about the size of 2
    layers' (the per-layer program grows ~4x)."""
    def size(num_layers, scan):
        cfg = TINY.replace(num_layers=num_layers, scan_layers=scan)
        graphdef, state = nnx.split(nnx.eval_shape(lambda: Qwen(cfg, rngs=nnx.Rngs(0), remat="full")))
        loss = lambda st: jnp.sum(nnx.merge(graphdef, st)(TOKS))  # noqa: E731
        return len(jax.jit(jax.grad(loss)).lower(state).as_text().splitlines())

    scan2, scan8, loop2, loop8 = size(2, True), size(8, True), size(2, False), size(8, False)
    assert scan8 < 1.1 * scan2, (scan2, scan8)
    assert loop8 > 3 * loop2, (loop2, loop8)


def test_hf_import_export_against_transformers(hf_checkpoint, tmp_path):
    d, torch_model = hf_checkpoint("qwen2-gqa2-untied")
    model = from_hf(d, scan_layers=True)
    assert model.config.scan_layers and model.layers.attn.q.b[...].shape[0] == 2
    toks = np.random.RandomState(1).randint(0, VOCAB, (2, 6))
    np.testing.assert_allclose(model(toks), torch_logits(torch_model, toks), atol=1e-4, rtol=1e-4)
    out_scan, out_loop = to_hf(model, str(tmp_path / "scan")), to_hf(from_hf(d), str(tmp_path / "loop"))
    ts, tl = (load_file(os.path.join(o, "model.safetensors")) for o in (out_scan, out_loop))
    assert sorted(ts) == sorted(tl) and "model.layers.1.mlp.down_proj.weight" in ts
    for name in tl:
        np.testing.assert_array_equal(ts[name], tl[name])


def _randomize_lora_b(model, seed):
    rs = np.random.RandomState(seed)
    for _, m in nnx.iter_graph(model):
        if isinstance(m, Dense) and m.lora is not None:
            m.lora.lora_b[...] = jnp.asarray(0.05 * rs.standard_normal(m.lora.lora_b.shape), jnp.float32)


def test_lora_adapters_and_merge_equal_per_layer():
    a, b = pair()
    for m in (a, b):
        apply_lora(m, ("q", "down"), rank=4, alpha=8.0, rngs=nnx.Rngs(5))
    assert b.layers.attn.q.lora.lora_a[...].shape == (3, 32, 4)
    assert b.layers.attn.q.lora.lora_a.get_metadata()["out_sharding"] == ("layers", None, None)
    for i in range(3):  # same keys, layer-major: the same A
        np.testing.assert_array_equal(b.layers.mlp.down.lora.lora_a[...][i], a.layers[i].mlp.down.lora.lora_a[...])
    _randomize_lora_b(b, 1)
    for i in range(3):
        for t, owner in (("q", "attn"), ("down", "mlp")):
            dense_a = getattr(getattr(a.layers[i], owner), t)
            dense_a.lora.lora_b[...] = getattr(getattr(b.layers, owner), t).lora.lora_b[...][i]
    np.testing.assert_allclose(b(TOKS), a(TOKS), atol=2e-6, rtol=1e-5)
    merged = b(TOKS)
    merge_lora(a), merge_lora(b)
    np.testing.assert_allclose(b(TOKS), merged, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(b.layers.attn.q.w[...][2], a.layers[2].attn.q.w[...], atol=1e-6)


def test_orbax_roundtrip_keeps_the_layout(tmp_path):
    from grpojax.models.orbax_io import load_orbax, save_orbax

    _, b = pair()
    save_orbax(b, str(tmp_path / "ck"))
    back = load_orbax(str(tmp_path / "ck"))
    assert back.config.scan_layers
    np.testing.assert_array_equal(back(TOKS), b(TOKS))
