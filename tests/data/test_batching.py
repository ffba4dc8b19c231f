"""Fixed-shape batches (hand-computed layouts, truncation) and the resumable batch iterator."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpojax import data as D
from grpojax.cli import UserError


class CharTok:
    """A stand-in tokenizer: one id per character (ord - 96), pad 0, eos 99; prompts get a 50 marker."""

    pad_id, eos_id = 0, 99

    def encode_prompt(self, text):
        return [ord(c) - 96 for c in text] + [50]

    def encode_response(self, text):
        return [ord(c) - 96 for c in text]


def test_left_and_right_pad_hand_cases():
    ids, mask = D.left_pad([[1, 2, 3], [4], [], [5, 6, 7, 8, 9]], 4, pad_id=0)
    np.testing.assert_array_equal(ids, [[0, 1, 2, 3], [0, 0, 0, 4], [0, 0, 0, 0], [6, 7, 8, 9]])
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    ids, mask = D.right_pad([[1, 2, 3], [4], [5, 6, 7, 8, 9]], 4, pad_id=7)
    np.testing.assert_array_equal(ids, [[1, 2, 3, 7], [4, 7, 7, 7], [5, 6, 7, 8]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    assert ids.dtype == mask.dtype == np.int32
    np.testing.assert_array_equal(D.positions_from_mask(np.array([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])),
                                  [[0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 3, 3]])


def test_encode_sequences_layout_and_truncation():
    # prompt "ab" -> [1, 2, 50]; P = 4; response budget = 3.
    out = D.encode_sequences(CharTok(), ["ab", "abcd"], ["c", "xyz"], max_prompt_length=4, max_length=7)
    np.testing.assert_array_equal(out["input_ids_BT"], [[0, 1, 2, 50, 3, 99, 0],
                                                        [2, 3, 4, 50, 24, 25, 26]])  # left-truncated prompt
    np.testing.assert_array_equal(out["attention_mask_BT"], [[0, 1, 1, 1, 1, 1, 0], [1] * 7])
    np.testing.assert_array_equal(out["loss_mask_BT"], [[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(out["positions_BT"], [[0, 0, 1, 2, 3, 4, 4], [0, 1, 2, 3, 4, 5, 6]])
    np.testing.assert_array_equal(out["truncated_B"], [False, True])  # "xyz"+EOS lost its EOS
    with pytest.raises(ValueError, match="max_length=4 must exceed max_prompt_length=4"):
        D.encode_sequences(CharTok(), ["a"], ["b"], 4, 4)


def test_reward_and_preference_batches():
    rows = {"prompt": ["a", "b"], "response": ["c", "d"], "labels": [[1.0, float("nan")], [float("nan"), 0.25]]}
    out = D.reward_batch(CharTok(), rows, max_prompt_length=2, max_length=4)
    np.testing.assert_array_equal(out["labels_BR"], [[1.0, 0.0], [0.0, 0.25]])
    np.testing.assert_array_equal(out["label_mask_BR"], [[1, 0], [0, 1]])
    assert out["labels_BR"].dtype == np.float32
    pref = {"prompt": ["a", "b"], "chosen": ["c", "dd"], "rejected": ["e", "f"], "group": [1, 0]}
    out = D.preference_batch(CharTok(), pref, max_prompt_length=2, max_length=5)
    np.testing.assert_array_equal(out["chosen_input_ids_BT"][:, :2], out["rejected_input_ids_BT"][:, :2])
    np.testing.assert_array_equal(out["chosen_input_ids_BT"], [[1, 50, 3, 99, 0], [2, 50, 4, 4, 99]])
    np.testing.assert_array_equal(out["rejected_input_ids_BT"], [[1, 50, 5, 99, 0], [2, 50, 6, 99, 0]])
    np.testing.assert_array_equal(out["group_B"], [1, 0])
    assert set(D.COLLATE) == {"grpo", "sft", "reward", "dpo"}


def test_iterator_epochs_are_permutations():
    it = D.BatchIterator(num_examples=10, batch_size=3, seed=7)
    epoch0 = np.concatenate([next(it) for _ in range(3)])
    assert len(set(epoch0.tolist())) == 9  # the incomplete last batch (1 example) is dropped
    epoch1 = np.concatenate([next(it) for _ in range(3)])
    assert it.state()["epoch"] == 1 and not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(epoch0, np.random.default_rng([7, 0]).permutation(10)[:9])
    ordered = D.BatchIterator(5, 2, shuffle=False)
    assert [next(ordered).tolist() for _ in range(3)] == [[0, 1], [2, 3], [0, 1]]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), b=st.integers(1, 8), seed=st.integers(0, 2**31 - 1), k=st.integers(0, 25),
       m=st.integers(1, 10))
def test_iterator_resume_is_exact(n, b, seed, k, m):
    if b > n:
        with pytest.raises(UserError, match=f"the dataset has {n} examples, fewer than one batch of {b}"):
            D.BatchIterator(n, b, seed)
        return
    ref = D.BatchIterator(n, b, seed)
    for _ in range(k):
        next(ref)
    state = json.loads(json.dumps(ref.state()))  # survives a JSON round trip (the checkpoint format)
    expected = [next(ref) for _ in range(m)]
    resumed = D.BatchIterator(n, b, seed).restore(state)
    for e in expected:
        np.testing.assert_array_equal(next(resumed), e)
    assert resumed.state() == ref.state()


def test_iterator_refuses_foreign_state():
    state = D.BatchIterator(10, 2, seed=1).state()
    with pytest.raises(UserError, match="data position in the checkpoint has num_examples=10 but this run has "
                                        "num_examples=12"):
        D.BatchIterator(12, 2, seed=1).restore(state)
    with pytest.raises(UserError, match="batch_size=2 but this run has batch_size=4"):
        D.BatchIterator(10, 4, seed=1).restore(state)
    with pytest.raises(UserError, match="batch size must be > 0"):
        D.BatchIterator(10, 0)


def test_dataloader_shards_and_resume():
    import datasets

    ds = datasets.Dataset.from_dict({"prompt": [f"p{i}" for i in range(12)]})
    collate = lambda rows: {"prompt": np.array(rows["prompt"])}  # noqa: E731
    full = D.DataLoader(ds, collate, batch_size=4, seed=3)
    shards = [D.DataLoader(ds, collate, batch_size=4, seed=3, shard=(i, 2)) for i in range(2)]
    for _ in range(5):
        whole = next(full)["prompt"].tolist()
        assert sum((next(s)["prompt"].tolist() for s in shards), []) == whole
    state = full.state()
    after = [next(full)["prompt"].tolist() for _ in range(4)]
    again = D.DataLoader(ds, collate, batch_size=4, seed=3).restore(state)
    assert [next(again)["prompt"].tolist() for _ in range(4)] == after
    with pytest.raises(UserError, match="batch size 4 is not divisible by the 3 processes"):
        D.DataLoader(ds, collate, batch_size=4, shard=(0, 3))


@settings(max_examples=40, deadline=None)
@given(prompts=st.lists(st.text("abcdefghij", max_size=9), min_size=1, max_size=4),
       responses=st.lists(st.text("klmnopqrst", max_size=9), min_size=4, max_size=4),
       p_len=st.integers(1, 8), r_len=st.integers(1, 8))
def test_encode_sequences_matches_python_reference(prompts, responses, p_len, r_len):
    tok = CharTok()
    responses = responses[: len(prompts)]
    out = D.encode_sequences(tok, prompts, responses, p_len, p_len + r_len)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        pi = tok.encode_prompt(p)[-p_len:]
        ri = (tok.encode_response(r) + [tok.eos_id])[:r_len]
        row = [tok.pad_id] * (p_len - len(pi)) + pi + ri + [tok.pad_id] * (r_len - len(ri))
        assert out["input_ids_BT"][b].tolist() == row
        expected = [0] * (p_len - len(pi)) + [1] * (len(pi) + len(ri)) + [0] * (r_len - len(ri))
        assert out["attention_mask_BT"][b].tolist() == expected
        assert out["loss_mask_BT"][b].tolist() == [0] * p_len + [1] * len(ri) + [0] * (r_len - len(ri))
        assert bool(out["truncated_B"][b]) == (len(r) + 1 > r_len)
        real = out["positions_BT"][b][out["attention_mask_BT"][b] == 1]
        assert real.tolist() == list(range(len(pi) + len(ri)))  # contiguous positions over real tokens
