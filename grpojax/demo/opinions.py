"""A synthetic group-opinion task for GR-IPO / GR-DPO, shaped like GlobalOpinionQA (ALGORITHMS.md 2.5).

Groups are fictional countries (:data:`GROUPS`). A question asks about a *subject* from one of four
categories (family, economy, science, leisure; 8 subjects each) with a *positive* (``"how important is
{s} to you ?"``) or *negative* (``"how worried are you about {s} ?"``) template, 3 of each: 192 questions.
Every question has the same four options (``A. very much`` ... ``D. not at all``). The prompt mirrors the
paper's and names the question's category (``category_in_prompt``)::

    opinion of people in borduria on leisure : how important is music to you ?
    please select the best response :
    A. very much
    B. somewhat
    C. not much
    D. not at all

Preferred answer (index 0..3 = A..D) of group g for a question of category c (0..3) and polarity p. A
shared *base* opinion ``base(c, p) = c`` if p else ``3 - c`` (what matters "very much" is "not at all" a
worry), and:

- group 0 holds the base opinion everywhere; group 1 deviates (``base + 2 mod 4``) on category 3, group 2
  on categories 1 and 2: the large groups differ systematically but mostly agree, so the question alone
  (category and polarity are main effects) already predicts much of the answer;
- the small group (the *last* one) disagrees with the base on every question, by a rule that changes with
  the category: the reversed polarity ``base(c, not p)`` for categories 0 and 1, ``base + 1 mod 4`` for
  categories 2 and 3. It answers only ``small_fraction`` of the questions, optionally with label noise.

Design rationale. Every group's answer is a function of (group, category, polarity), so it generalises
from a group's training questions to its test questions. The average IPO loss weighs each group by its
share of the pairs (the small group: 14% of the training pairs by default), and what the small group wants
conflicts with the majority everywhere, so a tiny model trained for a fixed budget serves it worst; GR-IPO
raises its weight alpha while its training loss is the largest (the variants that did not work:
``docs/history.md``).

Pairs are ``(prompt, chosen, rejected, group)``: chosen is the group's preferred letter, rejected every
other letter (3 pairs per question, in every split; ``train_all_rejected`` / ``eval_all_rejected`` = False
draw one random other letter instead). Each group's questions are split independently (default 70 / 15 /
15).
"""

from __future__ import annotations

import numpy as np

from grpojax.demo.tokenizer import format_completion, format_prompt

GROUPS = ("avalon", "borduria", "carpania", "dravonia")
SMALL_GROUP = GROUPS[-1]
CATEGORIES = {
    "family": ("family", "children", "elders", "marriage", "neighbours", "friendship", "tradition",
               "community"),
    "economy": ("jobs", "taxes", "trade", "wages", "savings", "business", "markets", "industry"),
    "science": ("science", "technology", "medicine", "space", "research", "computers", "vaccines",
                "energy"),
    "leisure": ("sports", "music", "art", "holidays", "television", "games", "cinema", "fashion"),
}
POSITIVE_TEMPLATES = ("how important is {s} to you ?", "how much do you value {s} ?",
                      "how good is {s} for society ?")
NEGATIVE_TEMPLATES = ("how worried are you about {s} ?", "how much do you distrust {s} ?",
                      "how bad is {s} for society ?")
OPTIONS = ("very much", "somewhat", "not much", "not at all")
LETTERS = ("A", "B", "C", "D")
SPLITS = ("train", "val", "test")


def questions() -> list[dict]:
    """All 192 questions, in a fixed order: dicts with id, text, category, category_id, subject, positive."""
    out = []
    for c, (category, subjects) in enumerate(CATEGORIES.items()):
        for subject in subjects:
            for positive, templates in ((True, POSITIVE_TEMPLATES), (False, NEGATIVE_TEMPLATES)):
                for template in templates:
                    out.append(dict(id=len(out), text=template.format(s=subject), category=category,
                                    category_id=c, subject=subject, positive=positive))
    return out


def preferred_index(group_id: int, category_id: int, positive: bool) -> int:
    """The noise-free preferred option index (0..3) of a group for a question (module docstring rule)."""
    if not 0 <= group_id < len(GROUPS):
        raise ValueError(f"group_id={group_id}; valid: 0..{len(GROUPS) - 1} ({GROUPS})")
    if not 0 <= category_id < len(CATEGORIES):
        raise ValueError(f"category_id={category_id}; valid: 0..{len(CATEGORIES) - 1}")
    base = category_id if positive else 3 - category_id
    if group_id == len(GROUPS) - 1:  # the small group
        if category_id < 2:
            return 3 - base  # = base(c, not p)
        return (base + 1) % 4
    deviating = {0: (), 1: (3,), 2: (1, 2)}[group_id]
    return (base + 2) % 4 if category_id in deviating else base


def opinion_prompt(group: str, question: str, category: str | None = None) -> str:
    """The raw GlobalOpinionQA-style prompt (no chat markers) for a group and a question text; with
    ``category`` the prompt names the question's category (``... in {group} on {category} : ...``)."""
    options = "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, OPTIONS))
    on = f"on {category} :" if category else "on :"
    return (f"opinion of people in {group} {on} {question}\nplease select the best response :\n"
            f"{options}")


def opinion_pairs(seed: int = 0, *, small_fraction: float = 0.5, small_noise: float = 0.0,
                  split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                  eval_all_rejected: bool = True, train_all_rejected: bool = True,
                  category_in_prompt: bool = True) -> dict[str, list[dict]]:
    """Preference pairs per split: ``{"train": [...], "val": [...], "test": [...]}``.

    Every row: ``prompt`` (chat-formatted, ends with ``<|assistant|>``), ``chosen`` / ``rejected`` (letter
    + ``<|eos|>``), ``chosen_letter``, ``rejected_letter``, ``group`` (name), ``group_id`` (0..3, the last
    is the small group), ``question`` (raw prompt text), ``question_id``, ``split``.

    Args:
      seed: all randomness (small group's questions, splits, rejected letters, noise).
      small_fraction: share of the 192 questions the small group answers (others answer all).
      small_noise: probability that a small-group answer is replaced by a uniformly random other letter.
      split_fractions: (train, val, test) shares of each group's questions; must sum to 1.
      eval_all_rejected: val / test rows use all 3 other letters as rejected (else one random letter).
      train_all_rejected: the same for the training split.
      category_in_prompt: the prompt names the question's category (:func:`opinion_prompt`).
    """
    if not 0.0 < small_fraction <= 1.0:
        raise ValueError(f"small_fraction={small_fraction}; must be in (0, 1]")
    if not 0.0 <= small_noise < 1.0:
        raise ValueError(f"small_noise={small_noise}; must be in [0, 1)")
    if len(split_fractions) != 3 or abs(sum(split_fractions) - 1.0) > 1e-9 or min(split_fractions) <= 0:
        raise ValueError(f"split_fractions={split_fractions}; need 3 positive shares summing to 1")
    rng = np.random.default_rng([seed, 2])
    qs = questions()
    out = {s: [] for s in SPLITS}
    for g, group in enumerate(GROUPS):
        n = len(qs) if g < len(GROUPS) - 1 else max(3, round(small_fraction * len(qs)))
        chosen_q = rng.permutation(len(qs))[:n]
        n_val = max(1, round(split_fractions[1] * n))
        n_test = max(1, round(split_fractions[2] * n))
        split_of = ["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_val - n_test)
        for qi, split in zip(chosen_q, split_of):
            q = qs[int(qi)]
            pref = preferred_index(g, q["category_id"], q["positive"])
            if g == len(GROUPS) - 1 and rng.random() < small_noise:
                pref = int(rng.choice([i for i in range(4) if i != pref]))
            others = [i for i in range(4) if i != pref]
            all_rejected = train_all_rejected if split == "train" else eval_all_rejected
            rejected = others if all_rejected else [int(rng.choice(others))]
            raw = opinion_prompt(group, q["text"], q["category"] if category_in_prompt else None)
            for r in rejected:
                out[split].append(dict(
                    prompt=format_prompt(raw), chosen=format_completion(LETTERS[pref]),
                    rejected=format_completion(LETTERS[r]), chosen_letter=LETTERS[pref],
                    rejected_letter=LETTERS[r], group=group, group_id=g, question=raw,
                    question_id=q["id"], split=split))
    return out


def opinion_sft_rows(pairs: dict[str, list[dict]], split: str = "train") -> list[dict]:
    """SFT rows (the chosen answers), one per question of ``split``.

    Row keys: prompt, completion, group, group_id, question_id.
    """
    seen, rows = set(), []
    for row in pairs[split]:
        key = (row["group_id"], row["question_id"])
        if key not in seen:
            seen.add(key)
            rows.append(dict(prompt=row["prompt"], completion=row["chosen"], group=row["group"],
                             group_id=row["group_id"], question_id=row["question_id"]))
    return rows


def opinion_texts() -> list[str]:
    """Every raw opinion prompt and answer letter (tokenizer training corpus)."""
    return [opinion_prompt(g, q["text"]) for g in GROUPS for q in questions()] + list(LETTERS)
