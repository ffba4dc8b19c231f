"""Worker of ``benchmarks/accelerator.py --suite`` for the ``hf`` group: transformers ``generate`` tokens/s.

    python benchmarks/accelerator_hf.py --group hf --plan DIR/plan.json --result DIR/result_hf.json

The model is built from its config in torch (random weights, no download) directly on the device (CUDA when
torch sees one, else the CPU), in bfloat16 with ``attn_implementation="sdpa"``. For each batch size of the
plan: a short warm-up ``generate`` (4 new tokens), then one timed call at the suite's shape: random prompt
ids (all real tokens), ``do_sample=True`` at temperature 1 with no top-k / top-p, exactly ``new`` tokens
(``min_new_tokens = max_new_tokens``, no EOS id) -- the work ``grpojax.sampling.sample`` does in the
``sampler_b<rows>`` parts. Results are written after each part, errors recorded as one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from accelerator import T0, log  # noqa: E402  (imports no JAX)


def hf_config(spec):
    """A transformers ``Qwen2Config`` / ``Qwen3Config`` for a preset name or QwenConfig fields."""
    import transformers

    from grpojax.models.config import PRESETS, QwenConfig, config_to_hf_dict

    cfg = PRESETS[spec] if isinstance(spec, str) else QwenConfig(**spec)
    d = config_to_hf_dict(cfg)
    d.pop("architectures")
    cls = transformers.Qwen2Config if cfg.arch == "qwen2" else transformers.Qwen3Config
    return cls(**d, bos_token_id=None, eos_token_id=None, pad_token_id=None)


def build(spec, device):
    import torch
    import transformers

    config = hf_config(spec)
    cls = transformers.Qwen2ForCausalLM if config.model_type == "qwen2" else transformers.Qwen3ForCausalLM
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = cls._from_config(config, attn_implementation="sdpa")
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=torch.bfloat16).eval()


def generate(model, rows: int, prompt: int, new: int, device) -> dict:
    import torch

    g = torch.Generator(device="cpu").manual_seed(rows)
    ids = torch.randint(0, model.config.vocab_size, (rows, prompt), generator=g).to(device)
    mask = torch.ones_like(ids)

    def run(n):
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                 top_p=1.0, max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    t = time.perf_counter()
    run(4)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    out = run(new)
    s = time.perf_counter() - t
    if tuple(out.shape) != (rows, prompt + new):
        raise RuntimeError(f"generate returned shape {tuple(out.shape)}, expected {(rows, prompt + new)}")
    return {"shape": f"{rows} x ({prompt} + {new})", "seconds": s, "tokens_per_s": rows * new / s,
            "warmup_s": warm}


def main(argv=None) -> int:
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("--group", default="hf", choices=("hf",))
    a.add_argument("--plan", required=True)
    a.add_argument("--result", required=True)
    a.add_argument("--cache-dir", default=None, help="unused (the JAX workers' argument)")
    a.add_argument("--seconds", type=float, default=None, help="the group's time budget")
    args = a.parse_args(argv)
    with open(args.plan) as f:
        full_plan = json.load(f)
    p, budgets = full_plan["hf"], full_plan.get("part_s", {}).get("hf", {})
    data = {}

    def part(name, fn):  # as accelerator_jax.Results.part
        budget = budgets.get(name, budgets.get(name.split("_")[0]))
        left = None if args.seconds is None else T0 + args.seconds - time.perf_counter()
        if budget is not None and left is not None and left < budget:
            fn = lambda: {"skipped": f"{left:.0f}s left in the group, the part's budget is {budget:.0f}s"}  # noqa: E731
        log(f"{name}: start")
        t = time.perf_counter()
        try:
            r = fn()
        except Exception as e:  # recorded, and the next part runs
            traceback.print_exc()
            r = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:600]}"}
        r["part_seconds"] = time.perf_counter() - t
        data[name] = r
        with open(args.result, "w") as f:
            json.dump(data, f, indent=1)
        log(f"{name}: {'ERROR ' + r['error'] if 'error' in r else 'done'} in {r['part_seconds']:.1f}s")
        return r

    import torch
    import transformers

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    holder = {}

    def setup():
        holder["model"] = build(p["model"], device)
        return {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                "torch": torch.__version__, "transformers": transformers.__version__, "dtype": "bfloat16",
                "attn_implementation": "sdpa", "model": p["name"],
                "parameters": sum(x.numel() for x in holder["model"].parameters())}

    part("build", setup)
    if "model" in holder:
        for rows in p["batches"]:
            part(f"generate_b{rows}", lambda n=rows: generate(holder["model"], n, p["prompt"], p["new"], device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
