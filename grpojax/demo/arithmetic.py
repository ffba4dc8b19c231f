"""The arithmetic world: one-step word problems with a checkable answer, for RL with verifiable rewards.

A problem is a fact ``a op b = c`` (``+`` and ``-`` over operands 0-9 with ``c >= 0``, ``x`` over
operands 1-9: 236 facts) told as a short story from one of six templates with a name and an item::

    prompt   "ann has 7 pears and gets 5 more . how many pears does ann have now ?"
    response " 7 + 5 = 12 . the answer is 12 ."        answer "12"

Every fact appears in training prompts (twice, in two wordings); the held-out problems are other
stories (a (template, name, item) triple drawn from the seed that no training problem uses) around
distinct facts drawn at random, so held-out accuracy measures the answers on new wordings of known facts
(a tiny model cannot derive an unseen fact). The SFT demonstrations are noisy, as human-written ones
are: in a share ``sft_noise`` of them the final answer is off by 1 or 2 (the equation stays right), so an
SFT policy reaches a partial accuracy. The GRPO prompts are all training problems, each with its
``answer`` column, scored by the built-in ``exact_match`` reward (:mod:`grpojax.rewards.verifiable`
reads "the answer is 12"). Words and numbers are lower-case tokens separated by single spaces; the
world's byte-level BPE tokenizer (:func:`grpojax.demo.tokenizer.train_tokenizer`, the demo's chat
format) makes every word and every number 0-400 one token. Everything is deterministic given the seed.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np

from grpojax.demo.datasets import write_jsonl
from grpojax.demo.tokenizer import (
    format_completion,
    format_prompt,
    save_tokenizer,
    train_tokenizer,
)

NAMES = ("ann", "bob", "cara", "dan", "eve", "finn", "gus", "hana")
ITEMS = ("apples", "pears", "coins", "books", "stamps", "shells", "pens", "cards")
TEMPLATES = {
    "+": ("{n} has {a} {i} and gets {b} more . how many {i} does {n} have now ?",
          "there are {a} {i} in a box and {n} adds {b} . how many {i} are in the box ?"),
    "-": ("{n} has {a} {i} and gives away {b} . how many {i} does {n} have left ?",
          "there are {a} {i} on a table and {n} takes {b} . how many {i} are on the table ?"),
    "x": ("{n} buys {a} bags with {b} {i} each . how many {i} does {n} buy ?",
          "{n} makes {a} rows of {b} {i} . how many {i} are there ?"),
}
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "x": lambda a, b: a * b}
VOCAB_SIZE = 900


class Problem(NamedTuple):
    op: str
    a: int
    b: int
    template: int
    name: str
    item: str

    @property
    def answer(self) -> int:
        return OPS[self.op](self.a, self.b)

    @property
    def prompt(self) -> str:
        return TEMPLATES[self.op][self.template].format(n=self.name, i=self.item, a=self.a, b=self.b)

    @property
    def response(self) -> str:
        """The worked solution: the equation, then "the answer is c ."."""
        return self.noisy_response(0)

    def noisy_response(self, error: int) -> str:
        """The worked solution with the final answer off by ``error`` (the equation stays right)."""
        return f"{self.a} {self.op} {self.b} = {self.answer} . the answer is {self.answer + error} ."


def facts() -> list[tuple[str, int, int]]:
    """Every ``(op, a, b)`` of the world: 100 additions, 55 subtractions (c >= 0), 81 multiplications."""
    out = [("+", a, b) for a in range(10) for b in range(10)]
    out += [("-", a, b) for a in range(10) for b in range(a + 1)]
    out += [("x", a, b) for a in range(1, 10) for b in range(1, 10)]
    return out


def stories(op: str) -> list[tuple[int, str, str]]:
    return [(t, n, i) for t in range(len(TEMPLATES[op])) for n in NAMES for i in ITEMS]


def split_problems(seed: int, n_heldout: int = 200, heldout_story_frac: float = 0.15,
                   per_fact: int = 2) -> dict[str, list[Problem]]:
    """``{"train": [...], "heldout": [...]}``: each fact ``per_fact`` times in ``train`` with training stories,
    and ``n_heldout`` problems of distinct random facts told with held-out stories (module docstring)."""
    rng = np.random.default_rng([seed, 19])
    train, heldout = [], []
    held_stories = {}
    for op in TEMPLATES:
        s = stories(op)
        idx = rng.permutation(len(s))
        k = max(1, round(heldout_story_frac * len(s)))
        held_stories[op] = [s[i] for i in idx[:k]]
        keep = [s[i] for i in idx[k:]]
        for f_op, a, b in facts():
            if f_op == op:
                train += [Problem(op, a, b, *keep[j]) for j in rng.choice(len(keep), size=per_fact, replace=False)]
    all_facts = facts()
    for j in rng.choice(len(all_facts), size=n_heldout, replace=False):
        op, a, b = all_facts[j]
        story = held_stories[op][rng.integers(len(held_stories[op]))]
        heldout.append(Problem(op, a, b, *story))
    order = rng.permutation(len(train))
    return {"train": [train[i] for i in order], "heldout": heldout}


def corpus(seed: int) -> list[str]:
    """Tokenizer training texts: every training / held-out problem with its response, every number once."""
    texts = []
    for problems in split_problems(seed).values():
        texts += [format_prompt(p.prompt) + format_completion(p.response) for p in problems]
    texts += [f" {n}" for n in range(401)] + [f" {w}" for w in NAMES + ITEMS]
    return texts


def sft_errors(problems: list[Problem], noise: float, rng) -> list[int]:
    """The final-answer error of each SFT demonstration: 0, or with probability ``noise`` one of -2, -1, 1, 2
    (uniform among those that keep the answer >= 0)."""
    out = []
    for p in problems:
        choices = [e for e in (-2, -1, 1, 2) if p.answer + e >= 0]
        out.append(int(rng.choice(choices)) if rng.random() < noise else 0)
    return out


def build_arithmetic_world(out_dir: str, seed: int = 0, *, sft_fraction: float = 1.0,
                           sft_noise: float = 0.5) -> dict[str, str]:
    """Write the world under ``out_dir`` and return ``{name: path}``: ``tokenizer`` (HF directory),
    ``sft.jsonl`` (prompt, response: ``sft_fraction`` of the training problems, a share ``sft_noise`` of
    them with a wrong final answer), ``grpo_train.jsonl`` and ``heldout.jsonl`` (prompt, answer, op) and
    ``world.json`` (seed, sizes, vocabulary size, the SFT data's own accuracy)."""
    split = split_problems(seed)
    rng = np.random.default_rng([seed, 20])
    train = split["train"]
    sft = [train[i] for i in sorted(rng.choice(len(train), size=int(sft_fraction * len(train)), replace=False))]
    errors = sft_errors(sft, sft_noise, rng)
    tok = train_tokenizer(corpus(seed), VOCAB_SIZE)
    paths = {"tokenizer": save_tokenizer(tok, os.path.join(out_dir, "tokenizer"))}
    for name, rows in (("sft", [{"prompt": p.prompt, "response": " " + p.noisy_response(e)}
                                for p, e in zip(sft, errors)]),
                       ("grpo_train", [{"prompt": p.prompt, "answer": str(p.answer), "op": p.op} for p in train]),
                       ("heldout", [{"prompt": p.prompt, "answer": str(p.answer), "op": p.op}
                                    for p in split["heldout"]])):
        paths[name] = write_jsonl(rows, os.path.join(out_dir, f"{name}.jsonl"), overwrite=True)
    longest = max(len(tok(format_prompt(p.prompt) + format_completion(p.response))["input_ids"])
                  for p in train + split["heldout"])
    longest_prompt = max(len(tok(format_prompt(p.prompt))["input_ids"]) for p in train + split["heldout"])
    manifest = {"seed": seed, "vocab_size": len(tok), "max_tokens": longest, "max_prompt_tokens": longest_prompt,
                "sft_fraction": sft_fraction,
                "sft_noise": sft_noise, "sft_correct": float(np.mean([e == 0 for e in errors])),
                "sizes": {"sft": len(sft), "grpo_train": len(train), "heldout": len(split["heldout"])}}
    paths["world"] = os.path.join(out_dir, "world.json")
    with open(paths["world"], "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    return paths
