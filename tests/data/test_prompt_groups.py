"""Prompt groups for group-robust GRPO (``load_from_config(..., prompt_groups=column)``): a column of a
local table, PKU-SafeRLHF's harm category of a prompt, and the one-line refusals."""

import json
import os

import pytest

from grpojax.cli import UserError
from grpojax.config.sections import DataConfig
from grpojax.data import load_from_config

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "fixtures")


def test_group_column_of_local_prompts():
    ds = load_from_config(DataConfig(path=os.path.join(FIX, "tiny_prompt_groups.jsonl")), "grpo",
                          prompt_groups="group")
    assert ds.column_names == ["prompt", "group"] and len(ds) == 32
    assert ds["group"].count("minority") == 8 and ds["group"][3] == "minority"
    plain = load_from_config(DataConfig(path=os.path.join(FIX, "tiny_prompt_groups.jsonl")), "grpo")
    assert plain.column_names == ["prompt", "group"]  # every data column is kept for the reward functions


def test_pku_harm_category_is_the_first_flagged_category_of_the_prompts_first_row():
    path = os.path.join(FIX, "pku_saferlhf.jsonl")
    ds = load_from_config(DataConfig(path=path, format="pku_saferlhf"), "grpo", prompt_groups="harm_category")
    first = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            flagged = [c for k in (0, 1) for c, on in row[f"response_{k}_harm_category"].items() if on]
            first.setdefault(row["prompt"], flagged[0] if flagged else "none")
    assert list(ds["prompt"]) == list(first) and list(ds["group"]) == list(first.values())
    assert {"none", "Privacy Violation"} <= set(ds["group"])
    by_source = load_from_config(DataConfig(path=path, format="pku_saferlhf"), "grpo", prompt_groups="prompt_source")
    assert len(by_source) == len(ds) and all(isinstance(g, str) and g for g in by_source["group"])


def test_refusals():
    with pytest.raises(UserError, match="no column 'kind'"):
        load_from_config(DataConfig(path=os.path.join(FIX, "tiny_prompt_groups.jsonl")), "grpo", prompt_groups="kind")
    with pytest.raises(UserError, match="groups are read from prompt data of data.format columns or pku_saferlhf"):
        load_from_config(DataConfig(path=os.path.join(FIX, "hh_rlhf.jsonl"), format="hh_rlhf"), "grpo",
                         prompt_groups="group")
