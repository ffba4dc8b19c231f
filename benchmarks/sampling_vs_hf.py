"""Sampling throughput: grpojax's KV-cache sampler vs Hugging Face ``generate`` on the same checkpoint.

    python benchmarks/sampling_vs_hf.py --sizes small,qwen0p5b --out runs/bench_sampling

For each size a random-weight ``Qwen2ForCausalLM`` is built with transformers + torch (float32), saved with
``save_pretrained`` and loaded into grpojax with ``grpojax.models.from_hf``: both sides run the very same
weights. Workload (issue 3): batch 8, prompt 32 tokens (all real), exactly 64 new tokens (no EOS on our side,
``min_new_tokens = max_new_tokens`` and no EOS id on HF's), float32, this CPU. ``--mode sample`` draws from
softmax(logits) (temperature 1, no top-k / top-p on either side); ``--mode greedy`` is argmax decoding and
also reports how many tokens both sides agree on.

Timings: one warm-up call each (ours includes jit compilation; reported separately), then >= 5 alternated
rounds; throughput = batch * new_tokens / median seconds. Writes ``OUT/results.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402

SIZES = {
    # hidden 256 / 4 layers, Qwen's vocabulary and head layout
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2),
    # the real Qwen2.5-0.5B shape (494M parameters), random weights
    "qwen0p5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                     num_key_value_heads=2),
}
COMMON = dict(vocab_size=151936, tie_word_embeddings=True, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
              max_position_embeddings=32768, bos_token_id=None, eos_token_id=None, pad_token_id=None)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="small,qwen0p5b", help=f"comma list from {sorted(SIZES)}")
    p.add_argument("--out", required=True, help="directory for results.json")
    p.add_argument("--mode", choices=("sample", "greedy"), default="sample")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/results.json")
    args = p.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    bad = [s for s in sizes if s not in SIZES]
    if bad or not sizes:
        p.error(f"unknown size(s) {bad or args.sizes!r}; choose from {sorted(SIZES)}")
    if args.repeats < 5:
        p.error("--repeats must be >= 5")
    for name in ("batch", "prompt_len", "new_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    args.sizes = sizes
    return args


def build_pair(size: str, seed: int):
    """(HF torch model, our model) with identical random float32 weights, via save_pretrained / from_hf."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from grpojax.models import from_hf

    torch.manual_seed(seed)
    hf = Qwen2ForCausalLM(Qwen2Config(**SIZES[size], **COMMON)).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = from_hf(d)
    n_params = sum(p.numel() for p in hf.parameters())
    return hf, ours, n_params


def bench_size(size: str, args) -> dict:
    import jax
    import numpy as np
    import torch

    from grpojax import sampling

    print(f"== {size}: building the random checkpoint", flush=True)
    hf, ours, n_params = build_pair(size, args.seed)
    rng = np.random.default_rng(args.seed)
    prompts = rng.integers(0, COMMON["vocab_size"], size=(args.batch, args.prompt_len)).astype(np.int32)
    mask = np.ones_like(prompts)
    prompts_pt, mask_pt = torch.tensor(prompts, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
    greedy = args.mode == "greedy"
    L = args.new_tokens
    results = {}

    def run_ours():
        out = sampling.sample(ours, prompts, mask, jax.random.key(args.seed), max_new_tokens=L, greedy=greedy,
                              temperature=1.0, pad_id=0)
        jax.block_until_ready(out)
        results["ours"] = out
        return out

    def run_hf():
        with torch.inference_mode():
            gen = hf.generate(input_ids=prompts_pt, attention_mask=mask_pt, do_sample=not greedy,
                              max_new_tokens=L, min_new_tokens=L, temperature=1.0, top_k=0, top_p=1.0,
                              eos_token_id=None, pad_token_id=0)
        results["hf"] = gen
        return gen

    timings = common.alternate({"ours": run_ours, "hf": run_hf}, repeats=args.repeats)
    ours_tokens = np.asarray(results["ours"].completion_tokens_BC)
    hf_tokens = results["hf"][:, args.prompt_len:].numpy()
    ours_active = int(np.asarray(results["ours"].completion_mask_BC).sum())
    if hf_tokens.shape != (args.batch, L) or ours_active != args.batch * L:
        raise RuntimeError(f"not a fixed-length run: ours mask sum "
                           f"{int(np.asarray(results['ours'].completion_mask_BC).sum())}, HF shape {hf_tokens.shape}")
    new_tokens = args.batch * L
    row = {
        "size": size,
        "parameters": n_params,
        "config": {**SIZES[size], **{k: v for k, v in COMMON.items() if v is not None}},
        "ours_tokens_per_s": new_tokens / timings["ours"]["median_s"],
        "hf_tokens_per_s": new_tokens / timings["hf"]["median_s"],
        "ratio_ours_over_hf": timings["hf"]["median_s"] / timings["ours"]["median_s"],
        "ours_first_call_s": timings["ours"]["first_s"],
        "ours_compile_s_estimate": timings["ours"]["first_s"] - timings["ours"]["median_s"],
        "hf_first_call_s": timings["hf"]["first_s"],
        "timings": timings,
        "peak_rss_mb_after": common.peak_rss_mb(),
    }
    if greedy:
        row["greedy_token_agreement"] = float(np.mean(ours_tokens == hf_tokens))
        row["greedy_rows_identical"] = int(np.sum(np.all(ours_tokens == hf_tokens, axis=1)))
    hf = ours = None  # drop both models before the next size (the closures above hold them)
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    common.prepare_out(args.out, ["results.json"], args.overwrite)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for size in args.sizes:  # results.json is rewritten after each size, so a partial run keeps its numbers
        rows.append(bench_size(size, args))
        write_results(args, argv, rows, torch.get_num_threads())
    header = ["size", "params", "ours tok/s", "HF tok/s", "ours/HF", "ours compile s", "HF first call s",
              "peak RSS MiB"]
    table_rows = [[r["size"], f"{r['parameters'] / 1e6:.0f}M", f"{r['ours_tokens_per_s']:.1f}",
                   f"{r['hf_tokens_per_s']:.1f}", f"{r['ratio_ours_over_hf']:.2f}x",
                   f"{r['ours_compile_s_estimate']:.1f}", f"{r['hf_first_call_s']:.1f}",
                   f"{r['peak_rss_mb_after']:.0f}"] for r in rows]
    print(common.table(table_rows, header))
    print(f"wrote {os.path.join(args.out, 'results.json')}")
    return 0


def write_results(args, argv, rows, torch_threads) -> None:
    payload = {
        "benchmark": "sampling_vs_hf",
        "command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])),
        "workload": {"batch": args.batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                     "mode": args.mode, "dtype": "float32", "repeats": args.repeats},
        "machine": common.machine(),
        "torch_threads": torch_threads,
        "results": rows,
    }
    common.write_json(os.path.join(args.out, "results.json"), payload)


if __name__ == "__main__":
    raise SystemExit(main())
