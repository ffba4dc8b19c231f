"""Tokenizer wrapper on the shipped tiny tokenizer (configs/data/tiny_tokenizer) and a template-less copy."""

import os
import shutil

import numpy as np
import pytest

from grpojax import data as D
from grpojax.cli import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOK = os.path.join(ROOT, "configs", "data", "tiny_tokenizer")


@pytest.fixture(scope="module")
def tok():
    return D.load_tokenizer(TOK)


def test_chat_template_special_ids_and_prompt_batch(tok):
    hf = tok.hf
    assert tok.use_chat_template
    assert tok.eos_id == hf.convert_tokens_to_ids("<|im_end|>")
    assert tok.pad_id == hf.convert_tokens_to_ids("<|endoftext|>")
    assert tok.format_prompt("Hi") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    with_system = D.load_tokenizer(TOK, system_prompt="Be kind.")
    assert with_system.format_prompt("Hi").startswith("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\n")
    prompts = ["How do I bake bread?", "Hi"]
    batch = tok.prompt_batch(prompts, max_prompt_length=32)
    assert batch.prompt_ids_BT.shape == batch.prompt_mask_BT.shape == (2, 32)
    for b, p in enumerate(prompts):
        ids = tok.encode_prompt(p)
        n = int(batch.prompt_mask_BT[b].sum())
        assert n == len(ids) and batch.prompt_mask_BT[b, 32 - n:].all()  # left padded
        assert batch.prompt_ids_BT[b, 32 - n:].tolist() == ids
        assert (batch.prompt_ids_BT[b, : 32 - n] == tok.pad_id).all()
    short = tok.prompt_batch(prompts, max_prompt_length=5)
    assert short.prompt_ids_BT[0].tolist() == tok.encode_prompt(prompts[0])[-5:]  # keeps the generation prompt


def test_decode_round_trip_and_eos_cut(tok):
    text = "Sure! To bake bread, start slowly."
    ids = tok.encode_response(text)
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.eos_id] + tok.encode_response("junk") + [tok.pad_id]) == text
    assert tok.vocab_size == 384


def test_plain_text_when_no_template(tmp_path, tok):
    plain_dir = tmp_path / "plain"
    shutil.copytree(TOK, plain_dir)
    for f in plain_dir.iterdir():
        if "chat_template" in f.name:
            f.unlink()
    plain = D.load_tokenizer(str(plain_dir))
    assert not plain.use_chat_template and plain.format_prompt("Hi") == "Hi"
    off = D.load_tokenizer(TOK, chat_template=False)
    assert off.format_prompt("Hi") == "Hi"
    assert off.encode_prompt("Hi there") == tok.encode_response("Hi there")


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match=r"tokenizer directory not found: .*missing"):
        D.load_tokenizer(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"could not load tokenizer '.*empty'"):
        D.load_tokenizer(str(tmp_path / "empty"))


def test_collate_with_real_tokenizer(tok):
    rows = {"prompt": ["How do I cook rice?"] * 2, "response": ["Sure! Rinse it first.", "No."]}
    out = D.sft_batch(tok, rows, max_prompt_length=32, max_length=48)
    assert out["input_ids_BT"].shape == (2, 48)
    r = out["input_ids_BT"][1][out["loss_mask_BT"][1] == 1].tolist()
    assert r == tok.encode_response("No.") + [tok.eos_id]
    np.testing.assert_array_equal(out["attention_mask_BT"][:, 32:], out["loss_mask_BT"][:, 32:])


def test_encodings_are_memoised_per_text_and_returned_as_fresh_lists(monkeypatch):
    import pickle

    from grpojax.data import tokenizer as T

    tok = D.load_tokenizer(TOK)
    calls = []
    real = tok.hf.__call__

    class Counting:  # the HF tokenizer, counting encode calls
        def __getattr__(self, name):
            return getattr(tok.hf_real, name)

        def __call__(self, text, **kw):
            calls.append(text)
            return real(text, **kw)

    tok.hf_real, tok.hf = tok.hf, Counting()
    expect_p, expect_r = D.load_tokenizer(TOK).encode_prompt("Hi"), D.load_tokenizer(TOK).encode_response(" ok")
    for _ in range(3):
        p, r = tok.encode_prompt("Hi"), tok.encode_response(" ok")
        assert p == expect_p and r == expect_r
        p.append(-1), r.append(-1)  # callers may extend what they get: the memo is not theirs
    assert len(calls) == 2  # one HF call per distinct text, whatever the number of epochs
    tok.encode_response("Hi")  # the same text as a response is its own entry (no chat template)
    assert len(calls) == 3 and tok.encode_response("Hi") != tok.encode_prompt("Hi")
    monkeypatch.setattr(T, "ENCODE_CACHE_SIZE", 2)
    for text in ("a", "b", "c"):  # full memo starts over instead of growing
        tok.encode_response(text)
    assert len(tok._memo["response"]) == 1
    tok.hf = tok.hf_real
    del tok.hf_real
    assert pickle.loads(pickle.dumps(D.load_tokenizer(TOK))).encode_response(" ok") == expect_r
