"""A tiny offline stand-in for the Qwen2.5 hub checkpoints the shipped presets name, in a HF hub cache.

:func:`build_hub_cache` writes ``<hf_home>/hub/models--Qwen--Qwen2.5-{0.5B,7B,14B}[-Instruct]`` in the
layout ``huggingface_hub`` keeps (``blobs/<sha256>``, ``snapshots/<commit>/<file>`` -> ``../../blobs/...``,
``refs/main``), so that with ``HF_HOME=<hf_home> HF_HUB_OFFLINE=1`` a preset's own ``model.path`` (a hub
id) resolves through ``snapshot_download`` / ``AutoTokenizer.from_pretrained`` with no override.

What each repository holds, mirroring the real ones in everything but size:

- ``config.json``: a random-weight ``Qwen2ForCausalLM`` (2 layers, hidden 64; query / KV heads 8 / 2
  (0.5B), 8 / 4 (7B), 16 / 8 (14B): grouped-query attention as in Qwen2.5, and the KV heads of 7B / 14B
  divisible by their presets' ``mesh.rollout_tensor`` 4 / 8, as the real 4 / 8 KV heads are), q/k/v biases,
  ``torch_dtype`` bfloat16, the embedding padded past the tokenizer's length (Qwen's 151,936
  rows vs 151,665 tokens), tied embeddings for 0.5B and untied for 7B / 14B, and ``eos_token_id`` =
  ``<|im_end|>`` (Instruct) or ``<|endoftext|>`` (base) as the hub files have.
- ``model.safetensors`` in bfloat16.
- a byte-level BPE tokenizer (``tokenizers``) trained on the stand-in data's text, with Qwen's special
  tokens ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` (ids right after the BPE vocabulary, as in
  Qwen), Qwen2.5's chat template (its default system prompt; tool branches left out), eos ``<|im_end|>``
  (Instruct) or ``<|endoftext|>`` (base), pad ``<|endoftext|>``.
- ``generation_config.json``: Instruct ``eos_token_id: [<|im_end|>, <|endoftext|>]`` (both end ids, as
  Qwen2.5-Instruct's), base ``eos_token_id: <|endoftext|>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
SIZES = ("0.5B", "7B", "14B")
HEADS = {"0.5B": (8, 2), "7B": (8, 4), "14B": (16, 8)}  # (query heads, KV heads)
BPE_VOCAB = 600
COMMIT = "5a1e0b3c0de0000000000000000000000000001"  # any 40-hex commit: refs/main points at it

# Qwen2.5's chat template without the tool-call branches (the real one's output for plain chats).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or "
    "(message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def repo_ids() -> list[str]:
    """Every hub id the stand-in cache answers: base and -Instruct for each size."""
    return [f"Qwen/Qwen2.5-{s}{suffix}" for s in SIZES for suffix in ("", "-Instruct")]


def train_tokenizer(texts):
    """A byte-level BPE (Qwen's pre-tokenisation family) over ``texts`` plus Qwen's three specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens(list(SPECIALS))  # ids len(BPE vocab) + 0, 1, 2, as in Qwen
    return tok


def _tokenizer_files(out_dir: str, tok, instruct: bool) -> None:
    """``tokenizer.json``, ``vocab.json`` / ``merges.txt`` and a ``tokenizer_config.json`` in the hub
    repositories' own layout (``Qwen2Tokenizer``, the chat template inside, eos / pad as Qwen2.5's)."""
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    tok.model.save(out_dir)  # vocab.json, merges.txt
    added = {str(tok.token_to_id(s)): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                       "single_word": False, "special": True} for s in SPECIALS}
    config = {"add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added,
              "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "bos_token": None,
              "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
              "eos_token": "<|im_end|>" if instruct else "<|endoftext|>", "errors": "replace",
              "model_max_length": 131072, "pad_token": "<|endoftext|>", "split_special_tokens": False,
              "tokenizer_class": "Qwen2Tokenizer", "unk_token": None}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def _model_files(out_dir: str, vocab_rows: int, ids: dict, instruct: bool, tied: bool, heads: tuple,
                 seed: int) -> None:
    """bf16 ``model.safetensors`` of a random ``Qwen2ForCausalLM``; ``config.json`` and
    ``generation_config.json`` written in the hub files' own layout (``torch_dtype``, top-level
    ``rope_theta``, ``sliding_window`` with ``use_sliding_window: false``), not transformers 5's."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": ids["<|endoftext|>"],
              "eos_token_id": ids["<|im_end|>"] if instruct else ids["<|endoftext|>"], "hidden_act": "silu",
              "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 128,
              "max_position_embeddings": 32768, "max_window_layers": 2, "model_type": "qwen2",
              "num_attention_heads": heads[0], "num_hidden_layers": 2, "num_key_value_heads": heads[1],
              "rms_norm_eps": 1e-06,
              "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": tied,
              "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": True,
              "use_sliding_window": False, "vocab_size": vocab_rows}
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**config))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a larger spread than HF's init, so that the rollouts are not all alike
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g) if name.endswith("norm.weight")
                    else 0.05 * torch.randn(p.shape, generator=g))
    model.to(torch.bfloat16).save_pretrained(out_dir)
    gen = ({"bos_token_id": ids["<|endoftext|>"], "pad_token_id": ids["<|endoftext|>"], "do_sample": True,
            "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]], "repetition_penalty": 1.1,
            "temperature": 0.7, "top_p": 0.8, "top_k": 20, "transformers_version": "4.37.0"}
           if instruct else {"bos_token_id": ids["<|endoftext|>"], "do_sample": False,
                             "eos_token_id": ids["<|endoftext|>"], "max_new_tokens": 2048,
                             "transformers_version": "4.37.0"})
    for name, value in (("config.json", config), ("generation_config.json", gen)):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(value, f, indent=2)


def _store(hub: str, repo_id: str, src_dir: str) -> str:
    """Moves ``src_dir``'s files into ``hub`` as repo ``repo_id`` (blobs + snapshot symlinks + refs/main)."""
    repo = os.path.join(hub, "models--" + repo_id.replace("/", "--"))
    snap = os.path.join(repo, "snapshots", COMMIT)
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    os.makedirs(snap, exist_ok=True)
    for name in sorted(os.listdir(src_dir)):
        with open(os.path.join(src_dir, name), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        shutil.copyfile(os.path.join(src_dir, name), os.path.join(repo, "blobs", digest))
        os.symlink(os.path.join("..", "..", "blobs", digest), os.path.join(snap, name))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(COMMIT)
    return snap


def build_hub_cache(hf_home: str, texts) -> dict[str, str]:
    """Writes the six stand-in repositories under ``hf_home/hub``; returns hub id -> snapshot directory.

    ``texts``: the corpus the BPE is trained on (the stand-in datasets' text, so that prompts are not
    spelled byte by byte).
    """
    tok = train_tokenizer(texts)
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    vocab_rows = -(-tok.get_vocab_size() // 64) * 64 + 64  # padded past the tokenizer, like Qwen's embedding
    hub = os.path.join(hf_home, "hub")
    out = {}
    for seed, repo_id in enumerate(repo_ids()):
        instruct = repo_id.endswith("-Instruct")
        with tempfile.TemporaryDirectory() as d:
            _tokenizer_files(d, tok, instruct)
            size = repo_id.split("-")[1]
            _model_files(d, vocab_rows, ids, instruct, tied=size == "0.5B", heads=HEADS[size], seed=seed)
            out[repo_id] = _store(hub, repo_id, d)
    return out
