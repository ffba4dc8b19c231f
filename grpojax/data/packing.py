"""Sequence packing: several short examples per row of the run's sequence length (``data.packing``).

An optimizer step reads the same ``train.batch_size`` examples (sequences, or pairs of sequences) in the
same data order as an unpacked run: the loader, its resume position and the multi-process split of
:class:`grpojax.data.DataLoader` are unchanged. Each host collates its examples as usual (so truncation is
exactly the unpacked run's), keeps each sequence's real tokens (``attention_mask_BT == 1``) and packs them
into rows of ``T = data.max_length`` tokens::

    row 0: [a a a a a b b b b c c c 0 0]   segment_ids_BT  [1 1 1 1 1 2 2 2 2 3 3 3 0 0]
                                           positions_BT    [0 1 2 3 4 0 1 2 3 0 1 2 0 0]

Placement (:func:`first_fit_decreasing`): longest first (ties in data order), each into the first row with
room, a new row when none has; deterministic, and no example is ever split across rows. An example longer
than the row is refused (one line naming its dataset row). Segment ``k >= 1`` of a row is its ``k``-th
example, 0 is padding; the model (``Qwen(..., segment_ids_BT=...)``) lets a token read only earlier tokens
of its own segment, and positions restart at 0 for each example, so every example's hidden states are those
of the unpacked forward.

Per-example outputs live in ``X`` slots per row (``[B, X, ...]``, slot ``x`` = segment ``x + 1``; empty
slots are masked), so micro-batches split along rows keep each example with its row. A sequence's flat
slot index ``row * X + slot`` addresses ``[B * X]`` per-sequence values (preference pairs re-formed from
their chosen and rejected sequences).

Shapes: the row count is rounded up to ``rows_multiple`` (the mesh's batch axes times micro-batches) and
``X`` up to a power of two, the largest over processes (:func:`agreed_shape`), so every process builds
the same global shape and only a few distinct shapes ever compile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np

from grpojax.cli import UserError


def first_fit_decreasing(lengths: Sequence[int], capacity: int, names: Sequence | None = None) -> list[list[int]]:
    """Example indices per row: longest first (ties by index), each into the first row it fits in.

    Within a row the examples keep placement order. ``names[i]`` (default ``i``) names example ``i`` in
    the refusal of one longer than ``capacity``."""
    for i, n in enumerate(lengths):
        if n > capacity:
            name = i if names is None else names[i]
            raise UserError(f"data.packing: dataset row {name} has {n} tokens, more than a packed row of "
                            f"{capacity} (data.max_length)")
    rows, room = [], []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def agreed_shape(num_rows: int, num_slots: int, rows_multiple: int = 1) -> tuple[int, int]:
    """``(rows, X)``: ``num_rows`` rounded up to a multiple of ``rows_multiple`` and ``num_slots`` up to a
    power of two, each the largest over the processes of a multi-host run (a collective all of them run)."""
    rows = -(-max(num_rows, 1) // rows_multiple) * rows_multiple
    slots = 1 << max(num_slots - 1, 0).bit_length()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        both = np.asarray(multihost_utils.process_allgather(np.asarray([rows, slots], np.int32)))
        rows, slots = (int(v) for v in both.reshape(-1, 2).max(axis=0))
    return rows, slots


def real_tokens(raw: dict, prefix: str = "") -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The real tokens of each row of a collated batch (:func:`grpojax.data.encode_sequences` layout) and
    their loss masks: ``{prefix}input_ids_BT`` / ``loss_mask_BT`` where ``attention_mask_BT`` is set."""
    ids, att, loss = (np.asarray(raw[f"{prefix}{k}"]) for k in ("input_ids_BT", "attention_mask_BT", "loss_mask_BT"))
    keep = att.astype(bool)
    return [ids[b][keep[b]] for b in range(len(ids))], [loss[b][keep[b]] for b in range(len(ids))]


def pack_sequences(seqs: Sequence[np.ndarray], loss_masks: Sequence[np.ndarray], capacity: int, pad_id: int, *,
                   rows_multiple: int = 1, names: Sequence | None = None) -> tuple[dict, np.ndarray, int]:
    """Packs token sequences into rows of ``capacity`` tokens.

    Returns ``(batch, index_N, X)``: ``batch`` holds int32 ``input_ids_BT`` (``pad_id`` in the gaps),
    ``segment_ids_BT`` (1, 2, ... per example, 0 = padding), ``positions_BT`` (0 at each example's start)
    and ``loss_mask_BT``; ``index_N[i] = row * X + slot`` of sequence ``i`` (segment ``slot + 1``). A
    sequence whose first token is in the loss mask is refused: nothing before it in its segment predicts it
    (the unpacked layout would predict it from padding)."""
    lengths = [len(s) for s in seqs]
    for i, m in enumerate(loss_masks):
        if len(m) and m[0]:
            name = i if names is None else names[i]
            raise UserError(f"data.packing: dataset row {name} has an empty prompt; its first response token "
                            "has nothing to be predicted from")
    plan = first_fit_decreasing(lengths, capacity, names)
    rows, X = agreed_shape(len(plan), max(len(r) for r in plan), rows_multiple)
    out = {"input_ids_BT": np.full((rows, capacity), pad_id, np.int32),
           "segment_ids_BT": np.zeros((rows, capacity), np.int32),
           "positions_BT": np.zeros((rows, capacity), np.int32),
           "loss_mask_BT": np.zeros((rows, capacity), np.int32)}
    index_N = np.zeros((len(seqs),), np.int32)
    for r, members in enumerate(plan):
        t = 0
        for slot, i in enumerate(members):
            n = lengths[i]
            out["input_ids_BT"][r, t:t + n] = seqs[i]
            out["segment_ids_BT"][r, t:t + n] = slot + 1
            out["positions_BT"][r, t:t + n] = np.arange(n)
            out["loss_mask_BT"][r, t:t + n] = loss_masks[i]
            index_N[i] = r * X + slot
            t += n
    return out, index_N, X


def pack_sft(raw: dict, capacity: int, pad_id: int, *, rows_multiple: int = 1, names=None) -> dict:
    """A collated SFT batch -> packed rows: ``input_ids_BT, segment_ids_BT, positions_BT, loss_mask_BT``."""
    seqs, masks = real_tokens(raw)
    return pack_sequences(seqs, masks, capacity, pad_id, rows_multiple=rows_multiple, names=names)[0]


def pack_reward(raw: dict, capacity: int, pad_id: int, *, rows_multiple: int = 1, names=None) -> dict:
    """A collated regression reward batch -> packed rows plus each example's labels in its slot:
    ``labels_BXR`` (float32) and ``label_mask_BXR`` (0 in empty slots)."""
    seqs, masks = real_tokens(raw)
    out, index_N, X = pack_sequences(seqs, masks, capacity, pad_id, rows_multiple=rows_multiple, names=names)
    labels, lmask = np.asarray(raw["labels_BR"], np.float32), np.asarray(raw["label_mask_BR"], np.int32)
    rows, R = out["input_ids_BT"].shape[0], labels.shape[1]
    out["labels_BXR"] = np.zeros((rows * X, R), np.float32)
    out["label_mask_BXR"] = np.zeros((rows * X, R), np.int32)
    out["labels_BXR"][index_N], out["label_mask_BXR"][index_N] = labels, lmask
    out["labels_BXR"] = out["labels_BXR"].reshape(rows, X, R)
    out["label_mask_BXR"] = out["label_mask_BXR"].reshape(rows, X, R)
    return out


def pack_preference(raw: dict, capacity: int, pad_id: int, *, rows_multiple: int = 1, names=None) -> dict:
    """A collated preference batch (P pairs) -> the 2P chosen and rejected sequences packed together, plus
    ``chosen_index_P`` / ``rejected_index_P`` (flat slot indices into the GLOBAL rows: process ``i``'s rows
    follow those of processes ``0 .. i-1``) and ``slot_mask_BX`` (1 on the slots holding a sequence)."""
    chosen, c_masks = real_tokens(raw, "chosen_")
    rejected, r_masks = real_tokens(raw, "rejected_")
    P = len(chosen)
    names = None if names is None else [*names, *names]
    out, index_N, X = pack_sequences(chosen + rejected, c_masks + r_masks, capacity, pad_id,
                                     rows_multiple=rows_multiple, names=names)
    rows = out["input_ids_BT"].shape[0]
    index_N = index_N + jax.process_index() * rows * X
    out["chosen_index_P"], out["rejected_index_P"] = index_N[:P], index_N[P:]
    out["slot_mask_BX"] = slot_mask(out["segment_ids_BT"], X)
    return out


def slot_mask(segment_ids_BT: np.ndarray, num_slots: int) -> np.ndarray:
    """``[B, X]`` int32: 1 where row ``b`` has a segment ``x + 1``."""
    present = np.zeros((segment_ids_BT.shape[0], num_slots + 1), np.int32)
    np.put_along_axis(present, segment_ids_BT.astype(np.int64), 1, axis=1)
    return present[:, 1:]


def rows_multiple_of(batch_axes: int, num_micro: int, num_processes: int) -> int:
    """This process's row quantum: the global rows must divide over the mesh's batch axes and into
    ``num_micro`` micro-batches, and each of ``num_processes`` hosts holds an equal share."""
    return math.lcm(batch_axes, num_micro, num_processes) // num_processes


def fill(batch: dict) -> float:
    """Share of the packed rows' token slots that hold real tokens."""
    seg = np.asarray(batch["segment_ids_BT"])
    return float(np.mean(seg > 0))
