"""KV-cache sampler: jitted prefill + ``lax.while_loop`` decode, temperature / top-k / top-p / greedy.

Public API:

- :func:`sample` -> :class:`SampleOutput` (completion tokens, mask, per-token log-probs, truncation flags,
  the left-padded prompts used), ``num_samples`` completions per prompt for GRPO groups, decoded from a
  KV cache whose prompt part the group shares (``cache_layout``, ``docs/decode.md``);
  :func:`lower_sample`: the same program lowered ahead of time for abstract weights (memory planning).
- strategies (pure functions of logits ``[B, V]``): :func:`apply_temperature`, :func:`top_k_filter`,
  :func:`top_p_filter`, :func:`filter_logits`, :func:`greedy`, :func:`categorical`,
  :func:`token_logprobs`, :func:`next_token`.
- building blocks: :func:`left_pad`, :func:`decode` (the traceable body), :class:`DecodeState`,
  :func:`forward_last`, :class:`ModelCache`, :class:`ShardedCache` (the KV cache laid out on a mesh).
"""

from grpojax.sampling.decode import DECODE_SCOPE, DecodeState, SampleOutput, decode, forward_last, is_eos, left_pad
from grpojax.sampling.sampler import ModelCache, ShardedCache, lower_sample, sample
from grpojax.sampling.strategies import (
                                     apply_temperature,
                                     categorical,
                                     filter_logits,
                                     greedy,
                                     next_token,
                                     token_logprobs,
                                     top_k_filter,
                                     top_p_filter,
)

__all__ = [
    "DECODE_SCOPE",
    "DecodeState",
    "ModelCache",
    "lower_sample",
    "SampleOutput",
    "apply_temperature",
    "categorical",
    "decode",
    "filter_logits",
    "forward_last",
    "greedy",
    "is_eos",
    "left_pad",
    "next_token",
    "sample",
    "ShardedCache",
    "token_logprobs",
    "top_k_filter",
    "top_p_filter",
]
