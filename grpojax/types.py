"""The dimension key used in every shape suffix of grpojax (``logp_BT``, ``scores_BR``, ``alpha_M``).

    B  batch rows: prompts, sequences, or     G  completions per prompt (GRPO group size)
       a rollout's prompts x G completions    T  tokens of a whole sequence (prompt + completion)
    Q  prompt tokens (TRL's "query")          C  completion tokens
    S  key/value length (KV cache; T when     D  model width
       attending inside one sequence)         N  query heads (or flattened items, see docstrings)
    K  key/value heads                        H  head dimension
    J  head dimension / 2 (rotary halves)     F  MLP hidden width
    V  vocabulary                             R  reward aspects
    M  robust groups                          P  preference pairs
    E  end-of-sequence ids                    L  layers

A suffix lists the axes in order: ``k_BSKH`` is ``[batch, cache, kv_heads, head_dim]``; a rollout's
batch is ``prompt_BQ`` / ``completion_BC`` with ``B`` = prompts x G rows. Lower-case letters are sizes local
to one function and named in its docstring (``g`` query heads per KV head, ``n`` blocks or chunks, ``c``
chunk length). An argument that takes any shape or any leading axes (``masked_mean(x, mask)``,
``token_logprobs(logits, tokens)`` over ``[..., T, V]``) has no suffix and states its shape in the
docstring. The bandit experiment (``grpojax.bandit``) has its own key in its module docstring.
"""

from typing import Any

import jax

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any
Scalar = jax.Array  # a 0-d array

DIMENSIONS = {
    "B": "batch rows (prompts, sequences, or prompts x G completions)",
    "G": "completions per prompt",
    "T": "tokens of a whole sequence",
    "Q": "prompt tokens",
    "C": "completion tokens",
    "S": "key/value length",
    "D": "model width",
    "N": "query heads",
    "K": "key/value heads",
    "H": "head dimension",
    "J": "head dimension / 2",
    "F": "mlp hidden width",
    "V": "vocabulary",
    "R": "reward aspects",
    "M": "robust groups",
    "P": "preference pairs",
    "E": "end-of-sequence ids",
    "L": "layers",
    "X": "packed examples (slots) per row",
}
