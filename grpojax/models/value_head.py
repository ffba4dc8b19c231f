"""The PPO critic: a linear value head on a Qwen backbone's final hidden states.

    values_BT = value_head(params, hidden_BTD)          V_bt = <w, h_bt> + b     (float32)

``params`` is a mapping ``{"w": [D], "b": []}`` (a plain pytree, so the head is a pure function usable in any
JAX code); :class:`ValueHead` is the NNX module holding those two parameters. :class:`ActorCritic` bundles
the policy, the value head and optionally a separate critic backbone into one NNX module, so a PPO train
state is one ``nnx.split`` of it:

* ``critic="shared"`` (``critic is None``): the head reads the policy's own final hidden states, as in
  Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences", arXiv 1909.08593, the value
  head shares the policy's transformer) and TRL's ``AutoModelForCausalLMWithValueHead``.
* ``critic="separate"``: the head reads a second backbone, e.g. initialised from the reward model's backbone
  (Ouyang et al. 2022, "Training language models to follow instructions with human feedback", arXiv
  2203.02155, section 3.5; TRL ``PPOTrainer`` initialises its critic from the reward model).

Shape key: ``grpojax/types.py`` (B rows, T tokens, D model width).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from grpojax.types import Array


def value_head(params: Mapping[str, Array], hidden_BTD: Array) -> Array:
    """Linear value head ``V_bt = Σ_d w_d h_btd + b``, computed in float32.

    Args:
      params: ``{"w": [D], "b": []}``.
      hidden_BTD: [B, T, D] final (normed) hidden states of a backbone, any float dtype.

    Returns:
      [B, T] float32 values.

    >>> value_head({"w": jnp.array([1.0, 2.0]), "b": jnp.array(0.5)}, jnp.ones((1, 1, 2)))
    Array([[3.5]], dtype=float32)
    """
    w_D, b = params["w"], params["b"]
    chex.assert_rank(hidden_BTD, 3)
    chex.assert_rank(w_D, 1)
    chex.assert_rank(b, 0)
    if w_D.shape[0] != hidden_BTD.shape[-1]:
        raise ValueError(f"value_head: w has {w_D.shape[0]} features but hidden_BTD is {hidden_BTD.shape}")
    values_BT = jnp.einsum("BTD,D->BT", hidden_BTD.astype(jnp.float32), w_D.astype(jnp.float32))
    return values_BT + b.astype(jnp.float32)


class ValueHead(nnx.Module):
    """NNX holder of the :func:`value_head` parameters: ``w ~ N(0, init_std²)`` ([D], axis ``embed``),
    ``b = 0``. ``init_std=0`` starts every value at 0 (the gradient still reaches ``w`` and ``b``)."""

    def __init__(self, hidden_size: int, *, init_std: float = 0.0, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs | None = None):
        if hidden_size <= 0:
            raise ValueError(f"ValueHead: hidden_size must be > 0, got {hidden_size}")
        if init_std < 0:
            raise ValueError(f"ValueHead: init_std must be >= 0, got {init_std}")
        rngs = nnx.Rngs(0) if rngs is None else rngs
        w = init_std * jax.random.normal(rngs.params(), (hidden_size,), jnp.float32)
        self.w = nnx.Param(w.astype(param_dtype), out_sharding=("embed",), eager_sharding=False)
        self.b = nnx.Param(jnp.zeros((), param_dtype), out_sharding=(), eager_sharding=False)

    def params(self) -> dict:
        """The ``{"w", "b"}`` mapping :func:`value_head` takes."""
        return {"w": self.w[...], "b": self.b[...]}

    def __call__(self, hidden_BTD: Array) -> Array:
        return value_head(self.params(), hidden_BTD)


class ActorCritic(nnx.Module):
    """A policy (``grpojax.models.Qwen``) with a value head, on the policy's backbone or on ``critic``.

    ``values(tokens_BT, positions_BT, mask_BT, policy_hidden_BTD=None)`` returns [B, T] values: with a
    shared critic it needs the policy's hidden states (pass them to avoid a second forward pass); with a
    separate critic it runs the critic backbone on the same tokens.
    """

    def __init__(self, policy: nnx.Module, head: ValueHead, critic: nnx.Module | None = None):
        self.policy = policy
        self.value_head = head
        self.critic = critic if critic is not None else nnx.data(None)

    @property
    def shared(self) -> bool:
        return self.critic is None

    def values(self, tokens_BT: Array, positions_BT: Array, mask_BT: Array,
               policy_hidden_BTD: Array | None = None) -> Array:
        if self.critic is None:
            if policy_hidden_BTD is None:
                policy_hidden_BTD = self.policy(tokens_BT, positions_BT, attn_mask_BT=mask_BT, return_hidden=True)
            hidden_BTD = policy_hidden_BTD
        else:
            hidden_BTD = self.critic(tokens_BT, positions_BT, attn_mask_BT=mask_BT, return_hidden=True)
        return self.value_head(hidden_BTD)
