"""One DPO optimizer step of grpojax (``preference_step``) vs TRL ``DPOTrainer``, same pairs, same model.

    python benchmarks/dpo_vs_trl.py --size small --out runs/bench_dpo

Workload (issue 7, item 3): the random-weight float32 Qwen2 checkpoint and tiny tokenizer of
``grpo_vs_trl.build_checkpoint``; per step 8 preference pairs, every prompt exactly ``--prompt-len`` tokens
and every chosen / rejected response exactly ``--response-len`` tokens including the EOS TRL appends (so no
padding on either side: both train on [16, prompt + response] token rows); sigmoid DPO loss, beta 0.1,
AdamW lr 1e-6, gradient clipping at norm 1, no gradient checkpointing. Reference log-probs are
PRE-COMPUTED on both sides before the timed steps (TRL ``precompute_ref_log_probs=True`` in its
constructor; ours one jitted forward of the initial model per batch), so a step on each side is: the policy
forward on chosen + rejected as one [2B] batch, the sigmoid loss, backward, clipping and AdamW:
- ours: the jitted, donated :func:`grpojax.train.steps.preference.preference_step` + its metrics to the host;
- TRL: one ``Trainer`` optimizer step, timed by a callback from ``on_step_begin`` to ``on_step_end``.

Both sides run in their own subprocess and are alternated step by step (``grpo_vs_trl.run_pair``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import common  # noqa: E402
from grpo_vs_trl import SIZES, Worker, build_checkpoint, fixed_length_texts, reply, run_pair, serve  # noqa: E402

PAIRS_PER_STEP, BETA, LR = 8, 0.1, 1e-6


def make_pairs(hf_tok, n: int, prompt_len: int, response_len: int) -> dict:
    """``n`` (prompt, chosen, rejected) texts: prompts of ``prompt_len`` tokens, responses of
    ``response_len - 1`` tokens that start with a space (so prompt + response tokenises as the two parts)."""
    prompts = fixed_length_texts(hf_tok, n, prompt_len)
    chosen = [" " + t for t in fixed_length_texts(hf_tok, n, response_len - 2, add_special_tokens=False,
                                                  offset=3)]
    rejected = [" " + t for t in fixed_length_texts(hf_tok, n, response_len - 2, add_special_tokens=False,
                                                    offset=5, filler=" a")]
    for p, c, r in zip(prompts, chosen, rejected):
        for resp in (c, r):
            got = len(hf_tok(p + resp)["input_ids"]) - prompt_len
            if got != response_len - 1:
                raise ValueError(f"response {resp!r} after prompt {p!r} is {got} tokens, expected "
                                 f"{response_len - 1}")
    return {"prompt": prompts, "chosen": chosen, "rejected": rejected}


def worker_ours(args) -> None:
    t_setup = time.perf_counter()
    import functools

    import jax
    import numpy as np
    from transformers import AutoTokenizer

    from grpojax.data.tokenizer import Tokenizer
    from grpojax.models import from_hf
    from grpojax.train.steps.optim import make_optimizer
    from grpojax.train.steps.preference import PreferenceSettings, pair_logprobs, preference_step
    from grpojax.train.steps.state import create_train_state, merge_model
    from grpojax.train.tasks.base import host_row

    tok = Tokenizer(AutoTokenizer.from_pretrained(args.ckpt), chat_template=False)
    data = make_pairs(tok.hf, args.num_pairs, args.prompt_len, args.response_len)
    tx = make_optimizer(LR, total_steps=1000, max_grad_norm=1.0)
    graphdef, state = create_train_state(from_hf(args.ckpt), tx, jax.random.key(args.seed))
    settings = PreferenceSettings(loss="dpo", beta=BETA)

    def rows(texts):
        return np.asarray([tok.encode_response(t) + [tok.eos_id] for t in texts], np.int32)

    batches = []
    ref_fn = jax.jit(lambda params, frozen, b: pair_logprobs(merge_model(graphdef, params, frozen), b, settings))
    for i in range(0, args.num_pairs - PAIRS_PER_STEP + 1, PAIRS_PER_STEP):
        sl = slice(i, i + PAIRS_PER_STEP)
        pb = tok.prompt_batch(data["prompt"][sl], args.prompt_len)
        b = {"prompt_BQ": pb.prompt_ids_BT, "prompt_mask_BQ": pb.prompt_mask_BT,
             "chosen_BC": rows(data["chosen"][sl]), "rejected_BC": rows(data["rejected"][sl])}
        b["chosen_mask_BC"] = np.ones_like(b["chosen_BC"])
        b["rejected_mask_BC"] = np.ones_like(b["rejected_BC"])
        b = jax.device_put(b)
        b["ref_chosen_logp_B"], b["ref_rejected_logp_B"] = ref_fn(state.params, state.frozen, b)
        batches.append(b)
    step = jax.jit(functools.partial(preference_step, graphdef=graphdef, tx=tx, settings=settings),
                   donate_argnums=0)
    holder = {"state": state, "i": 0}

    def one_step():
        b = batches[holder["i"] % len(batches)]
        holder["state"], metrics = step(holder["state"], b, jax.random.key(0))
        row = host_row(metrics)
        holder["i"] += 1
        width = b["prompt_BQ"].shape[1] + b["chosen_BC"].shape[1]
        return {"loss": row["loss"], "rows": 2 * b["prompt_BQ"].shape[0], "width": int(width),
                "completion_tokens": int(b["chosen_mask_BC"].sum() + b["rejected_mask_BC"].sum())}

    serve(one_step, {"setup_s": time.perf_counter() - t_setup})


def worker_trl(args) -> None:
    t_setup = time.perf_counter()
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(os.cpu_count() or 1)
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    data = make_pairs(tok, args.num_pairs, args.prompt_len, args.response_len)
    out_dir = tempfile.mkdtemp(prefix="trl_dpo_")
    cfg = DPOConfig(output_dir=out_dir, per_device_train_batch_size=PAIRS_PER_STEP, beta=BETA,
                    loss_type=["sigmoid"], precompute_ref_log_probs=True, max_length=None,
                    learning_rate=LR, max_grad_norm=1.0, weight_decay=0.0, lr_scheduler_type="constant",
                    bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, report_to="none",
                    save_strategy="no", logging_steps=10**6, disable_tqdm=True, max_steps=args.steps,
                    seed=args.seed, model_init_kwargs={"dtype": torch.float32}, dataloader_num_workers=0)
    counts = {}

    class Gate(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            cmd = sys.stdin.readline().strip()
            if cmd != "step":
                raise SystemExit(f"TRL worker: expected 'step', got {cmd!r}")
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            reply({"s": time.perf_counter() - self.t0, **counts})

    trainer = DPOTrainer(model=args.ckpt, args=cfg, train_dataset=Dataset.from_dict(data), processing_class=tok,
                         callbacks=[Gate()])
    original = trainer.compute_loss

    def counted(model, inputs, *a, **kw):  # records the shapes TRL really trained on (checked by the parent)
        counts.update(rows=int(inputs["input_ids"].shape[0]), width=int(inputs["input_ids"].shape[1]),
                      completion_tokens=int(inputs["completion_mask"].sum()),
                      precomputed_ref="ref_chosen_logps" in inputs)
        return original(model, inputs, *a, **kw)

    trainer.compute_loss = counted
    reply({"setup_s": time.perf_counter() - t_setup, "torch_threads": torch.get_num_threads()})
    trainer.train()
    line = sys.stdin.readline().strip()
    if line != "quit":
        raise SystemExit(f"TRL worker: expected 'quit', got {line!r}")
    reply({"peak_rss_mb": common.peak_rss_mb()})
    shutil.rmtree(out_dir, ignore_errors=True)


def bench(size: str, *, work_dir: str, log_dir: str, repeats: int = 5, seed: int = 0, prompt_len: int = 16,
          response_len: int = 32, sequential: bool = False, log=print) -> dict:
    """Runs both sides on ``size``; returns seconds per step, the ratio, first-step times and peak RSS."""
    ckpt = os.path.join(work_dir, f"ckpt_{size}_seed{seed}")  # shared with grpo_vs_trl in one run.py
    log(f"== dpo_step {size}: building the random checkpoint")
    n_params = build_checkpoint(size, seed, ckpt)
    steps = repeats + 1
    base = [os.path.abspath(__file__), "--ckpt", ckpt, "--steps", str(steps), "--seed", str(seed),
            "--prompt-len", str(prompt_len), "--response-len", str(response_len),
            "--num-pairs", str(2 * PAIRS_PER_STEP)]
    workers = {n: (lambda n=n: Worker(n, base + ["--worker", n], os.path.join(log_dir, f"dpo_{size}_{n}.log")))
               for n in ("ours", "trl")}
    res = run_pair(workers, repeats=repeats, sequential=sequential, log=log)
    shapes = {n: {k: res[n]["replies"][-1].get(k) for k in ("rows", "width", "completion_tokens")} for n in res}
    if shapes["ours"] != shapes["trl"]:
        raise RuntimeError(f"the two sides trained on different shapes: {shapes}")
    ours, trl = res["ours"], res["trl"]
    return {
        "size": size, "parameters": n_params, "config": SIZES[size],
        "workload": {"pairs_per_step": PAIRS_PER_STEP, "prompt_len": prompt_len, "response_len": response_len,
                     "beta": BETA, "loss": "sigmoid", "reference": "precomputed on both sides",
                     "dtype": "float32", "sequential": sequential, "shapes": shapes["ours"]},
        "ours_s_per_step": ours["median_s"], "trl_s_per_step": trl["median_s"],
        "ratio_vs_trl": trl["median_s"] / ours["median_s"],
        "ours_first_step_s": ours["first_s"], "ours_compile_s_estimate": ours["first_s"] - ours["median_s"],
        "trl_first_step_s": trl["first_s"],
        "ours_setup_s": ours["ready"]["setup_s"], "trl_setup_s": trl["ready"]["setup_s"],
        "ours_peak_rss_mb": ours["peak_rss_mb"], "trl_peak_rss_mb": trl["peak_rss_mb"],
        "timings": {n: {k: v for k, v in res[n].items() if k != "replies"} for n in res},
        "worker_replies": {n: res[n]["replies"] for n in res},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--out", help="directory for dpo_results.json (parent mode)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--response-len", type=int, default=32)
    p.add_argument("--sequential", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--worker", choices=("ours", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--ckpt", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--num-pairs", type=int, default=16, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        (worker_ours if args.worker == "ours" else worker_trl)(args)
        return 0
    if not args.out:
        p.error("--out is required")
    common.prepare_out(args.out, ["dpo_results.json"], args.overwrite)
    with tempfile.TemporaryDirectory() as work:
        row = bench(args.size, work_dir=work, log_dir=args.out, repeats=args.repeats, seed=args.seed,
                    prompt_len=args.prompt_len, response_len=args.response_len, sequential=args.sequential)
    common.write_json(os.path.join(args.out, "dpo_results.json"), {"machine": common.machine(), "result": row})
    print(json.dumps({k: v for k, v in row.items() if k not in ("timings", "worker_replies")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
