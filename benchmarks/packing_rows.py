"""Rows saved by sequence packing (``data.packing``) on the shipped small data files in the real datasets'
layouts (``tests/data/fixtures``: PKU-SafeRLHF, hh-rlhf, GlobalOpinionQA), per optimizer step.

    python benchmarks/packing_rows.py [--out DIR] [--tokenizer configs/data/tiny_tokenizer]

For each (dataset, kind, batch size): the dataset is built by ``grpojax.data.load_from_config`` as a run
builds it, the sequence lengths are set so that nothing is truncated (``max_prompt_length`` = the longest
prompt, ``max_length`` = that plus the longest response), or as the shipped configs set them (``CASES``),
and one epoch of the run's loader (shuffled,
seed 0, full batches) is collated and packed by :mod:`grpojax.data.packing` exactly as the tasks pack a
step (one process, ``rows_multiple`` = 1). Reported: sequences per step unpacked (pairs count twice: the
preference step runs chosen and rejected rows), packed rows per step (mean), their ratio, and the share of
row tokens that are real tokens in each layout. Token counts come from ``--tokenizer`` (default the repo's
small byte-level BPE, roughly one token per character); the ratios depend on lengths relative to the
longest example, not on the tokenizer's scale. Writes ``OUT/packing_rows.json`` when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import numpy as np  # noqa: E402

from grpojax.config.sections import DataConfig  # noqa: E402
from grpojax.data import COLLATE, DataLoader, load_from_config, load_tokenizer  # noqa: E402
from grpojax.data.packing import pack_preference, pack_reward, pack_sft  # noqa: E402

FIXTURES = os.path.join(HERE, "..", "tests", "data", "fixtures")
# (dataset file / format, kind, batch size, (max_prompt_length, max_length) or None = the longest example);
# the lengths are the shipped configs' (configs/goqa_*_qwen2.5-0.5b.yaml, configs/reward_qwen2.5-0.5b.yaml)
# and TRL's DPOConfig defaults for hh-rlhf (512 / 1024)
CASES = [
    ("global_opinions", "sft", 16, None), ("global_opinions", "dpo", 16, None),
    ("pku_saferlhf", "reward", 8, None), ("pku_saferlhf", "dpo", 4, None), ("hh_rlhf", "dpo", 4, None),
    ("global_opinions", "sft", 16, (384, 392)), ("global_opinions", "dpo", 16, (384, 392)),
    ("pku_saferlhf", "reward", 8, (256, 768)), ("hh_rlhf", "sft", 4, (512, 1024)),
    ("hh_rlhf", "dpo", 4, (512, 1024)),
]
PACK = {"sft": pack_sft, "reward": pack_reward, "dpo": pack_preference}


def lengths(tok, ds, kind):
    """Longest prompt and longest response (EOS included) in tokens."""
    responses = list(ds["chosen"]) + list(ds["rejected"]) if kind == "dpo" else list(ds["response"])
    return (max(len(tok.encode_prompt(p)) for p in ds["prompt"]),
            max(len(tok.encode_response(r)) + 1 for r in responses))


def measure(tok, fmt, kind, batch_size, budget):
    base = DataConfig(path=os.path.join(FIXTURES, f"{fmt}.jsonl"), format=fmt)
    ds = load_from_config(base, kind)
    if budget is None:
        P, R = lengths(tok, ds, kind)
        budget = (P, P + R)
    d = DataConfig(path=base.path, format=fmt, max_prompt_length=budget[0], max_length=budget[1])
    collate = lambda rows: COLLATE[kind](tok, rows, max_prompt_length=budget[0], max_length=budget[1])  # noqa: E731
    loader = DataLoader(ds, collate, batch_size, seed=d.shuffle_seed)
    steps, packed_rows, real, unpacked_sequences = len(ds) // batch_size, [], 0, 0
    for _ in range(steps):
        raw = next(loader)
        out = PACK[kind](raw, d.max_length, tok.pad_id)
        packed_rows.append(out["input_ids_BT"].shape[0])
        real += int((out["segment_ids_BT"] > 0).sum())
        unpacked_sequences += batch_size * (2 if kind == "dpo" else 1)
    T = d.max_length
    return {"data": fmt, "kind": kind, "examples": len(ds), "batch_size": batch_size, "steps": steps,
            "max_prompt_length": d.max_prompt_length, "max_length": T,
            "unpacked_rows_per_step": unpacked_sequences / steps,
            "packed_rows_per_step": float(np.mean(packed_rows)),
            "rows_ratio": float(np.sum(packed_rows)) / unpacked_sequences,
            "unpacked_fill": real / (unpacked_sequences * T), "packed_fill": real / (float(np.sum(packed_rows)) * T)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out")
    p.add_argument("--tokenizer", default=os.path.join(HERE, "..", "configs", "data", "tiny_tokenizer"))
    args = p.parse_args(argv)
    tok = load_tokenizer(args.tokenizer, True, None)
    rows = [measure(tok, *case) for case in CASES]
    print("| data | kind | examples | batch | T | sequences / step unpacked | rows / step packed | ratio | "
          "fill unpacked | fill packed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['data']} | {r['kind']} | {r['examples']} | {r['batch_size']} | {r['max_length']} | "
              f"{r['unpacked_rows_per_step']:.0f} | {r['packed_rows_per_step']:.2f} | {r['rows_ratio']:.3f} | "
              f"{r['unpacked_fill']:.3f} | {r['packed_fill']:.3f} |")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "packing_rows.json"), "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
