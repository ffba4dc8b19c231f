"""The ``device`` group of ``benchmarks/accelerator.py --suite``: measured peaks and the attention parity lines.

Run by ``benchmarks/accelerator_jax.py --group device``. Parts:

* ``info``: the device kind, jax version, the attention implementations of this checkout, device memory.
* ``matmul_peak``: ``[n, n] @ [n, n]`` in bf16, the best of 5 calls after a warm-up; ``bandwidth``: ``x + 1``
  over a bf16 array, bytes read + written / seconds, best of 5 (beside the datasheet numbers of ``PEAKS``).
* ``parity_<impl>_<dtype>``: :func:`parity` for every ``grpojax.models.attention.IMPLEMENTATIONS`` the backend
  runs (the others recorded as skipped, with the reason), float32 and bfloat16.
"""

from __future__ import annotations

import functools
import time

import accelerator as A
import jax
import jax.numpy as jnp
import numpy as np

from grpojax.models import attention as attention_module
from grpojax.models.attention import IMPLEMENTATIONS, attention


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t)
    return out


def matmul_peak(n: int) -> dict:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    f = jax.jit(lambda x: x @ x)
    best = min(timed(lambda: f(a), 6)[1:])
    return {"flops": 2 * n ** 3 / best, "tflops": round(2 * n ** 3 / best / 1e12, 2), "shape": f"{n}^3 bf16"}


def bandwidth(mib: int) -> dict:
    x = jnp.zeros((mib * 2 ** 19,), jnp.bfloat16)
    f = jax.jit(lambda y: y + 1)
    best = min(timed(lambda: f(x), 6)[1:])
    return {"bytes_per_s": 2 * x.nbytes / best, "gb_per_s": round(2 * x.nbytes / best / 1e9, 1),
            "shape": f"x + 1 over {mib} MiB bf16"}


# ------------------------------------------------------------------------------------------ attention parity

def numpy_attention(q, k, v, seg):
    """float64 reference: causal, same-segment GQA attention (``grpojax.models.attention`` docstring)."""
    B, T, N, H = q.shape
    g = N // k.shape[2]
    kk, vv = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, kk) / np.sqrt(H)
    allowed = (np.arange(T)[None, :] <= np.arange(T)[:, None])[None] & (seg[:, :, None] == seg[:, None, :])
    logits = np.where(allowed[:, None], logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", p, vv)


def parity_inputs(B: int, T: int, N: int, K: int, H: int) -> dict:
    """Random q / k / v / cotangent (float64) and segments: row 0 the GRPO layout (``0* c+ 0*``, a left-padded
    prompt and a right-padded completion: what cuDNN takes), row 1 two packed examples then padding."""
    r = np.random.default_rng(0)
    q, k, v = (r.standard_normal(s) for s in ((B, T, N, H), (B, T, K, H), (B, T, K, H)))
    seg = np.ones((B, T), np.int32)
    seg[0, :3], seg[0, -2:] = 0, 0
    seg[1, T // 2:] = 2
    seg[1, -2:] = 0
    real = (seg > 0)[:, :, None, None]
    return {"q": q, "k": k, "v": v, "seg": seg, "real": real, "ct": r.standard_normal((B, T, N, H)) * real}


def attention_and_grads(impl: str, dtype, x: dict):
    """``attention(...)`` of ``x`` at ``dtype`` and the gradients of ``sum(out * ct)`` w.r.t. q, k, v
    (float64 NumPy arrays), matmuls at ``highest`` precision."""
    seg = jnp.asarray(x["seg"])

    def loss(q_, k_, v_):
        out = attention(q_, k_, v_, seg, seg, offset=0, implementation=impl)
        return jnp.sum(out.astype(jnp.float32) * x["ct"]), out

    with jax.default_matmul_precision("highest"):
        (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
            *(jnp.asarray(x[n], dtype) for n in "qkv"))
    return np.asarray(out, np.float64), [np.asarray(g, np.float64) for g in grads]


_REFERENCE: dict = {}  # shape -> (inputs, float64 NumPy output, einsum float32 gradients): computed once


def parity(impl: str, dtype, B: int, T: int, N: int, K: int, H: int) -> dict:
    """``impl`` vs float64 NumPy (forward) and vs einsum at float32 ``highest`` (gradients of
    ``sum(out * ct)`` w.r.t. q, k, v) on :func:`parity_inputs`; pad queries (segment 0) left out of both."""
    shape = (B, T, N, K, H)
    if shape not in _REFERENCE:
        x = parity_inputs(*shape)
        _REFERENCE[shape] = (x, numpy_attention(x["q"], x["k"], x["v"], x["seg"]),
                             attention_and_grads("einsum", jnp.float32, x)[1])
    x, ref, ref_grads = _REFERENCE[shape]
    out, grads = attention_and_grads(impl, dtype, x)
    scale = max(1.0, float(np.abs(ref).max()))
    fwd = float(np.abs(np.where(x["real"], out - ref, 0)).max()) / scale
    grad = max(float(np.abs(a - b).max()) / max(1.0, float(np.abs(b).max())) for a, b in zip(grads, ref_grads))
    tol = (1e-4, 1e-3) if dtype == jnp.float32 else (3e-2, 6e-2)
    return {"fwd_err": float(f"{fwd:.2e}"), "grad_err": float(f"{grad:.2e}"), "tol": list(tol),
            "ok": fwd <= tol[0] and grad <= tol[1], "shape": f"B{B} T{T} N{N} K{K} H{H}"}


def group_device(p: dict, res) -> None:
    """The device group's parts, recorded in ``res`` (an ``accelerator_jax.Results``)."""
    dev = jax.devices()[0]
    known = A.known_peaks(dev.device_kind)
    res.part("info", lambda: {"device_kind": dev.device_kind, "platform": dev.platform, "jax": jax.__version__,
                              "devices": jax.device_count(), "implementations": list(IMPLEMENTATIONS),
                              "memory_stats": {k: v for k, v in (dev.memory_stats() or {}).items()
                                               if k in ("bytes_limit", "bytes_in_use")}})
    res.part("matmul_peak", lambda: {**matmul_peak(p["matmul_n"]), "datasheet": known and known[0] / 1e12})
    res.part("bandwidth", lambda: {**bandwidth(p["copy_mib"]), "datasheet": known and known[1] / 1e9})
    for impl in IMPLEMENTATIONS:
        for name, dt in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
            why = cannot_run(impl, dt)
            res.part(f"parity_{impl}_{name}", (lambda w=why: {"skipped": w}) if why else
                     functools.partial(parity, impl, dt, **p["parity"]))


def cannot_run(impl: str, dtype) -> str | None:
    """Why ``impl`` is not checked at ``dtype`` on this backend (None: it is)."""
    platform = jax.default_backend()
    if impl == "splash" and platform != "tpu":
        return "a Pallas TPU kernel (off TPU only its interpreter runs)"
    check = getattr(attention_module, "check_backend", None)
    why = check(impl, platform) if check else None
    if not why and impl == "cudnn" and dtype == jnp.float32:
        why = "cuDNN flash attention takes bfloat16 / float16 only"
    return why
