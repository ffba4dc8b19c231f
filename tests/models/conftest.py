"""Fixtures of the model tests: tiny random-weight HF checkpoints saved with save_pretrained."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from hf_tiny import Qwen2ForSequenceClassification, build_hf, hf_config, randomize_  # noqa: E402


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """``hf_checkpoint(name, **save_kw) -> (dir, torch_model)``, cached per (name, save_kw)."""
    made = {}

    def make(name, **save_kw):
        key = (name, tuple(sorted(save_kw.items())))
        if key not in made:
            model = build_hf(name)
            d = tmp_path_factory.mktemp(name)
            model.save_pretrained(d, **save_kw)
            made[key] = (str(d), model)
        return made[key]

    return make


@pytest.fixture(scope="session")
def hf_seqcls_checkpoint(tmp_path_factory):
    """A tiny ``Qwen2ForSequenceClassification`` (num_labels=3, pad_token_id=0) -> (dir, torch_model)."""
    cfg = hf_config("qwen2-gqa2-untied", num_labels=3, pad_token_id=0)
    torch.manual_seed(1)
    model = randomize_(Qwen2ForSequenceClassification(cfg), 1)
    d = tmp_path_factory.mktemp("seqcls")
    model.save_pretrained(d)
    return str(d), model


