"""Command line of ``scripts/sample.py``: sample a completion from a HF Qwen checkpoint (dir or hub id).

    python scripts/sample.py --model Qwen/Qwen2.5-0.5B-Instruct --prompt "Hello" --max-new-tokens 32
    python scripts/sample.py --model ./ckpt --prompt-ids "1 2 3" --max-new-tokens 8 --greedy --json
    python scripts/sample.py --model Qwen/Qwen2.5-7B-Instruct --prompt "Hello" --max-new-tokens 64 \
        --dtype bfloat16 --tensor 4     # weights split over 4 chips (a TPU VM whose chips hold less)

Prints the completion text (decoded with the checkpoint's tokenizer when it has one; with --prompt-ids
and no tokenizer, the completion token ids), or with --json one JSON object with the prompt ids, the
completion ids, their per-token log-probs (at the sampling temperature) and the decoded text.
Bad input raises :class:`grpojax.cli.UserError`: a one-line ``error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

from grpojax.cli import UserError, report_user_error


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage + message
        raise UserError(message)


def build_parser(prog: str = "sample.py") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Sample completions with grpojax's KV-cache sampler.")
    p.add_argument("--model", required=True, help="HF checkpoint directory or hub id (Qwen2 / Qwen2.5 / Qwen3)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text (needs a tokenizer in the checkpoint)")
    src.add_argument("--prompt-ids", help='prompt token ids, e.g. "1 2 3" (spaces or commas)')
    p.add_argument("--max-new-tokens", type=int, required=True)
    p.add_argument("--greedy", action="store_true", help="argmax decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1, help="completions to draw for the prompt")
    p.add_argument("--chat", action="store_true", help="wrap --prompt in the tokenizer's chat template")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--json", action="store_true", help="print one JSON object (ids, log-probs, text)")
    p.add_argument("--tensor", type=int, default=1,
                   help="split the weights by heads / MLP width / vocabulary over this many devices (-1 = all); "
                        "the checkpoint is read into host memory and each device copies its slices")
    return p


def parse_ids(text: str) -> list[int]:
    ids = []
    for piece in text.replace(",", " ").split():
        try:
            ids.append(int(piece))
        except ValueError:
            raise UserError(f"--prompt-ids: {piece!r} is not an integer token id") from None
        if ids[-1] < 0:
            raise UserError(f"--prompt-ids: token id {ids[-1]} is negative")
    if not ids:
        raise UserError("--prompt-ids is empty")
    return ids


def check_args(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not args.temperature > 0:
        raise UserError(f"--temperature must be > 0 (use --greedy for argmax), got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.num_samples < 1:
        raise UserError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.chat and args.prompt is None:
        raise UserError("--chat needs --prompt")
    if args.prompt is not None and not args.prompt:
        raise UserError("--prompt is empty")
    if args.tensor == 0 or args.tensor < -1:
        raise UserError(f"--tensor must be -1 (all devices) or >= 1, got {args.tensor}")


def load_tokenizer(model: str, required: bool) -> Any:
    """The tokenizer in checkpoint dir ``model``, or None when it has none and ``required`` is False."""
    has_files = any(os.path.exists(os.path.join(model, f)) for f in ("tokenizer.json", "tokenizer_config.json"))
    if has_files:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(model)
        except (OSError, ValueError, KeyError) as e:
            if required:
                raise UserError(f"cannot load a tokenizer from {model}: {str(e).splitlines()[0]}") from None
            return None
    if required:
        raise UserError(f"{model} has no tokenizer (tokenizer.json / tokenizer_config.json); use --prompt-ids")
    return None


def eos_and_pad(ckpt_dir: str, tokenizer: Any) -> tuple[list[int], int]:
    """EOS ids from the tokenizer and the checkpoint's generation_config.json / config.json; a pad id."""
    eos: list[int] = []
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        eos.append(int(tokenizer.eos_token_id))
    for name in ("generation_config.json", "config.json"):
        path = os.path.join(ckpt_dir, name)
        if os.path.exists(path):
            with open(path) as f:
                value = json.load(f).get("eos_token_id")
            eos += [int(v) for v in (value if isinstance(value, list) else [value]) if v is not None]
    pad = tokenizer.pad_token_id if tokenizer is not None else None
    pad = pad if pad is not None else (eos[0] if eos else 0)
    return sorted(set(eos)), int(pad)


def run(args: argparse.Namespace) -> dict:
    check_args(args)
    prompt_ids = parse_ids(args.prompt_ids) if args.prompt_ids is not None else None

    import contextlib

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from grpojax import sharding as shd
    from grpojax.models import from_hf
    from grpojax.models.hf_io import resolve_checkpoint
    from grpojax.sampling import ShardedCache, sample

    try:
        ckpt = resolve_checkpoint(args.model)  # a local dir, or the hub id's snapshot in the HF cache
    except (OSError, ValueError) as e:
        raise UserError(f"--model: {str(e).splitlines()[0]}") from None
    tokenizer = load_tokenizer(ckpt, required=prompt_ids is None)

    if prompt_ids is None:
        if args.chat:
            if not getattr(tokenizer, "chat_template", None):
                raise UserError(f"the tokenizer of {args.model} has no chat template; drop --chat")
            prompt_ids = list(tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}],
                                                            add_generation_prompt=True, tokenize=True))
        else:
            prompt_ids = tokenizer(args.prompt, add_special_tokens=False)["input_ids"]
        if not prompt_ids:
            raise UserError("--prompt tokenizes to zero tokens")
    n_dev = jax.device_count() if args.tensor == -1 else args.tensor
    if n_dev > jax.device_count():
        raise UserError(f"--tensor {n_dev}: JAX sees only {jax.device_count()} devices")
    try:
        with shd.host_memory() if n_dev > 1 else contextlib.nullcontext():
            model = from_hf(ckpt, dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
    except (OSError, ValueError, KeyError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot load model {args.model}: {reason}") from None
    cache_fn = None
    prompt = {"ids": np.asarray([prompt_ids], np.int32), "mask": np.ones((1, len(prompt_ids)), np.int32)}
    if n_dev > 1:  # the layout of grpojax.sharding.rollout_mesh(mesh, n_dev): weights split over n_dev devices
        mesh = shd.make_mesh((1, 1, n_dev), devices=jax.devices()[:n_dev])
        graphdef, state = nnx.split(model)
        model = nnx.merge(graphdef, shd.place_from_host(state, shd.tree_shardings(state, mesh)))
        cache_fn = ShardedCache(model.config, mesh, model.dtype)
        prompt = shd.global_batch_from_full(prompt, mesh)
    vocab = model.config.vocab_size
    bad = [i for i in prompt_ids if i >= vocab]
    if bad:
        raise UserError(f"prompt token ids {bad[:5]} are >= the vocabulary size {vocab}")
    eos, pad = eos_and_pad(ckpt, tokenizer)

    out = sample(model, prompt["ids"], prompt["mask"], jax.random.key(args.seed), max_new_tokens=args.max_new_tokens,
                 temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, greedy=args.greedy, eos_ids=eos,
                 pad_id=pad, num_samples=args.num_samples, cache_fn=cache_fn)
    out = out._replace(**{k: shd.to_host(v) for k, v in out._asdict().items() if k != "num_steps"})
    completions = []
    for g in range(args.num_samples):
        n = int(np.asarray(out.completion_mask_BC[g]).sum())
        ids = [int(t) for t in np.asarray(out.completion_tokens_BC[g, :n])]
        completions.append({
            "completion_ids": ids,
            "logprobs": [float(x) for x in np.asarray(out.completion_logp_BC[g, :n])],
            "text": tokenizer.decode(ids, skip_special_tokens=True) if tokenizer is not None else None,
            "finished": bool(ids and ids[-1] in eos),
            "truncated": bool(out.truncated_B[g]),
        })
    return {"model": args.model, "prompt_ids": list(map(int, prompt_ids)), "eos_ids": eos, "pad_id": pad,
            "devices": n_dev,
            "temperature": args.temperature, "greedy": args.greedy, "seed": args.seed,
            "completions": completions}


def main(argv: Sequence[str] | None = None, prog: str = "sample.py") -> int:
    try:
        args = build_parser(prog).parse_args(argv)
        result = run(args)
    except UserError as e:
        return report_user_error(e)
    if args.json:
        print(json.dumps(result))
    else:
        for c in result["completions"]:
            print(c["text"] if c["text"] is not None else " ".join(map(str, c["completion_ids"])))
    return 0
