"""build_world: every file is written, loads back, and the world (tokenizer included) is reproducible."""

import json
import os

import pytest
from transformers import AutoTokenizer

from grpojax.demo import build_world, opinions, read_jsonl
from grpojax.demo.scorers import ASPECTS


def test_build_world_writes_a_loadable_reproducible_world(tmp_path, world_tokenizer_dir):
    out = str(tmp_path / "world")
    paths = build_world(out, seed=0, n_sft=40, n_reward_train=60, n_reward_heldout=20)
    expected = {"tokenizer", "sft", "reward_train", "reward_heldout", "grpo_train", "grpo_heldout",
                "opinions_train", "opinions_val", "opinions_test", "opinions_sft", "world"}
    assert set(paths) == expected and all(os.path.exists(p) for p in paths.values())

    tok = AutoTokenizer.from_pretrained(paths["tokenizer"])
    reference = AutoTokenizer.from_pretrained(world_tokenizer_dir)
    assert tok.get_vocab() == reference.get_vocab()  # same seed, same tokenizer

    manifest = json.load(open(paths["world"]))
    assert manifest["seed"] == 0
    assert manifest["sizes"]["sft"] == 40 and manifest["sizes"]["grpo_heldout"] == 29
    assert manifest["tokenizer"]["max_sft_tokens"] <= 48
    assert manifest["tokenizer"]["vocab_size"] == len(tok)
    assert manifest["opinion_groups"][opinions.SMALL_GROUP] == 68 * 3  # training pairs
    assert set(manifest["aspects"]["sft"]["mean"]) == set(ASPECTS)

    for name in expected - {"tokenizer", "world"}:
        rows = read_jsonl(paths[name])
        assert len(rows) == manifest["sizes"][name], name
    assert read_jsonl(paths["sft"])[0]["prompt"].startswith("<|user|> ")

    with pytest.raises(FileExistsError, match="world.json exists"):
        build_world(out, seed=0)

    # the library's column layout: one opinion SFT row (the preferred letter) per (group, question) of
    # the train split, which holds three pairs (one per rejected letter) per question
    from grpojax.demo.pipeline_stages import prepare_data

    data = prepare_data(paths, str(tmp_path / "data"))
    train, sft = read_jsonl(data["opinions_train"]), read_jsonl(data["opinions_sft"])
    assert len(train) == 3 * len(sft) == 3 * len({(r["group"], r["prompt"]) for r in train})
    chosen = {(r["group"], r["prompt"]): r["chosen"] for r in train}
    assert all(chosen[r["group"], r["prompt"]] == r["response"] for r in sft)
