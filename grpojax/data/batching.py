"""Fixed-shape numpy batches and a deterministic, resumable batch iterator.

Sequence layout (every batch of one run has the same shapes, so steps compile once)::

    |<- P = max_prompt_length ->|<- max_length - P ------------>|
    [pad pad p1 p2 p3 p4 p5 p6 ][r1 r2 r3 EOS pad pad pad pad  ]
     prompt left-padded          response right-padded

Truncation: a prompt longer than P keeps its LAST P tokens (the chat template's generation prompt sits at
the end); a response keeps its FIRST ``max_length - P`` tokens, EOS included only if it fits
(``truncated_B`` marks responses that lost their EOS). ``positions_BT = max(cumsum(mask) - 1, 0)``.

All arrays are int32 (``labels_BR`` float32, ``truncated_B`` bool); keys carry shape suffixes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from grpojax.cli import UserError


def left_pad(seqs: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``[B, length]`` ids and mask; each sequence keeps its last ``length`` tokens, pads on the left."""
    ids = np.full((len(seqs), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(seqs), length), dtype=np.int32)
    for b, s in enumerate(seqs):
        s = list(s)[-length:]
        if s:
            ids[b, length - len(s):] = s
            mask[b, length - len(s):] = 1
    return ids, mask


def right_pad(seqs: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``[B, length]`` ids and mask; each sequence keeps its first ``length`` tokens, pads on the right."""
    ids = np.full((len(seqs), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(seqs), length), dtype=np.int32)
    for b, s in enumerate(seqs):
        s = list(s)[:length]
        ids[b, : len(s)] = s
        mask[b, : len(s)] = 1
    return ids, mask


def positions_from_mask(mask_BT: np.ndarray) -> np.ndarray:
    """Position ids that skip left padding: ``max(cumsum(mask) - 1, 0)``."""
    return np.maximum(np.cumsum(mask_BT, axis=1) - 1, 0).astype(np.int32)


def encode_sequences(tok, prompts: Sequence[str], responses: Sequence[str], max_prompt_length: int,
                     max_length: int, prefix: str = "") -> dict[str, np.ndarray]:
    """Prompt + response batch: ``{prefix}input_ids_BT, attention_mask_BT, loss_mask_BT, positions_BT,
    truncated_B`` with T = ``max_length``. ``loss_mask`` marks response tokens (EOS included)."""
    if max_length <= max_prompt_length:
        raise ValueError(f"max_length={max_length} must exceed max_prompt_length={max_prompt_length}")
    budget = max_length - max_prompt_length
    p_ids, p_mask = left_pad([tok.encode_prompt(p) for p in prompts], max_prompt_length, tok.pad_id)
    full = [tok.encode_response(r) + [tok.eos_id] for r in responses]
    r_ids, r_mask = right_pad(full, budget, tok.pad_id)
    mask = np.concatenate([p_mask, r_mask], axis=1)
    return {
        f"{prefix}input_ids_BT": np.concatenate([p_ids, r_ids], axis=1),
        f"{prefix}attention_mask_BT": mask,
        f"{prefix}loss_mask_BT": np.concatenate([np.zeros_like(p_mask), r_mask], axis=1),
        f"{prefix}positions_BT": positions_from_mask(mask),
        f"{prefix}truncated_B": np.array([len(f) > budget for f in full], dtype=bool),
    }


def prompt_batch(tok, rows: dict, max_prompt_length: int, **_) -> dict[str, np.ndarray]:
    """GRPO prompts: ``prompt_ids_BT, prompt_mask_BT`` (left-padded)."""
    pb = tok.prompt_batch(rows["prompt"], max_prompt_length)
    return {"prompt_ids_BT": pb.prompt_ids_BT, "prompt_mask_BT": pb.prompt_mask_BT}


def sft_batch(tok, rows: dict, max_prompt_length: int, max_length: int) -> dict[str, np.ndarray]:
    return encode_sequences(tok, rows["prompt"], rows["response"], max_prompt_length, max_length)


def reward_batch(tok, rows: dict, max_prompt_length: int, max_length: int) -> dict[str, np.ndarray]:
    """Sequences plus ``labels_BR`` (float32, NaN -> 0) and ``label_mask_BR`` (1 where a label exists)."""
    out = encode_sequences(tok, rows["prompt"], rows["response"], max_prompt_length, max_length)
    labels = np.asarray(rows["labels"], dtype=np.float32)
    out["label_mask_BR"] = (~np.isnan(labels)).astype(np.int32)
    out["labels_BR"] = np.nan_to_num(labels, nan=0.0)
    return out


def preference_batch(tok, rows: dict, max_prompt_length: int, max_length: int) -> dict[str, np.ndarray]:
    """``chosen_*`` and ``rejected_*`` sequences sharing the prompt, plus ``group_B`` int32 ids."""
    out = encode_sequences(tok, rows["prompt"], rows["chosen"], max_prompt_length, max_length, "chosen_")
    out.update(encode_sequences(tok, rows["prompt"], rows["rejected"], max_prompt_length, max_length, "rejected_"))
    out["group_B"] = np.asarray(rows["group"], dtype=np.int32)
    return out


COLLATE = {"grpo": prompt_batch, "sft": sft_batch, "reward": reward_batch, "dpo": preference_batch}


def padded_batches(n: int, batch_size: int):
    """``(indices, real)`` per batch of ``batch_size`` rows covering ``range(n)`` once, in order; the ragged
    last batch is padded with repeats of its first row, so every evaluation batch has one shape (nothing
    compiles again for the remainder, and the rows stay divisible by the mesh's batch axes). Keep the
    first ``real`` rows of each batch's outputs."""
    for i in range(0, n, batch_size):
        real = min(batch_size, n - i)
        yield list(range(i, i + real)) + [i] * (batch_size - real), real


class BatchIterator:
    """Deterministic, resumable order of example indices.

    Epoch e visits ``np.random.default_rng([seed, e]).permutation(n)`` (or ``arange(n)`` without shuffle)
    in consecutive slices of ``batch_size``; an incomplete last slice is dropped, so every batch is full.
    ``state()`` is a small JSON-able dict ``{epoch, index, seed, num_examples, batch_size}``; a new iterator
    built with ``restore(state)`` continues exactly where the saved one stopped.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int = 0, shuffle: bool = True):
        if batch_size <= 0:
            raise UserError(f"batch size must be > 0, got {batch_size}")
        if num_examples < batch_size:
            raise UserError(f"the dataset has {num_examples} examples, fewer than one batch of {batch_size}")
        self.num_examples, self.batch_size, self.seed, self.shuffle = num_examples, batch_size, seed, shuffle
        self.epoch, self.index = 0, 0
        self._order_epoch, self._order = -1, None

    def _epoch_order(self) -> np.ndarray:
        if self._order_epoch != self.epoch:
            n = self.num_examples
            self._order = (np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle
                           else np.arange(n))
            self._order_epoch = self.epoch
        return self._order

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        if self.index + self.batch_size > self.num_examples:
            self.epoch, self.index = self.epoch + 1, 0
        idx = self._epoch_order()[self.index : self.index + self.batch_size]
        self.index += self.batch_size
        return idx

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed,
                "num_examples": self.num_examples, "batch_size": self.batch_size}

    def restore(self, state: dict) -> BatchIterator:
        """Continues from ``state`` (from :meth:`state`); refuses a state from different data or batch size."""
        for k in ("num_examples", "batch_size", "seed"):
            if state.get(k) != getattr(self, k):
                raise UserError(f"data position in the checkpoint has {k}={state.get(k)} but this run has "
                                f"{k}={getattr(self, k)}; resume with the same data and batch size")
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        return self


class DataLoader:
    """Batches of a normalised dataset: ``BatchIterator`` order -> rows -> ``collate`` -> numpy dict.

    ``shard=(i, n)`` keeps rows ``[i*b/n, (i+1)*b/n)`` of every global batch (process i of n on a
    multi-host run, which all iterate the same global order). ``last_indices``: the dataset rows of the
    batch ``next`` returned last (this host's).
    """

    def __init__(self, dataset, collate: Callable[[dict], dict], batch_size: int, seed: int = 0,
                 shuffle: bool = True, shard: tuple[int, int] = (0, 1)):
        i, n = shard
        if batch_size % n:
            raise UserError(f"batch size {batch_size} is not divisible by the {n} processes")
        self.dataset, self.collate, self.shard = dataset, collate, shard
        self.iterator = BatchIterator(len(dataset), batch_size, seed, shuffle)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        idx = next(self.iterator)
        i, n = self.shard
        per = len(idx) // n
        self.last_indices = idx[i * per : (i + 1) * per]  # the dataset rows of the batch just returned
        return self.collate(self.dataset[self.last_indices.tolist()])

    def state(self) -> dict:
        return self.iterator.state()

    def restore(self, state: dict) -> DataLoader:
        self.iterator.restore(state)
        return self
