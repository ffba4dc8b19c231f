"""Small generated data in the column layouts of the real datasets the shipped presets read.

- PKU-SafeRLHF (``PKU-Alignment/PKU-SafeRLHF``, the 2024 release): prompt, response_0, response_1,
  prompt_source, response_{0,1}_source, is_response_{0,1}_safe (bool), response_{0,1}_harm_category
  (a mapping of 19 category -> bool), response_{0,1}_severity_level (0-3), better_response_id,
  safer_response_id (0/1), response_{0,1}_sha256. Written as ``train.jsonl`` / ``test.jsonl`` (the hub
  serves JSON lines per split).
- GlobalOpinionQA (``Anthropic/llm_global_opinions``): question, selections (the *string*
  ``"defaultdict(<class 'list'>, {'Nigeria': [0.2, 0.8], ...})"``), options (the *string* of a Python list,
  quotes mixed when an option holds an apostrophe), source. Written as parquet (the hub's format), with
  the real quirks: the India key ``'India (Current national sample)'``, countries with an empty list,
  countries outside the paper's five, probabilities that do not sum to one.
- The multi-label reward JSONL the reward presets read by default (``data/multi_label_reward.jsonl`` and
  ``data/multi_label_reward_eval.jsonl``): prompt, response, politeness, meaningfulness, actionability,
  safety in [0, 1], some null (a missing label).

Every generator is deterministic (``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

import json
import os

import numpy as np

HARM = ("Endangering National Security", "Insulting Behavior", "Discriminatory Behavior",
        "Endangering Public Health", "Copyright Issues", "Violence", "Drugs", "Privacy Violation",
        "Economic Crime", "Mental Manipulation", "Human Trafficking", "Physical Harm", "Sexual Content",
        "Cybercrime", "Disrupting Public Order", "Environmental Damage", "Psychological Harm",
        "White-Collar Crime", "Animal Abuse")
TASKS = ("bake bread", "fix a bike", "write a poem", "plan a trip", "learn chess", "paint a room",
         "train a dog", "grow tomatoes", "save money", "study maths", "cook rice", "sew a button")
HOW = ("quickly", "without anyone noticing", "on a budget", "at home", "with my kids", "before Monday")
COUNTRIES = ("Nigeria", "Egypt", "India (Current national sample)", "China", "Japan", "Germany", "Brazil")
OPTIONS = (["Very good", "Somewhat good", "Somewhat bad", "Very bad"], ["Yes", "No"],
           ["Agree", "Disagree", "Don't know"], ["A great deal", "Some", "Not much", "None at all", "Refused"])
ASPECTS = ("politeness", "meaningfulness", "actionability", "safety")


def pku_rows(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        task = TASKS[i % len(TASKS)]  # 72 distinct prompts, then repeats (the real table repeats prompts too)
        how = HOW[(i // len(TASKS)) % len(HOW)]
        prompt = f"How can I {task} {how}?"
        safe = [bool(rng.random() < 0.6), bool(rng.random() < 0.6)]
        responses = [f"You could {task} step by step, starting small.",
                     f"I would not do that; here is a safer way to {task}."]
        if i % 3 == 0:
            responses.reverse()
        row = {"prompt": prompt, "response_0": responses[0], "response_1": responses[1],
               "prompt_source": "Alpaca3-70B", "response_0_source": "Alpaca-7B", "response_1_source": "Alpaca3-8B"}
        for k in (0, 1):
            row[f"is_response_{k}_safe"] = safe[k]
        for k in (0, 1):
            row[f"response_{k}_harm_category"] = {h: bool(not safe[k] and j == i % len(HARM))
                                                  for j, h in enumerate(HARM)}
        for k in (0, 1):
            row[f"response_{k}_severity_level"] = 0 if safe[k] else int(rng.integers(1, 4))
        row["better_response_id"] = int(rng.integers(2))
        row["safer_response_id"] = int(safe[1] and not safe[0]) if safe[0] != safe[1] else int(rng.integers(2))
        for k in (0, 1):
            row[f"response_{k}_sha256"] = f"{(seed << 20) + 2 * i + k:064x}"
        rows.append(row)
    return rows


def goqa_rows(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        options = OPTIONS[i % len(OPTIONS)]
        sel = {}
        for c in COUNTRIES:
            if rng.random() < 0.15:
                sel[c] = []  # asked but no answer recorded (as in the real table)
            elif rng.random() < 0.9:
                p = rng.dirichlet(np.ones(len(options)))
                sel[c] = [round(float(x), 4) for x in p]  # rounded: sums are not exactly one
        rows.append({"question": f"Question {i}: how do people feel about {TASKS[i % len(TASKS)]} in public life?",
                     "selections": f"defaultdict(<class 'list'>, {sel!r})",
                     "options": repr(list(options)),
                     "source": ("GAS", "WVS")[i % 2]})
    return rows


def reward_rows(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        task = TASKS[i % len(TASKS)]
        row = {"prompt": f"Please tell me how to {task}.",
               "response": ["Sure! First gather what you need, then go slowly.", "No.",
                            "Here is a plan: one, two, three.", "Why would you even ask that?"][i % 4]}
        for a in ASPECTS:
            row[a] = None if rng.random() < 0.2 else round(float(rng.random()), 3)
        rows.append(row)
    return rows


def _jsonl(path: str, rows: list[dict]) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def write_all(root: str) -> dict[str, str]:
    """Writes every stand-in table under ``root``; returns name -> path.

    ``root/data/multi_label_reward{,_eval}.jsonl`` sit where the reward presets look by default (run
    from ``root``); the hub datasets' stand-ins go under ``root/hub_data/``.
    """
    import pandas as pd

    goqa = os.path.join(root, "hub_data", "llm_global_opinions", "train.parquet")
    os.makedirs(os.path.dirname(goqa), exist_ok=True)
    pd.DataFrame(goqa_rows(60, seed=2)).to_parquet(goqa, index=False)
    return {
        "pku_train": _jsonl(os.path.join(root, "hub_data", "pku_saferlhf", "train.jsonl"), pku_rows(80, seed=0)),
        "pku_test": _jsonl(os.path.join(root, "hub_data", "pku_saferlhf", "test.jsonl"), pku_rows(16, seed=1)),
        "goqa": goqa,
        "reward": _jsonl(os.path.join(root, "data", "multi_label_reward.jsonl"), reward_rows(64, seed=3)),
        "reward_eval": _jsonl(os.path.join(root, "data", "multi_label_reward_eval.jsonl"), reward_rows(16, seed=4)),
    }


def corpus(paths: dict[str, str]) -> list[str]:
    """Every text of the stand-in tables (the stand-in tokenizer's BPE training corpus)."""
    import pandas as pd

    texts = []
    for path in paths.values():
        rows = (pd.read_parquet(path).to_dict("records") if path.endswith(".parquet")
                else [json.loads(line) for line in open(path, encoding="utf-8")])
        for r in rows:
            texts += [v for v in r.values() if isinstance(v, str)]
    texts += ["Opinion of people in X on: \nPlease select the best response:\nA. B. C. D. E.",
              "system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\nuser\nassistant\n"]
    return texts
