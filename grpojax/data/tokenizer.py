"""Tokenizer wrapper over ``transformers.AutoTokenizer`` (a local directory or a hub id).

Prompts get the tokenizer's chat template (one user turn, optional system turn, generation prompt) when it
has one and ``chat_template`` is on; plain text otherwise. Responses are encoded as plain text without
special tokens; the EOS id is appended by the batching code. Pad id = the tokenizer's pad token, else EOS.

End tokens: a chat model may end a turn with more than one token (Qwen2.5-Instruct: ``<|im_end|>`` 151645,
its tokenizer's EOS, and ``<|endoftext|>`` 151643; its ``generation_config.json`` lists both). ``eos_ids``
holds every end id -- the tokenizer's EOS first, then the ``eos_token_id`` entries of ``generation_config.json``
and ``config.json`` in the tokenizer's and the model's directories -- and the sampler stops on any of them;
``eos_id`` (the tokenizer's) is the one appended to training responses.
Encodings are memoised per text (up to ``ENCODE_CACHE_SIZE`` texts per kind, then the memo starts over): a
training run tokenises every row once, not once per epoch.

Example::

    tok = load_tokenizer("configs/data/tiny_tokenizer")
    batch = tok.prompt_batch(["Hi there", "How do I bake bread?"], max_prompt_length=32)
    batch.prompt_ids_BT.shape  # (2, 32), left-padded
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from grpojax.cli import UserError, one_line

ENCODE_CACHE_SIZE = 1 << 17  # texts per kind (prompt / response)


class PromptBatch(NamedTuple):
    """Left-padded prompts: ``prompt_ids_BT`` int32 [B, T] and ``prompt_mask_BT`` int32 [B, T] (1 = token)."""

    prompt_ids_BT: np.ndarray
    prompt_mask_BT: np.ndarray


class Tokenizer:
    """A HF tokenizer plus the prompt-formatting and padding conventions of grpojax."""

    def __init__(self, hf_tokenizer, chat_template: bool = True, system_prompt: str | None = None,
                 name: str = "<tokenizer>", extra_eos_ids: Iterable[int] = ()):
        self.hf = hf_tokenizer
        self.name = name
        self.use_chat_template = bool(chat_template and getattr(hf_tokenizer, "chat_template", None))
        self.system_prompt = system_prompt
        eos = hf_tokenizer.eos_token_id
        pad = hf_tokenizer.pad_token_id
        if eos is None and pad is None:
            raise UserError(f"tokenizer {name}: has neither an EOS nor a pad token; set eos_token in its "
                            "tokenizer_config.json")
        self.eos_id = int(eos if eos is not None else pad)
        self.pad_id = int(pad if pad is not None else eos)
        self.eos_ids = tuple(dict.fromkeys([self.eos_id, *(int(i) for i in extra_eos_ids)]))
        self._memo: dict[str, dict[str, tuple[int, ...]]] = {"prompt": {}, "response": {}}

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def format_prompt(self, prompt: str) -> str:
        """The text the model sees for a user prompt (chat template with generation prompt, or as is)."""
        if not self.use_chat_template:
            return prompt
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
        messages.append({"role": "user", "content": prompt})
        return self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of the formatted prompt (a fresh list: callers may extend it)."""
        return self._memoised("prompt", prompt, self._encode_prompt)

    def encode_response(self, response: str) -> list[int]:
        """Token ids of the response text, no special tokens (a fresh list)."""
        return self._memoised("response", response, self._encode_response)

    def _memoised(self, kind: str, text: str, encode) -> list[int]:
        table = self._memo[kind]
        ids = table.get(text)
        if ids is None:
            if len(table) >= ENCODE_CACHE_SIZE:
                table.clear()
            ids = table[text] = encode(text)
        return list(ids)

    def _encode_prompt(self, prompt: str) -> tuple[int, ...]:
        text = self.format_prompt(prompt)
        return tuple(self.hf(text, add_special_tokens=not self.use_chat_template)["input_ids"])

    def _encode_response(self, response: str) -> tuple[int, ...]:
        return tuple(self.hf(response, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int], stop_at_eos: bool = True) -> str:
        """Text of ``ids`` (pads and specials dropped; cut at the first end token of any kind, ``eos_ids``,
        when ``stop_at_eos``)."""
        ids = [int(i) for i in ids]
        if stop_at_eos:
            end = next((j for j, i in enumerate(ids) if i in self.eos_ids), len(ids))
            ids = ids[:end]
        return self.hf.decode([i for i in ids if i != self.pad_id], skip_special_tokens=True)

    def prompt_batch(self, prompts: Sequence[str], max_prompt_length: int) -> PromptBatch:
        """Formats, encodes and left-pads prompts to ``[B, max_prompt_length]`` (long prompts keep their
        last ``max_prompt_length`` tokens, so the generation prompt survives)."""
        from grpojax.data.batching import left_pad

        ids, mask = left_pad([self.encode_prompt(p) for p in prompts], max_prompt_length, self.pad_id)
        return PromptBatch(ids, mask)


def _checkpoint_json(path: str, name: str) -> tuple[str, dict] | None:
    """``(file, dict)`` of ``name`` in a checkpoint directory or a hub id's (cached) files; None if absent."""
    file = os.path.join(os.path.expanduser(path), name)
    if not os.path.isdir(os.path.expanduser(path)):
        try:  # a hub id: its file in the Hugging Face cache (or fetched when online)
            from huggingface_hub import hf_hub_download

            file = hf_hub_download(path, name)
        except Exception:  # noqa: BLE001 -- not a hub id, offline and not cached, no such file
            return None
    if not os.path.isfile(file):
        return None
    try:
        with open(file, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError):
        d = None
    if not isinstance(d, dict):
        raise UserError(f"{file}: not a JSON object")
    return file, d


def config_eos_ids(path: str | None) -> list[int]:
    """The ``eos_token_id`` entries (an int or a list) of ``generation_config.json`` and ``config.json`` in a
    checkpoint directory, or of a hub id's cached files; ``[]`` when there are none."""
    if not path:
        return []
    out = []
    for name in ("generation_config.json", "config.json"):
        found = _checkpoint_json(path, name)
        if found is None:
            continue
        file, value = found[0], found[1].get("eos_token_id")
        values = value if isinstance(value, list) else [value]
        if any(v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0) for v in values):
            raise UserError(f"{file}: eos_token_id must be a non-negative integer or a list of them, got {value!r}")
        out += [int(v) for v in values if v is not None]
    return out


def load_tokenizer(path: str, chat_template: bool = True, system_prompt: str | None = None,
                   model_path: str | None = None) -> Tokenizer:
    """``AutoTokenizer.from_pretrained(path)`` wrapped; UserError with a hint when it cannot be loaded.

    The end ids (``Tokenizer.eos_ids``) are the tokenizer's EOS plus :func:`config_eos_ids` of ``path`` and
    of the model directory ``model_path`` (when it differs)."""
    from transformers import AutoTokenizer

    local = os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") != 1
    if local and not os.path.isdir(os.path.expanduser(path)):
        raise UserError(f"tokenizer directory not found: {path} (hub ids look like org/name)")
    try:
        hf = AutoTokenizer.from_pretrained(os.path.expanduser(path))
    except Exception as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") in ("1", "true", "True")
        hint = ("offline mode is on and it is not cached: run once online or point tokenizer.path at a local "
                "directory" if offline else "check the path / hub id")
        raise UserError(f"could not load tokenizer {path!r}: {hint} [{type(e).__name__}: "
                        f"{one_line(str(e))[:200]}]") from None
    extra = config_eos_ids(path) + (config_eos_ids(model_path) if model_path and model_path != path else [])
    return Tokenizer(hf, chat_template=chat_template, system_prompt=system_prompt, name=path, extra_eos_ids=extra)


def write_generation_config(out_dir: str, tok: Tokenizer, source: str | None = None) -> str:
    """``out_dir/generation_config.json`` of an exported policy: the ``source`` checkpoint's (its sampling
    defaults kept) with ``eos_token_id`` = every end id of ``tok`` and its pad id, so the export stops where
    training did, in grpojax (:func:`load_tokenizer`) and in ``transformers``' ``generate``."""
    found = _checkpoint_json(source, "generation_config.json") if source else None
    d = dict(found[1]) if found else {}
    d["eos_token_id"] = list(tok.eos_ids) if len(tok.eos_ids) > 1 else tok.eos_ids[0]
    d.setdefault("pad_token_id", tok.pad_id)
    file = os.path.join(out_dir, "generation_config.json")
    with open(file, "w", encoding="utf-8") as f:
        json.dump(d, f, indent=2)
    return file
