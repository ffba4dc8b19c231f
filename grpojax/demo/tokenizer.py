"""The demo world's tokenizer: a small byte-level BPE trained with ``tokenizers`` on the world's text.

Chat format: one space after each of ``<|user|>`` and ``<|assistant|>``, so that every word is a
space-prefixed BPE piece wherever it stands. Tokenising prompt and completion separately and
concatenating gives the same ids as tokenising the joined text, because special tokens split the text::

    format_prompt("how do i bake bread ?")         == "<|user|> how do i bake bread ?<|assistant|>"
    format_completion("first heat the oven .")     == " first heat the oven .<|eos|>"

Special tokens and ids: ``<|pad|>`` 0, ``<|bos|>`` 1, ``<|eos|>`` 2, ``<|user|>`` 3, ``<|assistant|>`` 4.
No token is added automatically (no BOS); the chat template renders the same format. Byte-level
pre-tokenisation (as Qwen's) with all 256 byte symbols makes any text encodable and decoding exact. With the
default vocabulary limit every word of the world is a single token, so the longest request + response of
the world is 48 tokens (markers and EOS included).
"""

from __future__ import annotations

import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, BOS, EOS, USER, ASSISTANT = "<|pad|>", "<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = (PAD, BOS, EOS, USER, ASSISTANT)
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}" + USER + " {{ m['content'] }}" + ASSISTANT + "{% endif %}"
    "{% if m['role'] == 'assistant' %} {{ m['content'] }}" + EOS + "{% endif %}"
    "{% endfor %}"
)
DEFAULT_VOCAB_SIZE = 1280


def format_prompt(request: str) -> str:
    """``<|user|> {request}<|assistant|>``: the text a policy continues."""
    return f"{USER} {request}{ASSISTANT}"


def format_completion(response: str) -> str:
    """`` {response}<|eos|>``: the text a policy should generate (note the leading space)."""
    return f" {response}{EOS}"


def strip_completion(text: str) -> str:
    """The response part of generated text: cut at the first ``<|eos|>`` and drop other special tokens."""
    text = text.split(EOS, 1)[0]
    for tok in SPECIAL_TOKENS:
        text = text.replace(tok, "")
    return text.strip()


def train_tokenizer(texts: list[str], vocab_size: int = DEFAULT_VOCAB_SIZE):
    """A byte-level BPE (``tokenizers``) trained on ``texts``, wrapped as a HF fast tokenizer.

    The 256 byte symbols are always in the vocabulary, so ``vocab_size`` must exceed 256 + 5 specials;
    merges fill the rest; training stops early once every pre-tokenised word is one token (at the default
1280 limit, every word of the world is).
    """
    if vocab_size <= 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size}; must exceed {256 + len(SPECIAL_TOKENS)} "
                         "(256 bytes + special tokens)")
    if not texts:
        raise ValueError("train_tokenizer: no training texts")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    from transformers import PreTrainedTokenizerFast  # heavy import, only when a tokenizer is built

    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                 additional_special_tokens=[USER, ASSISTANT])
    hf.chat_template = CHAT_TEMPLATE
    hf.padding_side = "right"
    return hf


def save_tokenizer(tokenizer, out_dir: str) -> str:
    """Save as a normal HF tokenizer directory (``AutoTokenizer.from_pretrained(out_dir)`` loads it)."""
    os.makedirs(out_dir, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
