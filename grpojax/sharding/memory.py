"""Memory levers that are not layout: low-precision parameters with float32 optimizer state.

Bytes per trainable parameter (Adam, no master copy) -- the arithmetic behind ``docs/memory_plan.md``
(the gradient is transient: it lives only inside the step, in XLA's temporary buffers):

    float32 params + float32 Adam:          4 (param) + 8 (mu, nu) = 12 resident, + 4 (grad)
    bfloat16 params + float32 Adam (here):  2 (param) + 8 (mu, nu) = 10 resident, + 2 (grad)
    LoRA (rank r): the base is frozen (2 bytes in bf16, no grad, no moments); the optimizer state
    covers only the ``nnx.LoRAParam`` factors (``TrainState.params``), a fraction of a percent.

Other levers live where they act: rematerialisation in ``grpojax.models.Qwen(remat=...)``, chunked
log-probs (never ``[B, T, V]`` float32 logits) in ``grpojax.train.steps.forward.completion_logprobs``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class F32State(NamedTuple):
    inner: optax.OptState


def _f32(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                        tree)


def f32_optimizer_state(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """Wraps ``tx`` so its state and arithmetic are float32 whatever the parameter dtype.

    ``init`` and ``update`` see float32 copies of the (e.g. bfloat16) params and grads; the updates are
    cast back to each parameter's dtype: ``u = cast_{dtype(p)}(tx.update(f32(g), s, f32(p)))``. Adam's
    moments thus keep full precision (a bf16 ``nu`` underflows for small gradients), while the params
    and grads cost 2 bytes each. Updates smaller than half a bf16 ulp of a weight are lost to rounding
    (no master copy); use float32 params when that matters.
    """

    def init(params):
        return F32State(tx.init(_f32(params)))

    def update(grads, state, params=None):
        p32 = None if params is None else _f32(params)
        updates, inner = tx.update(_f32(grads), state.inner, p32)
        ref = grads if params is None else params
        updates = jax.tree.map(lambda u, r: u.astype(r.dtype), updates, ref)
        return updates, F32State(inner)

    return optax.GradientTransformation(init, update)
