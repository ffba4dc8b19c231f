"""The packer (``grpojax.data.packing``): first-fit-decreasing order, no example split, the refusals."""

import numpy as np
import pytest

from grpojax.cli import UserError
from grpojax.data.packing import (
    agreed_shape,
    first_fit_decreasing,
    pack_preference,
    pack_reward,
    pack_sequences,
    rows_multiple_of,
    slot_mask,
)


def test_first_fit_decreasing_places_longest_first_into_the_first_row_with_room():
    # longest first: 7 (#1), 5 (#2), 4 (#4), 3 (#0), 2 (#3); capacity 10
    assert first_fit_decreasing([3, 7, 5, 2, 4], 10) == [[1, 0], [2, 4], [3]]
    assert first_fit_decreasing([4, 4, 4, 4], 8) == [[0, 1], [2, 3]]  # ties in data order
    assert first_fit_decreasing([10, 1], 10) == [[0], [1]]  # a full row takes nothing more


def test_too_long_example_is_refused_naming_its_dataset_row():
    with pytest.raises(UserError) as e:
        first_fit_decreasing([3, 12, 4], 10, names=[40, 41, 42])
    assert "dataset row 41 has 12 tokens" in str(e.value) and "\n" not in str(e.value)


def test_example_whose_first_token_is_a_loss_token_is_refused():
    with pytest.raises(UserError, match="dataset row 7 has an empty prompt"):
        pack_sequences([np.arange(3)], [np.ones(3, np.int32)], 8, 0, names=[7])


def test_packed_rows_hold_every_example_whole_with_restarting_positions():
    r = np.random.default_rng(0)
    lengths = r.integers(1, 9, 20)
    seqs = [r.integers(5, 100, n).astype(np.int32) for n in lengths]
    masks = [(np.arange(n) >= n // 2).astype(np.int32) * (np.arange(n) > 0) for n in lengths]
    out, index, X = pack_sequences(seqs, masks, 12, pad_id=1, rows_multiple=4)
    rows, T = out["input_ids_BT"].shape
    assert T == 12 and rows % 4 == 0 and rows < len(seqs) and X & (X - 1) == 0
    assert out["input_ids_BT"][out["segment_ids_BT"] == 0].tolist() == [1] * int((out["segment_ids_BT"] == 0).sum())
    seen = 0
    for i, (s, m) in enumerate(zip(seqs, masks)):
        row, slot = divmod(int(index[i]), X)
        where = np.flatnonzero(out["segment_ids_BT"][row] == slot + 1)
        assert np.array_equal(where, np.arange(where[0], where[0] + len(s)))  # contiguous, not split
        np.testing.assert_array_equal(out["input_ids_BT"][row, where], s)
        np.testing.assert_array_equal(out["positions_BT"][row, where], np.arange(len(s)))
        np.testing.assert_array_equal(out["loss_mask_BT"][row, where], m)
        seen += len(s)
    assert seen == int((out["segment_ids_BT"] > 0).sum())
    again, index2, _ = pack_sequences(seqs, masks, 12, pad_id=1, rows_multiple=4)  # deterministic
    assert all(np.array_equal(out[k], again[k]) for k in out) and np.array_equal(index, index2)


def test_shapes_round_up_rows_and_slots():
    assert agreed_shape(5, 3, rows_multiple=4) == (8, 4)
    assert agreed_shape(8, 1, rows_multiple=4) == (8, 1)
    assert agreed_shape(0, 5) == (1, 8)
    assert rows_multiple_of(8, 2, 1) == 8 and rows_multiple_of(4, 3, 2) == 6


def _collated(prefix, seqs, P=4, T=10):
    """A batch in grpojax.data.encode_sequences' layout: prompt (first 2 tokens) left-padded to P."""
    out = {f"{prefix}{k}": np.zeros((len(seqs), T), np.int32)
           for k in ("input_ids_BT", "attention_mask_BT", "loss_mask_BT")}
    for b, s in enumerate(seqs):
        cols = list(range(P - 2, P)) + list(range(P, P + len(s) - 2))
        out[f"{prefix}input_ids_BT"][b, cols] = s
        out[f"{prefix}attention_mask_BT"][b, cols] = 1
        out[f"{prefix}loss_mask_BT"][b, cols[2:]] = 1
    return out


def test_pack_reward_puts_labels_in_their_examples_slots():
    raw = _collated("", [[5, 6, 7], [8, 9, 10, 11, 12], [13, 14, 15, 16]])
    raw["labels_BR"] = np.asarray([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    raw["label_mask_BR"] = np.asarray([[1, 0], [1, 1], [0, 1]], np.int32)
    out = pack_reward(raw, 8, 0)
    assert out["input_ids_BT"].shape == (2, 8) and out["labels_BXR"].shape == (2, 2, 2)
    # FFD: #1 (5 tokens) + #0 (3) in row 0, #2 in row 1
    np.testing.assert_array_equal(out["labels_BXR"][0], [[3.0, 4.0], [1.0, 2.0]])
    np.testing.assert_array_equal(out["label_mask_BXR"][0], [[1, 1], [1, 0]])
    np.testing.assert_array_equal(out["label_mask_BXR"][1], [[0, 1], [0, 0]])  # slot 1 of row 1 is empty


def test_pack_preference_indexes_each_pairs_two_sequences():
    raw = {**_collated("chosen_", [[5, 6, 7], [8, 9, 10, 11]]), **_collated("rejected_", [[5, 6, 20, 21], [8, 9, 22]])}
    out = pack_preference(raw, 8, 0)
    X = out["slot_mask_BX"].shape[1]
    flat_ids = [out["input_ids_BT"][i // X][out["segment_ids_BT"][i // X] == i % X + 1].tolist()
                for i in range(out["slot_mask_BX"].size)]
    assert [flat_ids[i] for i in out["chosen_index_P"]] == [[5, 6, 7], [8, 9, 10, 11]]
    assert [flat_ids[i] for i in out["rejected_index_P"]] == [[5, 6, 20, 21], [8, 9, 22]]
    np.testing.assert_array_equal(out["slot_mask_BX"], slot_mask(out["segment_ids_BT"], X))
    assert int(out["slot_mask_BX"].sum()) == 4


def test_packing_follows_the_loaders_order_resume_and_process_split(monkeypatch):
    """Packing runs after the loader: a restored loader packs the same next batch, and each process packs
    its own rows of the global batch (a preference batch's flat indices start at its first global row)."""
    import functools
    import os

    from grpojax.config.sections import DataConfig
    from grpojax.data import COLLATE, DataLoader, load_from_config, load_tokenizer, packing

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tok = load_tokenizer(os.path.join(root, "configs/data/tiny_tokenizer"), True, None)
    d = DataConfig(path=os.path.join(root, "configs/data/tiny_preference.jsonl"), max_prompt_length=32,
                   max_length=112, group_column="group")
    ds = load_from_config(d, "dpo")
    collate = functools.partial(COLLATE["dpo"], tok, max_prompt_length=32, max_length=112)
    first = DataLoader(ds, collate, 8, seed=3)
    next(first)
    saved, want = first.state(), pack_preference(next(first), 112, tok.pad_id)
    again = DataLoader(ds, collate, 8, seed=3).restore(saved)
    got = pack_preference(next(again), 112, tok.pad_id)
    assert all(np.array_equal(want[k], got[k]) for k in want)
    halves = [DataLoader(ds, collate, 8, seed=3, shard=(i, 2)).restore(saved) for i in range(2)]
    monkeypatch.setattr(packing.jax, "process_index", lambda: 1)
    second = pack_preference(next(halves[1]), 112, tok.pad_id)
    rows, X = second["slot_mask_BX"].shape
    assert second["chosen_index_P"].min() >= rows * X  # process 1's rows follow process 0's
    assert len(second["chosen_index_P"]) == 4 and set(halves[1].last_indices) <= set(again.last_indices)
