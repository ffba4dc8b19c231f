"""Memory levers: block rematerialisation (same logits and gradients, less live memory), bf16 params
with float32 optimizer state, chunked log-probs that never hold [B, T, V] float32 logits, and the LM-head
chunk pinned to the batch sharding (per-device memory per sequence independent of the device count)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from grpojax import sharding as shd
from grpojax.models import Qwen, QwenConfig
from grpojax.sampling import ShardedCache
from grpojax.sharding import f32_optimizer_state
from grpojax.train.steps.forward import completion_logprobs, reference_logp_fn
from grpojax.train.steps.state import split_model

CFG = QwenConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=4,
                 num_kv_heads=2, head_dim=4)


def _loss_and_grad(remat, tokens):
    model = Qwen(CFG, rngs=nnx.Rngs(0), remat=remat)
    graphdef, params = nnx.split(model)

    @jax.jit
    def f(params):
        def loss(p):
            logits = nnx.merge(graphdef, p)(tokens)
            return jnp.mean(jax.nn.log_softmax(logits)[..., 0]), logits
        (val, logits), g = jax.value_and_grad(loss, has_aux=True)(params)
        return val, logits, g

    return f(params)


def test_remat_same_logits_and_gradients():
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 7)), jnp.int32)
    base = jax.device_get(_loss_and_grad("none", tokens))
    for remat in ("block", "full"):
        got = jax.device_get(_loss_and_grad(remat, tokens))
        np.testing.assert_allclose(got[0], base[0], rtol=1e-6)
        np.testing.assert_allclose(got[1], base[1], rtol=1e-5, atol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got[2], base[2])
    with pytest.raises(ValueError, match="remat='half'"):
        Qwen(CFG, remat="half")


def _lora_grad(remat, tokens):
    """Gradient w.r.t. the LoRA adapters only (base frozen), the way LoRA training differentiates."""
    from grpojax.models import apply_lora

    model = apply_lora(Qwen(CFG, rngs=nnx.Rngs(0), remat=remat), targets=("q", "v", "up"), rank=2, alpha=4.0,
                       rngs=nnx.Rngs(1))
    graphdef, lora, rest = nnx.split(model, nnx.LoRAParam, ...)
    lora = jax.tree.map(lambda x: x + 0.1, lora)  # non-zero B so every adapter gets a gradient

    @jax.jit
    def f(lora, rest):
        def loss(lora_params):
            return jnp.mean(jax.nn.log_softmax(nnx.merge(graphdef, lora_params, rest)(tokens))[..., 0])
        return jax.value_and_grad(loss)(lora)

    return f(lora, rest)


def test_remat_with_lora_adapters_same_gradients():
    """Regression: nnx.remat of a LoRA block merged inside jax.grad raised TraceContextError."""
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 64, (2, 7)), jnp.int32)
    base = jax.device_get(_lora_grad("none", tokens))
    assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(base[1]))
    for remat in ("block", "full"):
        got = jax.device_get(_lora_grad(remat, tokens))
        np.testing.assert_allclose(got[0], base[0], rtol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got[1], base[1])


def _temp_bytes(remat, B=4, T=64):
    cfg = CFG.replace(num_layers=4, intermediate_size=256, hidden_size=64, num_heads=4, head_dim=16)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Qwen(cfg, remat=remat)))
    tokens = jax.ShapeDtypeStruct((B, T), jnp.int32)

    def loss(p, t):
        return jnp.mean(nnx.merge(graphdef, p)(t, return_hidden=True) ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(params, tokens).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_remat_lowers_live_activation_memory():
    none, block, full = (_temp_bytes(r) for r in ("none", "block", "full"))
    assert full < block < none, (none, block, full)


def test_f32_optimizer_state_for_bf16_params():
    r = np.random.default_rng(1)
    p32 = {"w": jnp.asarray(r.standard_normal((8, 4)), jnp.float32)}
    g32 = {"w": jnp.asarray(r.standard_normal((8, 4)) * 1e-3, jnp.float32)}
    p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), p32)
    g16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), g32)
    tx = f32_optimizer_state(optax.adam(1e-2))
    state = tx.init(p16)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state) if x.ndim)
    upd, state = jax.jit(tx.update)(g16, state, p16)
    assert upd["w"].dtype == jnp.bfloat16
    # float32 reference on the bf16-rounded gradient: Adam's first step is -lr * sign(g) (eps aside)
    ref_upd, _ = optax.adam(1e-2).update(jax.tree.map(lambda x: x.astype(jnp.float32), g16),
                                         optax.adam(1e-2).init(p32), p32)
    np.testing.assert_allclose(np.asarray(upd["w"], np.float32), np.asarray(ref_upd["w"]), rtol=1e-2)
    mu = state.inner[0].mu["w"]
    np.testing.assert_allclose(np.asarray(mu), 0.1 * np.asarray(g16["w"], np.float32), rtol=1e-6)
    # nnx.State params keep their Variable wrappers (and so their sharding metadata) in the state
    model = Qwen(CFG, param_dtype=jnp.bfloat16)
    params = nnx.state(model, nnx.Param)
    st = f32_optimizer_state(optax.adam(1e-3)).init(params)
    leaves = jax.tree.leaves(st.inner[0].mu, is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert all(isinstance(v, nnx.Variable) and v.get_metadata().get("out_sharding") for v in leaves)
    assert all(v[...].dtype == jnp.float32 for v in leaves)


def test_chunked_logprobs_never_hold_full_f32_logits():
    """XLA's temporary memory of the log-prob gradient: chunks of [B, c, V] logits, never [B, L, V]."""
    cfg = CFG.replace(vocab_size=8192, num_layers=1)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Qwen(cfg)))
    B, P, L = 4, 8, 256
    i32 = jax.ShapeDtypeStruct

    def temp(chunk):
        def loss(p, prompt, pm, comp, cm):
            out = completion_logprobs(nnx.merge(graphdef, p), prompt, pm, comp, cm, chunk_size=chunk,
                                      with_entropy=False)
            return jnp.sum(out.logp_BC)
        args = (params, i32((B, P), jnp.int32), i32((B, P), jnp.int32), i32((B, L), jnp.int32),
                i32((B, L), jnp.int32))
        return jax.jit(jax.grad(loss)).lower(*args).compile().memory_analysis().temp_size_in_bytes

    full_logits = B * L * cfg.vocab_size * 4
    small, chunked, unchunked = temp(8), temp(32), temp(None)
    assert unchunked >= full_logits, (unchunked, full_logits)
    # chunking saves more than one whole [B, L, V] float32 array ...
    assert chunked < unchunked - full_logits, (chunked, unchunked, full_logits)
    # ... and what remains grows with the chunk (a few [B, chunk, V] arrays), not with L
    assert 0 < chunked - small < 4 * B * (32 - 8) * cfg.vocab_size * 4, (small, chunked)


def test_lora_only_optimizer_state_and_layout():
    """Under LoRA the optimizer state covers only the adapters; the frozen base keeps the FSDP layout."""
    from grpojax import sharding as shd
    from grpojax.models.lora import apply_lora
    from grpojax.train.steps.state import count_params, create_train_state

    model = apply_lora(Qwen(CFG), rank=2, alpha=4, rngs=nnx.Rngs(1))
    _, state = create_train_state(model, optax.adam(1e-3), jax.random.key(0), lora=True)
    trainable = jax.tree.leaves(state.params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert trainable and all(isinstance(v, nnx.LoRAParam) for v in trainable)
    n_lora = count_params(state.params)
    # per layer: 7 adapters, each r * (in + out): q,k,v,o,gate,up,down of CFG
    D, F, NH, KH = 16, 32, 16, 8
    per_layer = 2 * ((D + NH) + 2 * (D + KH) + (NH + D) + 2 * (D + F) + (F + D))
    assert n_lora == CFG.num_layers * per_layer
    moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]
    assert sum(x.size for x in moments) == 2 * n_lora  # Adam mu + nu over the adapters only
    assert count_params(state.frozen) == count_params(nnx.state(Qwen(CFG), nnx.Param))
    mesh = shd.make_mesh((2, 4, 1))
    d = shd.describe(shd.train_state_shardings(state, mesh))
    assert d[".frozen['layers'][0]['mlp']['up']['w'].value"] == str(jax.sharding.PartitionSpec("fsdp", None))
    assert d[".params['layers'][0]['mlp']['up']['lora']['lora_a'].value"] == "P(None, None)"  # replicated


HEAD_CFG = CFG.replace(vocab_size=16384, hidden_size=64, intermediate_size=128, num_layers=1, num_heads=4,
                       head_dim=16)  # the LM head ([B, chunk, V] float32 logits) dominates the activations


def _head_step_temp_bytes(sizes: dict, seqs_per_device: int, P=8, L=64, chunk=32):
    """XLA's per-device temp bytes of a jit_step (log-prob gradient + SGD update) on a mesh of ``sizes``
    over ``seqs_per_device`` x (data * fsdp) sequences, compiled ahead of time from abstract arrays."""
    n = int(np.prod(list(sizes.values())))
    mesh = shd.make_mesh(sizes, devices=jax.devices()[:n])
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Qwen(HEAD_CFG, dtype=jnp.float32)))
    params_sh = shd.tree_shardings(params, mesh)
    B = seqs_per_device * shd.batch_axis_size(mesh)
    batch = shd.abstract_batch({"p": ((B, P), jnp.int32), "pm": ((B, P), jnp.int32),
                                "c": ((B, L), jnp.int32), "cm": ((B, L), jnp.int32)}, mesh)

    def step(p, b, rng):
        def loss(p):
            out = completion_logprobs(nnx.merge(graphdef, p), b["p"], b["pm"], b["c"], b["cm"], chunk_size=chunk,
                                      with_entropy=False)
            return jnp.sum(out.logp_BC)
        val, g = jax.value_and_grad(loss)(p)
        return jax.tree.map(lambda x, d: x - 1e-3 * d, p, g), val

    jitted = shd.jit_step(step, params_sh, {k: v.sharding for k, v in batch.items()}, mesh)
    compiled = jitted.lower(shd.with_shardings(params, params_sh), batch, jax.random.key(0)).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_lm_head_memory_per_sequence_does_not_grow_with_devices():
    """FSDP over N devices with N * b sequences: one more sequence per device must cost each device the
    same whatever N. Unpinned, GSPMD split the head's contraction over the fsdp-sharded D and every device
    held logits for the whole global batch (measured before the fix: 11.2 MB per sequence at fsdp=2,
    36.8 MB at fsdp=8; after: 4.9 and 5.3 MB). The layout under a tensor axis is checked below."""
    per_seq = {n: _head_step_temp_bytes({"fsdp": n}, 2) - _head_step_temp_bytes({"fsdp": n}, 1) for n in (2, 8)}
    assert per_seq[2] > 0, per_seq
    assert per_seq[8] <= 1.25 * per_seq[2], per_seq


def test_lm_head_pins_only_under_a_mesh():
    """Without a mesh context the pins are identity (no sharding op in the program); jit_step traces under
    its mesh, and the hidden chunk / logits carry the batch layout."""
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Qwen(CFG)))
    i32 = jax.ShapeDtypeStruct((8, 4), jnp.int32)

    def f(p, t):
        return completion_logprobs(nnx.merge(graphdef, p), t, t, t, t, chunk_size=2).logp_BC

    text = jax.jit(f).lower(params, i32).as_text()
    assert "sharding_constraint" not in text and "fsdp" not in text
    mesh = shd.make_mesh({"fsdp": 4, "tensor": 2})
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        text = jax.jit(f).lower(params, i32).as_text()
    pins = [ln for ln in text.splitlines() if "sharding_constraint" in ln]
    assert any('[{"fsdp"}, {}, {"tensor"}]' in ln for ln in pins), pins  # logits [B, c, V]
    assert any('[{"fsdp"}, {}, {}]' in ln for ln in pins), pins  # hidden [B, c, D]


def test_reference_forward_pins_under_the_task_mesh():
    """The separately jitted reference forward (GRPO / PPO tasks) is traced under the task's mesh too, so
    its LM-head chunks carry the batch layout as in the train step; without a mesh it has no pins."""
    graphdef, params, frozen = split_model(nnx.eval_shape(lambda: Qwen(CFG)))
    i32 = jax.ShapeDtypeStruct((8, 4), jnp.int32)
    batch = {k: i32 for k in ("prompt_BQ", "prompt_mask_BQ", "completion_BC", "completion_mask_BC")}
    text = reference_logp_fn(graphdef, 1.0, chunk=2).lower(params, frozen, batch).as_text()
    assert "sharding_constraint" not in text
    mesh = shd.make_mesh({"fsdp": 4, "tensor": 2})
    text = reference_logp_fn(graphdef, 1.0, chunk=2, mesh=mesh).lower(params, frozen, batch).as_text()
    pins = [ln for ln in text.splitlines() if "sharding_constraint" in ln]
    assert any('[{"fsdp"}, {}, {"tensor"}]' in ln for ln in pins), pins  # logits [B, c, V]


DECODER_CFG = CFG.replace(vocab_size=128, hidden_size=128, intermediate_size=512, num_layers=2, num_heads=4,
                          num_kv_heads=2, head_dim=32)  # the decoder's activations dominate, not the head


def _grpo_step_temp_bytes(devices: int, seqs_per_device: int, *, lora: bool, scan: bool, P=32, L=32):
    """XLA's per-device temp bytes of the real GRPO train step (remat full, fsdp over ``devices``) on
    ``seqs_per_device`` x ``devices`` sequences, compiled ahead of time."""
    import functools

    from grpojax.models import apply_lora
    from grpojax.train.steps.grpo import GRPOSettings, grpo_step
    from grpojax.train.steps.state import create_train_state

    mesh = shd.make_mesh({"fsdp": devices}, devices=jax.devices()[:devices])
    cfg = DECODER_CFG.replace(scan_layers=scan)

    def ctor():
        m = Qwen(cfg, dtype=jnp.float32, remat="full")
        return apply_lora(m, rank=4, alpha=8.0) if lora else m

    tx, holder = optax.adam(1e-3), {}

    def init(rng):
        holder["g"], state = create_train_state(ctor(), tx, rng, lora=lora)
        return state

    abstract = jax.eval_shape(init, jax.random.key(0))
    state_sh = shd.train_state_shardings(abstract, mesh)
    B, i32, f32 = seqs_per_device * devices, jnp.int32, jnp.float32
    batch = shd.abstract_batch({"prompt_BQ": ((B, P), i32), "prompt_mask_BQ": ((B, P), i32),
                                "completion_BC": ((B, L), i32), "completion_mask_BC": ((B, L), i32),
                                "old_logp_BC": ((B, L), f32), "ref_logp_BC": ((B, L), f32),
                                "advantages_B": ((B,), f32)}, mesh)
    step = functools.partial(grpo_step, graphdef=holder["g"], tx=tx, settings=GRPOSettings(beta=0.04))
    jitted = shd.jit_step(step, state_sh, {k: v.sharding for k, v in batch.items()}, mesh)
    compiled = jitted.lower(shd.with_shardings(abstract, state_sh), batch, jax.random.key(0)).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("lora,scan", [(True, True), (False, False)])
def test_train_step_memory_per_sequence_does_not_grow_with_devices(lora, scan):
    """The decoder's activations are pinned to the batch layout (grpojax.models.qwen): one more sequence
    per device costs each device the same on fsdp=2 and fsdp=8. Unpinned, GSPMD carried the embedding's
    FSDP split of D into the residual stream and ran every layer on the whole global batch (measured before
    the fix: LoRA + scanned layers 3.66 MB per sequence at fsdp=2, 13.12 MB at fsdp=8; full fine-tune,
    per-layer 3.14 and 9.36 MB; after: 2.22 / 2.22 and 2.04 / 2.04 MB)."""
    per_seq = {n: _grpo_step_temp_bytes(n, 2, lora=lora, scan=scan) - _grpo_step_temp_bytes(n, 1, lora=lora, scan=scan)
               for n in (2, 8)}
    assert per_seq[2] > 0, per_seq
    assert per_seq[8] <= 1.25 * per_seq[2], per_seq


def _sampler_temp_bytes(devices: int, rows_per_device: int, P=64, L=8):
    """XLA's per-device temp bytes of the program ``grpojax.sampling.sample`` runs for a per-layer model
    sharded over fsdp=``devices`` with a ShardedCache (recorded by :func:`_record_sampler_programs`)."""
    from grpojax.sampling import sample

    mesh = shd.make_mesh({"fsdp": devices}, devices=jax.devices()[:devices])
    graphdef, state = nnx.split(Qwen(DECODER_CFG, rngs=nnx.Rngs(0)))
    model = nnx.merge(graphdef, jax.device_put(state, shd.tree_shardings(state, mesh)))
    B = rows_per_device * devices
    tokens = jax.device_put(jnp.ones((B, P), jnp.int32), shd.named(mesh, shd.batch_spec((B, P), mesh)))
    out = sample(model, tokens, tokens, jax.random.key(0), max_new_tokens=L,
                 cache_fn=ShardedCache(DECODER_CFG, mesh))
    assert out.completion_tokens_BC.sharding.spec[0] == "fsdp", out.completion_tokens_BC.sharding
    return _SAMPLER_TEMP[-1]


_SAMPLER_TEMP: list = []


@pytest.fixture
def _record_sampler_programs(monkeypatch):
    """Lowers every program ``sample`` runs from inside ``sample`` (its trace context) and records XLA's
    temp bytes in ``_SAMPLER_TEMP``."""
    from grpojax.sampling import sampler as sampler_mod

    jitted = sampler_mod._sample_jit

    def recording(*args, **kwargs):
        _SAMPLER_TEMP.append(jitted.lower(*args, **kwargs).compile().memory_analysis().temp_size_in_bytes)
        return jitted(*args, **kwargs)

    monkeypatch.setattr(sampler_mod, "_sample_jit", recording)
    yield
    _SAMPLER_TEMP.clear()


@pytest.mark.usefixtures("_record_sampler_programs")
def test_sampler_memory_per_row_does_not_grow_with_devices():
    """With a ShardedCache, ``sample`` traces under the cache's mesh, so the model's activation pins keep
    prefill and decoding on each device's own rows. Before (no mesh while tracing), a per-layer model's
    prefill ran on the whole global batch: 1.16 MB per row at fsdp=2, 4.32 MB at fsdp=8; after: 0.08 MB
    at both."""
    per_row = {n: _sampler_temp_bytes(n, 2) - _sampler_temp_bytes(n, 1) for n in (2, 8)}
    assert per_row[2] > 0, per_row
    assert per_row[8] <= 1.25 * per_row[2], per_row
