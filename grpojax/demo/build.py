"""Build the whole demo world on disk: tokenizer directory, JSONL data files, and a manifest.

``build_world("runs/demo/world", seed=0)`` writes (file names are the keys of the returned dict)::

    tokenizer/             HF tokenizer directory (AutoTokenizer.from_pretrained loads it offline)
    sft.jsonl              SFT rows (mixed quality)                       grpojax.demo.datasets.sft_rows
    reward_train.jsonl     reward-model rows with some NaN labels         ...datasets.reward_rows
    reward_heldout.jsonl   held-out reward-model rows (held-out requests)
    grpo_train.jsonl       GRPO prompts (train requests)                  ...datasets.grpo_prompts
    grpo_heldout.jsonl     GRPO prompts (held-out requests)
    opinions_{train,val,test}.jsonl   group-opinion preference pairs      grpojax.demo.opinions
    opinions_sft.jsonl     SFT rows of the opinion task (chosen answers of the train split)
    world.json             seed, sizes, tokenizer facts, aspect statistics of SFT and reward data
"""

from __future__ import annotations

import json
import os

import numpy as np

from grpojax.demo import datasets as D
from grpojax.demo import opinions as O
from grpojax.demo.tokenizer import DEFAULT_VOCAB_SIZE, format_completion, format_prompt, save_tokenizer, train_tokenizer
from grpojax.demo.world import all_requests, best_spec, compose_response, sample_spec, vocabulary, worst_spec


def world_corpus(seed: int = 0, n_samples: int = 3000) -> list[str]:
    """Tokenizer training texts: chat-formatted sampled conversations (mixed, best and worst responses of
    every request), every opinion prompt with each answer letter, and every world word once."""
    rng = np.random.default_rng([seed, 20])
    requests = all_requests()
    texts = []
    for i in range(n_samples):
        r = requests[i % len(requests)]
        texts.append(format_prompt(r.text) + format_completion(
            compose_response(r, sample_spec(rng, r.harmful), rng)))
    for r in requests:
        for spec in (best_spec(r.harmful), worst_spec(r.harmful)):
            texts.append(format_prompt(r.text) + format_completion(compose_response(r, spec, rng)))
    for q in O.opinion_texts()[:-len(O.LETTERS)]:
        texts += [format_prompt(q) + format_completion(letter) for letter in O.LETTERS]
    texts += [" " + w for w in sorted(vocabulary())]
    return texts


def build_world_tokenizer(seed: int = 0, vocab_size: int = DEFAULT_VOCAB_SIZE):
    """The world's BPE tokenizer (a ``PreTrainedTokenizerFast``) trained on :func:`world_corpus`."""
    return train_tokenizer(world_corpus(seed), vocab_size)


def build_world(out_dir: str, seed: int = 0, *, vocab_size: int = DEFAULT_VOCAB_SIZE,
                n_sft: int = 2000, n_reward_train: int = 3000, n_reward_heldout: int = 500,
                overwrite: bool = False, **opinion_kwargs) -> dict[str, str]:
    """Write the world under ``out_dir`` and return ``{name: path}`` (names as in the module docstring).

    ``opinion_kwargs`` go to :func:`grpojax.demo.opinions.opinion_pairs`. An existing manifest
    (``world.json``) is never replaced unless ``overwrite=True``.
    """
    manifest_path = os.path.join(out_dir, "world.json")
    if os.path.exists(manifest_path) and not overwrite:
        raise FileExistsError(f"{manifest_path} exists; pass overwrite=True to rebuild the world there")
    os.makedirs(out_dir, exist_ok=True)
    paths = {"tokenizer": os.path.join(out_dir, "tokenizer")}
    tok = build_world_tokenizer(seed, vocab_size)
    save_tokenizer(tok, paths["tokenizer"])

    sft = D.sft_rows(seed, n_sft)
    reward = D.reward_rows(seed, n_reward_train, n_reward_heldout)
    grpo = D.grpo_prompts(seed)
    pairs = O.opinion_pairs(seed, **opinion_kwargs)
    files = {"sft": sft, "reward_train": reward["train"], "reward_heldout": reward["heldout"],
             "grpo_train": grpo["train"], "grpo_heldout": grpo["heldout"],
             **{f"opinions_{s}": pairs[s] for s in O.SPLITS}, "opinions_sft": O.opinion_sft_rows(pairs)}
    for name, rows in files.items():
        paths[name] = D.write_jsonl(rows, os.path.join(out_dir, f"{name}.jsonl"), overwrite=True)

    lengths = [len(tok(r["prompt"] + r["completion"])["input_ids"]) for r in sft + reward["heldout"]]
    manifest = {
        "seed": seed,
        "sizes": {name: len(rows) for name, rows in files.items()},
        "tokenizer": {"vocab_size": len(tok), "max_sft_tokens": max(lengths),
                      "mean_sft_tokens": float(np.mean(lengths)), "pad_token_id": tok.pad_token_id,
                      "eos_token_id": tok.eos_token_id},
        "aspects": {"sft": D.aspect_statistics(sft), "reward_train": D.aspect_statistics(reward["train"]),
                    "reward_heldout": D.aspect_statistics(reward["heldout"])},
        "opinion_groups": {g: sum(r["group"] == g for r in pairs["train"]) for g in O.GROUPS},
    }
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    paths["world"] = manifest_path
    return paths
