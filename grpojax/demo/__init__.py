"""The built-in synthetic world of the end-to-end demo (``python -m grpojax.demo``).

A tiny language of requests (benign: cooking, travel, bike, garden, study; harmful: stealing, weapons,
hacking) and responses composed from independent parts, so that the four aspects of the multi-objective
GRPO paper -- politeness, meaningfulness, actionability, safety -- vary independently and are scored by
plain text rules (:mod:`grpojax.demo.scorers`); a byte-level BPE tokenizer trained on it
(:mod:`grpojax.demo.tokenizer`); SFT / reward-model / GRPO data (:mod:`grpojax.demo.datasets`); and a
GlobalOpinionQA-shaped group-opinion task with one small, harder group for GR-IPO / GR-DPO
(:mod:`grpojax.demo.opinions`). Everything is deterministic given a seed; :func:`build_world` writes it
all to disk. Sequences are at most 48 tokens, so tiny Qwen2 models train on them in minutes on a CPU.

Public API:

- world: ``TOPICS``, ``Request``, ``ResponseSpec``, ``all_requests``, ``split_requests``, ``sample_spec``,
  ``best_spec``, ``worst_spec``, ``compose_response``
- scorers: ``ASPECTS``, ``score_politeness``, ``score_meaningfulness``, ``score_actionability``,
  ``score_safety``, ``score_all``, ``score_batch``
- tokenizer: ``format_prompt``, ``format_completion``, ``strip_completion``, ``train_tokenizer``,
  ``save_tokenizer``, ``build_world_tokenizer``
- data: ``sft_rows``, ``reward_rows``, ``grpo_prompts``, ``labels_BR``, ``aspect_statistics``,
  ``write_jsonl``, ``read_jsonl``, ``to_dataset``, ``perturb_response``
- opinions: ``GROUPS``, ``SMALL_GROUP``, ``opinion_pairs``, ``opinion_sft_rows``, ``preferred_index``
- ``build_world(out_dir, seed)``
"""

from grpojax.demo.build import build_world, build_world_tokenizer, world_corpus
from grpojax.demo.datasets import (
                                   aspect_statistics,
                                   grpo_prompts,
                                   labels_BR,
                                   perturb_response,
                                   read_jsonl,
                                   reward_rows,
                                   sft_rows,
                                   to_dataset,
                                   write_jsonl,
)
from grpojax.demo.opinions import GROUPS, SMALL_GROUP, opinion_pairs, opinion_sft_rows, preferred_index
from grpojax.demo.scorers import (
                                   ASPECTS,
                                   score_actionability,
                                   score_all,
                                   score_batch,
                                   score_meaningfulness,
                                   score_politeness,
                                   score_safety,
)
from grpojax.demo.tokenizer import format_completion, format_prompt, save_tokenizer, strip_completion, train_tokenizer
from grpojax.demo.world import (
                                   TOPICS,
                                   Request,
                                   ResponseSpec,
                                   all_requests,
                                   best_spec,
                                   compose_response,
                                   sample_spec,
                                   split_requests,
                                   worst_spec,
)

__all__ = [
    "ASPECTS", "GROUPS", "SMALL_GROUP", "TOPICS", "Request", "ResponseSpec", "all_requests",
    "aspect_statistics", "best_spec", "build_world", "build_world_tokenizer", "compose_response",
    "format_completion", "format_prompt", "grpo_prompts", "labels_BR", "opinion_pairs",
    "opinion_sft_rows", "perturb_response", "preferred_index", "read_jsonl", "reward_rows",
    "sample_spec", "save_tokenizer", "score_actionability", "score_all", "score_batch",
    "score_meaningfulness", "score_politeness", "score_safety", "sft_rows", "split_requests",
    "strip_completion", "to_dataset", "train_tokenizer", "world_corpus", "worst_spec", "write_jsonl",
]
