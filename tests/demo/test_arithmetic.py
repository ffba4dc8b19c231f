"""The arithmetic world (grpojax.demo.arithmetic): facts, splits, files and tokenizer; every worked
solution is scored 1 by the exact-match reward and a wrong one 0."""

import json
import os

import pytest

from grpojax.demo.arithmetic import (
    NAMES,
    OPS,
    TEMPLATES,
    build_arithmetic_world,
    facts,
    split_problems,
)
from grpojax.rewards.verifiable import exact_match_reward


def test_facts_and_splits():
    fs = facts()
    assert len(fs) == len(set(fs)) == 100 + 55 + 81
    assert all(OPS[op](a, b) >= 0 for op, a, b in fs)
    s = split_problems(0)
    assert sorted((p.op, p.a, p.b) for p in s["train"]) == sorted(fs + fs)  # every fact twice in training
    assert len({p.prompt for p in s["train"]}) == 2 * len(fs)
    assert len(s["heldout"]) == 200 and len({(p.op, p.a, p.b) for p in s["heldout"]}) == 200
    train_stories = {(p.op, p.template, p.name, p.item) for p in s["train"]}
    assert not {(p.op, p.template, p.name, p.item) for p in s["heldout"]} & train_stories  # unseen wordings
    p = s["train"][0]
    assert p.prompt == TEMPLATES[p.op][p.template].format(n=p.name, i=p.item, a=p.a, b=p.b)
    assert p.name in NAMES and p.response.endswith(f"the answer is {p.answer} .")
    assert split_problems(0) == s and split_problems(1) != s


def test_noisy_demonstrations_keep_the_equation_and_miss_the_answer_by_one_or_two():
    import numpy as np

    from grpojax.demo.arithmetic import sft_errors

    problems = split_problems(0)["train"]
    errors = sft_errors(problems, 0.5, np.random.default_rng(0))
    assert 0.45 < np.mean([e != 0 for e in errors]) < 0.55
    assert {e for e in errors} <= {-2, -1, 0, 1, 2} and all(p.answer + e >= 0 for p, e in zip(problems, errors))
    p, e = next((p, e) for p, e in zip(problems, errors) if e)
    assert p.noisy_response(e) == f"{p.a} {p.op} {p.b} = {p.answer} . the answer is {p.answer + e} ."
    assert exact_match_reward(None, [p.noisy_response(e)], answer=[str(p.answer)]) == [0.0]
    assert sft_errors(problems[:50], 0.0, np.random.default_rng(0)) == [0] * 50


def test_world_files_tokenizer_and_exact_match(tmp_path):
    paths = build_arithmetic_world(str(tmp_path), seed=3, sft_fraction=0.25, sft_noise=0.0)
    with open(paths["world"]) as f:
        manifest = json.load(f)
    assert manifest["sizes"] == {"sft": 118, "grpo_train": 472, "heldout": 200}
    import yaml

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for stage in ("sft", "grpo"):  # nothing is cut: a prompt cut from the left would lose its first operand
        with open(os.path.join(root, "configs", "demo", f"arithmetic_{stage}.yaml")) as f:
            data = yaml.safe_load(f)["data"]
        assert manifest["max_prompt_tokens"] <= data["max_prompt_length"]
        assert manifest["max_tokens"] <= data["max_length"]
    from grpojax.demo.datasets import read_jsonl

    rows = {n: read_jsonl(paths[n]) for n in ("sft", "grpo_train", "heldout")}
    assert set(rows["grpo_train"][0]) == {"prompt", "answer", "op"} and set(rows["sft"][0]) == {"prompt", "response"}
    answers = {r["prompt"]: r["answer"] for r in rows["grpo_train"]}
    sft = rows["sft"]
    assert exact_match_reward(None, [r["response"] for r in sft], answer=[answers[r["prompt"]] for r in sft]) == \
        [1.0] * len(sft)
    wrong = [r["response"].replace("the answer is ", "the answer is 1") for r in sft[:5]]
    assert exact_match_reward(None, wrong, answer=[answers[r["prompt"]] for r in sft[:5]]) == [0.0] * 5
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths["tokenizer"])
    assert len(tok) == manifest["vocab_size"]
    for n in (0, 7, 19, 81, 361):  # every number a world answer can be is one token
        assert len(tok(f" {n}")["input_ids"]) == 1, n
    assert os.path.isfile(os.path.join(paths["tokenizer"], "tokenizer.json"))


def test_command_line_rejects_demo_only_options():
    from grpojax import cli
    from grpojax.demo.__main__ import main

    with pytest.raises(SystemExit) as e:
        cli.main(main, ["--task", "arithmetic", "--quick"])
    assert e.value.code == 2


def test_table_of_finished_runs(tmp_path):
    from grpojax.demo.arithmetic_pipeline import table

    dirs = []
    for seed, (b, a) in enumerate([(0.2, 0.4), (0.4, 0.6)]):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        acc = {k: v for k in ("greedy", "sampled", "greedy/+", "greedy/-", "greedy/x") for v in [0.0]}
        (d / "summary.json").write_text(json.dumps({"seed": seed, "seconds": 300.0, "before": {**acc, "greedy": b},
                                                    "after": {**acc, "greedy": a}}))
        dirs.append(str(d))
    lines = table(dirs).splitlines()
    assert lines[2].startswith("| 0 | 0.200 -> 0.400 | 0.000 -> 0.000") and lines[3].startswith("| 1 | 0.400 -> 0.600")
    assert lines[4].startswith("| mean ± std | 0.300 ± 0.141 -> 0.500 ± 0.141 |")
