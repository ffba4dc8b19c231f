"""Data for grpojax runs, through HF ``datasets`` and ``transformers`` tokenizers.

Public API:

- tokenizer:  ``load_tokenizer``, ``Tokenizer``, ``PromptBatch``
- loaders:    ``load_from_config`` (a ``DataConfig`` + script kind -> normalised ``datasets.Dataset``),
              ``load_prompts``, ``load_sft``, ``load_reward``, ``load_preference`` (any table + columns),
              ``pku_saferlhf``, ``hh_rlhf``, ``global_opinions`` (named builders of the real schemas),
              ``read_table`` / ``read_local`` / ``read_hub``
- batching:   ``encode_sequences``, ``prompt_batch``, ``sft_batch``, ``reward_batch``,
              ``preference_batch``, ``COLLATE`` (kind -> collate fn), ``BatchIterator``, ``DataLoader``,
              ``left_pad``, ``right_pad``, ``positions_from_mask``, ``padded_batches`` (fixed-shape evaluation)
"""

from grpojax.data.batching import (
    COLLATE,
    BatchIterator,
    DataLoader,
    encode_sequences,
    left_pad,
    padded_batches,
    positions_from_mask,
    preference_batch,
    prompt_batch,
    reward_batch,
    right_pad,
    sft_batch,
)
from grpojax.data.loaders import (
    GOQA_COUNTRIES,
    global_opinions,
    goqa_prompt,
    hh_rlhf,
    load_from_config,
    load_preference,
    load_prompts,
    load_reward,
    load_sft,
    parse_selections,
    pku_saferlhf,
    split_dialogue,
)
from grpojax.data.sources import read_hub, read_local, read_table
from grpojax.data.tokenizer import PromptBatch, Tokenizer, load_tokenizer

__all__ = [
    "COLLATE", "BatchIterator", "DataLoader", "encode_sequences", "left_pad", "padded_batches", "positions_from_mask",
    "preference_batch", "prompt_batch", "reward_batch", "right_pad", "sft_batch", "GOQA_COUNTRIES",
    "global_opinions", "goqa_prompt", "hh_rlhf", "load_from_config", "load_preference", "load_prompts",
    "load_reward", "load_sft", "parse_selections", "pku_saferlhf", "split_dialogue", "read_hub", "read_local",
    "read_table", "PromptBatch", "Tokenizer", "load_tokenizer",
]
