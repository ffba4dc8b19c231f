"""Sampling throughput: grpojax's KV-cache sampler vs tunix's ``Sampler`` (the JAX peer), same checkpoint.

    python benchmarks/sampling_vs_tunix.py --tunix-python /path/to/tunix-venv/bin/python \
        --sizes small --out runs/bench_tunix

tunix pins its own jax / flax / transformers, so it lives in its own virtualenv (see benchmarks/README.md):
``python3 -m venv ~/tunix-venv && ~/tunix-venv/bin/pip install google-tunix==0.1.7``. Nothing here
installs anything.

Workload (issue 7, item 2), the same as ``sampling_vs_hf.py``: a random-weight ``Qwen2ForCausalLM``
(``sampling_vs_hf.SIZES``, Qwen's 151,936 vocabulary, tied embeddings) built with transformers + torch and
saved once as safetensors; grpojax loads it with ``grpojax.models.from_hf``, tunix with
``tunix.models.qwen2.params.create_model_from_safe_tensors`` (float32 both). Batch 8, prompt 32 random
token ids (no padding), exactly 64 new tokens (no EOS: tunix is given an EOS id no token can have),
**greedy** decoding on both sides: tunix samples at temperature > 0 only through top-p (a full sort of the
151,936 logits per step), so greedy is the like-for-like mode; it also lets us check that the two samplers
produce the same tokens (``greedy_token_agreement``; float32 ties aside it should be 1.0).

Each side runs in its own process (its own interpreter: ours in this venv, tunix in ``--tunix-python``),
driven over a pipe by the parent: one warm-up call (includes jit compilation, reported separately), then
>= 5 alternated rounds, medians. Ratio = tunix median seconds / ours (> 1 = grpojax faster). Writes
``OUT/results.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import common  # noqa: E402
from grpo_vs_trl import Worker, run_pair, serve  # noqa: E402
from sampling_vs_hf import COMMON, SIZES  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="small", help=f"comma list from {sorted(SIZES)}")
    p.add_argument("--out", help="directory for results.json (parent mode)")
    p.add_argument("--tunix-python", default=os.environ.get("TUNIX_PYTHON"),
                   help="python of a virtualenv with google-tunix installed (or $TUNIX_PYTHON)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--worker", choices=("ours", "tunix"), help=argparse.SUPPRESS)
    p.add_argument("--ckpt", help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return args
    if not args.out:
        p.error("--out is required")
    if not args.tunix_python or not os.path.exists(args.tunix_python):
        p.error(f"--tunix-python {args.tunix_python!r} does not exist: install tunix in its own virtualenv "
                "(benchmarks/README.md) and pass its python")
    args.sizes = [s for s in args.sizes.split(",") if s]
    bad = [s for s in args.sizes if s not in SIZES]
    if bad or not args.sizes:
        p.error(f"unknown size(s) {bad or args.sizes!r}; choose from {sorted(SIZES)}")
    if args.repeats < 5:
        p.error("--repeats must be >= 5")
    return args


def prompts(args):
    """[batch, prompt_len] int32 token ids in [1, V) (0 is tunix's pad id), identical on both sides."""
    import numpy as np

    rng = np.random.default_rng(args.seed)
    return rng.integers(1, COMMON["vocab_size"], size=(args.batch, args.prompt_len)).astype(np.int32)


# ---------------------------------------------------------------- the two sides (each in its own process)

def worker_ours(args) -> None:
    import jax
    import numpy as np

    from grpojax import sampling
    from grpojax.models import from_hf

    model = from_hf(args.ckpt)
    ids = prompts(args)
    mask = np.ones_like(ids)
    last = {}

    def one_call():
        out = sampling.sample(model, ids, mask, jax.random.key(args.seed), max_new_tokens=args.new_tokens,
                              greedy=True, pad_id=0)
        jax.block_until_ready(out)
        last["tokens"] = np.asarray(out.completion_tokens_BC)
        if int(np.asarray(out.completion_mask_BC).sum()) != args.batch * args.new_tokens:
            raise RuntimeError("ours: not a fixed-length run")
        return {"tokens": last["tokens"].tolist()}

    serve(one_call, {"side": "ours", "jax": jax.__version__, "devices": str(jax.devices())})


class _IdTokenizer:
    """tunix's tokenizer protocol over pre-tokenised prompts: the 'text' of prompt i is the string ``str(i)``."""

    def __init__(self, ids):
        self.ids = ids

    def encode(self, text, **kw):
        return [int(t) for t in self.ids[int(text)]]

    def decode(self, ids, **kw):
        return ""

    def bos_id(self):
        return None  # tunix prepends a BOS only when this is truthy

    def eos_id(self):
        return -1

    def pad_id(self):
        return 0


def worker_tunix(args) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from tunix.generate import sampler as tsampler
    from tunix.models.qwen2 import model as tmodel
    from tunix.models.qwen2 import params as tparams

    cfg = SIZES[args.size]
    config = tmodel.ModelConfig(
        num_layers=cfg["num_hidden_layers"], vocab_size=COMMON["vocab_size"], embed_dim=cfg["hidden_size"],
        hidden_dim=cfg["intermediate_size"], num_heads=cfg["num_attention_heads"],
        head_dim=cfg["hidden_size"] // cfg["num_attention_heads"], num_kv_heads=cfg["num_key_value_heads"],
        rope_theta=int(COMMON["rope_theta"]), norm_eps=COMMON["rms_norm_eps"], use_tied_embedding=True)
    model = tparams.create_model_from_safe_tensors(args.ckpt, config, mesh=None, dtype=jnp.float32)
    ids = prompts(args)
    tok = _IdTokenizer(ids)
    cache = tsampler.CacheConfig(cache_size=args.prompt_len + args.new_tokens, num_layers=config.num_layers,
                                 num_kv_heads=config.num_kv_heads, head_dim=config.head_dim)
    smp = tsampler.Sampler(model, tok, cache)
    texts = [str(i) for i in range(args.batch)]

    def one_call():
        out = smp(texts, max_generation_steps=args.new_tokens, max_prompt_length=args.prompt_len,
                  eos_tokens=[-1], temperature=0.0, pad_output=True)
        tokens = np.asarray(jax.device_get(out.tokens))
        if tokens.shape != (args.batch, args.new_tokens):
            raise RuntimeError(f"tunix: not a fixed-length run, tokens {tokens.shape}")
        return {"tokens": tokens.tolist()}

    import tunix

    serve(one_call, {"side": "tunix", "jax": jax.__version__, "devices": str(jax.devices()),
                     "tunix": getattr(tunix, "__version__", "unknown")})


# ---------------------------------------------------------------- the parent

def bench_size(size: str, args, work: str) -> dict:
    import numpy as np
    from grpo_vs_trl import build_checkpoint

    ckpt = os.path.join(work, size)
    print(f"== {size}: building the random checkpoint", flush=True)
    n_params = build_checkpoint(size, args.seed, ckpt)
    common_argv = [os.path.abspath(__file__), "--ckpt", ckpt, "--size", size, "--batch", str(args.batch),
                   "--prompt-len", str(args.prompt_len), "--new-tokens", str(args.new_tokens),
                   "--seed", str(args.seed)]
    logs = {side: os.path.join(args.out, f"{size}_{side}.log") for side in ("ours", "tunix")}
    workers = {"ours": lambda: Worker("ours", common_argv + ["--worker", "ours"], logs["ours"]),
               "tunix": lambda: Worker("tunix", common_argv + ["--worker", "tunix"], logs["tunix"],
                                       python=args.tunix_python)}
    res = run_pair(workers, repeats=args.repeats, sequential=False)
    ours_tok = np.asarray(res["ours"]["replies"][-1]["tokens"])
    tunix_tok = np.asarray(res["tunix"]["replies"][-1]["tokens"])
    for side in res.values():  # keep results.json small: tokens only from the last call
        for r in side["replies"]:
            r.pop("tokens", None)
    new = args.batch * args.new_tokens
    return {
        "size": size, "parameters": n_params,
        "ours_tokens_per_s": new / res["ours"]["median_s"], "tunix_tokens_per_s": new / res["tunix"]["median_s"],
        "ratio_ours_over_tunix": res["tunix"]["median_s"] / res["ours"]["median_s"],
        "ours_compile_s_estimate": res["ours"]["first_s"] - res["ours"]["median_s"],
        "tunix_compile_s_estimate": res["tunix"]["first_s"] - res["tunix"]["median_s"],
        "greedy_token_agreement": float(np.mean(ours_tok == tunix_tok)),
        "greedy_rows_identical": int(np.sum(np.all(ours_tok == tunix_tok, axis=1))),
        "timings": res,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker == "ours":
        worker_ours(args)
        return 0
    if args.worker == "tunix":
        worker_tunix(args)
        return 0
    common.prepare_out(args.out, ["results.json"], args.overwrite)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # both workers inherit it (no TPU probing on a CPU box)
    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as work:
        for size in args.sizes:
            rows.append(bench_size(size, args, work))
            common.write_json(os.path.join(args.out, "results.json"), {
                "benchmark": "sampling_vs_tunix",
                "command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None
                                                                               else sys.argv[1:])),
                "workload": {"batch": args.batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                             "mode": "greedy", "dtype": "float32", "repeats": args.repeats},
                "machine": common.machine(), "seconds": time.time() - t0, "results": rows})
    header = ["size", "params", "ours tok/s", "tunix tok/s", "ours/tunix", "greedy agreement",
              "ours compile s", "tunix compile s"]
    print(common.table([[r["size"], f"{r['parameters'] / 1e6:.0f}M", f"{r['ours_tokens_per_s']:.1f}",
                         f"{r['tunix_tokens_per_s']:.1f}", f"{r['ratio_ours_over_tunix']:.2f}x",
                         f"{r['greedy_token_agreement']:.3f}", f"{r['ours_compile_s_estimate']:.1f}",
                         f"{r['tunix_compile_s_estimate']:.1f}"] for r in rows], header))
    print(f"wrote {os.path.join(args.out, 'results.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
