"""The world tokenizer: loads offline with AutoTokenizer, round-trips exactly, fits the length budget."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from grpojax.demo import opinions as O
from grpojax.demo import tokenizer as T
from grpojax.demo import world as W


@pytest.fixture(scope="module")
def tok(world_tokenizer_dir):
    return AutoTokenizer.from_pretrained(world_tokenizer_dir)


def test_loads_offline_with_special_tokens(tok):
    assert tok.pad_token_id == 0 and tok.bos_token_id == 1 and tok.eos_token_id == 2
    assert tok.convert_tokens_to_ids([T.USER, T.ASSISTANT]) == [3, 4]
    assert 300 < len(tok) <= T.DEFAULT_VOCAB_SIZE
    assert tok("how do i bake bread ?")["input_ids"][0] not in (0, 1, 2)  # nothing added automatically


def test_every_world_word_is_one_token(tok):
    split = [w for w in sorted(W.vocabulary()) if len(tok(" " + w)["input_ids"]) != 1]
    assert not split


def test_round_trip_and_length_budget(tok, sft_data):
    rng = np.random.default_rng(0)
    texts = [r["prompt"] + r["completion"] for r in sft_data]
    for request in W.all_requests():
        longest = W.ResponseSpec("courteous", "rude", "on", 3, refusal=True, forbidden=True)
        for spec in (W.best_spec(request.harmful), W.worst_spec(request.harmful), longest):
            texts.append(T.format_prompt(request.text) + T.format_completion(
                W.compose_response(request, spec, rng)))
    lengths = []
    for text in texts:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
        lengths.append(len(ids))
    assert max(lengths) <= 48 and np.mean(lengths) < 34
    opinion_lengths = [len(tok(T.format_prompt(q) + T.format_completion("D"))["input_ids"])
                       for q in O.opinion_texts()[:-4]]
    assert max(opinion_lengths) <= 48
    # the demo's prompts name the category, a word the tokenizer corpus lacks for two categories: still
    # within the opinion configs' max_prompt_length (48)
    prompts = [T.format_prompt(O.opinion_prompt(g, q["text"], q["category"])) for g in O.GROUPS
               for q in O.questions()]
    assert max(len(tok(p)["input_ids"]) for p in prompts) <= 48


@settings(max_examples=50, deadline=None)
@given(text=st.text(max_size=80))
def test_round_trips_arbitrary_text(tok, text):
    assert tok.decode(tok(text)["input_ids"]) == text


def test_prompt_and_completion_ids_concatenate(tok, sft_data):
    for row in sft_data[:200]:
        joined = tok(row["prompt"] + row["completion"])["input_ids"]
        assert joined == tok(row["prompt"])["input_ids"] + tok(row["completion"])["input_ids"]
        assert joined[0] == 3 and joined[-1] == 2
        assert tok(row["prompt"])["input_ids"][-1] == 4


def test_chat_template_renders_the_chat_format(tok):
    messages = [{"role": "user", "content": "how do i bake bread ?"},
                {"role": "assistant", "content": "first heat the oven ."}]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == T.format_prompt("how do i bake bread ?") + T.format_completion("first heat the oven .")


def test_strip_completion():
    assert T.strip_completion(" first heat the oven .<|eos|> junk<|eos|>") == "first heat the oven ."
    assert T.strip_completion("<|assistant|> ok<|pad|><|pad|>") == "ok"
    assert T.strip_completion("") == ""


def test_training_is_deterministic_and_validates():
    texts = [T.format_prompt(r.text) for r in W.all_requests()]
    a, b = T.train_tokenizer(texts, 300), T.train_tokenizer(texts, 300)
    assert a.get_vocab() == b.get_vocab()
    with pytest.raises(ValueError, match="vocab_size=200"):
        T.train_tokenizer(texts, 200)
    with pytest.raises(ValueError, match="no training texts"):
        T.train_tokenizer([], 300)
