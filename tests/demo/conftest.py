"""Shared, session-scoped fixtures of the demo-world tests (built once: tokenizer training takes seconds)."""

import pytest

from grpojax.demo import build_world_tokenizer, save_tokenizer, sft_rows


@pytest.fixture(scope="session")
def world_tokenizer_dir(tmp_path_factory):
    """The seed-0 world tokenizer, saved as an HF tokenizer directory."""
    out = tmp_path_factory.mktemp("world_tokenizer")
    save_tokenizer(build_world_tokenizer(seed=0), str(out))
    return str(out)


@pytest.fixture(scope="session")
def sft_data():
    """2000 seed-0 SFT rows."""
    return sft_rows(seed=0, n=2000)
