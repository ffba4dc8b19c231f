"""The dimension key used in every shape suffix of grpojax (``logp_BT``, ``scores_BR``, ``alpha_M``).

    B  prompts (or sequences in a batch)      G  completions per prompt (GRPO group size)
    T  tokens                                 S  KV-cache length
    D  model width                            N  query heads (or flattened items, see docstrings)
    K  key/value heads                        H  head dimension
    F  MLP hidden width                       V  vocabulary
    R  reward aspects                         M  robust groups
    P  preference pairs                       L  layers

A suffix lists the axes in order: ``k_BSKH`` is ``[batch, cache, kv_heads, head_dim]``. An argument that
takes any shape or any leading axes (``masked_mean(x, mask)``, ``token_logprobs(logits, tokens)`` over
``[..., T, V]``) has no suffix and states its shape in the docstring.
"""

from typing import Any

import jax

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any
Scalar = jax.Array  # a 0-d array

DIMENSIONS = {
    "B": "batch / prompts",
    "G": "completions per prompt",
    "T": "tokens",
    "S": "kv-cache length",
    "D": "model width",
    "N": "query heads",
    "K": "key/value heads",
    "H": "head dimension",
    "F": "mlp hidden width",
    "V": "vocabulary",
    "R": "reward aspects",
    "M": "robust groups",
    "P": "preference pairs",
    "L": "layers",
}
