"""One GRPO step (rollout + update) of grpojax vs TRL ``GRPOTrainer``, same checkpoint, same work.

    python benchmarks/grpo_vs_trl.py --size small --out runs/bench_grpo

Workload (issue 7, item 1): a random-weight ``Qwen2ForCausalLM`` (``sampling_vs_hf.SIZES``, Qwen's 151,936
vocabulary) saved once with ``save_pretrained`` and loaded by both sides (``grpojax.models.from_hf`` / TRL's
``from_pretrained``), float32; the tiny BPE tokenizer of ``configs/data/tiny_tokenizer`` (no chat template);
prompts of exactly ``--prompt-len`` tokens (no padding on either side); per step 2 prompts x G = 4 = 8
completions of at most 32 sampled tokens (temperature 1, no top-k / top-p, EOS stops); a rule-based reward
(``grpojax.rollout.text_rewards.length_reward``, 64 characters) on the decoded text; ``loss_type="grpo"``,
beta = 0.04 with a frozen reference model, epsilon 0.2, one optimizer update per rollout (mu = 1), AdamW
lr 1e-6, gradient clipping at norm 1, no gradient checkpointing, no vLLM.

One step on each side:
- ours: ``sample_and_score`` (KV-cache sampler, decode, reward, group advantages) + the jitted reference
  log-prob forward + the jitted, donated ``grpo_step`` (forward, backward, AdamW) + metrics to the host --
  exactly what ``GRPOTask.train_steps`` does with mu = 1;
- TRL: one ``Trainer`` optimizer step, timed by a callback from ``on_step_begin`` to ``on_step_end``:
  ``_prepare_inputs`` (HF ``generate``, decode, reward, advantages, reference log-probs), the loss forward,
  backward, gradient clipping and the AdamW step.

Each side runs in its own subprocess (its peak RSS is its own); the parent drives both over a pipe, one
step per command, alternating them with ``common.alternate`` (warm-up first: our jit compilation and TRL's
first-step set-up are reported separately). ``--sequential`` runs one side to completion before starting
the other (for the 0.5B shape, when two trainers do not fit in memory together).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

import common  # noqa: E402
from sampling_vs_hf import COMMON, SIZES  # noqa: E402

TOKENIZER_DIR = os.path.join(REPO, "configs", "data", "tiny_tokenizer")
PROTOCOL = "@@BENCH "
G, COMPLETIONS_PER_STEP, COMPLETION_LEN, BETA, LR = 4, 8, 32, 0.04, 1e-6
SEED_TEXTS = ["How do I bake bread?", "How do I fix a bike?", "How do I learn python?", "Tell me a story.",
              "What is the capital of France?", "Explain rain to a child.", "Write a haiku about snow.",
              "Why is the sky blue?"]


# ---------------------------------------------------------------- shared set-up (both sides, both benches)

def build_checkpoint(size: str, seed: int, out_dir: str) -> int:
    """A random float32 Qwen2 checkpoint of ``size`` plus the tiny tokenizer in ``out_dir``; returns #params.

    A checkpoint this function finished earlier in ``out_dir`` (same size and seed: ``bench_checkpoint.json``)
    is reused, so the GRPO and DPO benchmarks of one ``run.py`` share one build."""
    import torch

    marker = os.path.join(out_dir, "bench_checkpoint.json")
    if os.path.isfile(marker):
        with open(marker) as f:
            done = json.load(f)
        if done["size"] == size and done["seed"] == seed:
            return done["parameters"]
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    torch.manual_seed(seed)
    cfg = Qwen2Config(**SIZES[size], **{**COMMON, "eos_token_id": tok.eos_token_id,
                                        "pad_token_id": tok.pad_token_id})
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    n = sum(p.numel() for p in model.parameters())
    with open(marker, "w") as f:
        json.dump({"size": size, "seed": seed, "parameters": n}, f)
    return n


def fixed_length_texts(hf_tok, n: int, length: int, *, add_special_tokens: bool = True,
                       filler: str = " the", offset: int = 0) -> list[str]:
    """``n`` distinct texts that each encode to exactly ``length`` tokens (a seed sentence + filler words)."""
    count = lambda t: len(hf_tok(t, add_special_tokens=add_special_tokens)["input_ids"])  # noqa: E731
    out = []
    for i in range(n):
        text = ""
        for word in f"{i} {SEED_TEXTS[(i + offset) % len(SEED_TEXTS)]}".split():
            if count((text + " " + word).strip()) > length - 1:
                break
            text = (text + " " + word).strip()
        while count(text) < length:
            text += filler
        if count(text) != length:
            raise ValueError(f"cannot build a text of exactly {length} tokens (got {count(text)} for {text!r}); "
                             "use a longer length")
        out.append(text)
    return out


def length_reward_fn(prompts, completions, **kwargs) -> list[float]:
    """The rule-based reward of both sides (TRL's reward-function signature)."""
    from grpojax.rollout.text_rewards import length_reward

    return length_reward(prompts, list(completions), max_chars=64)


# ---------------------------------------------------------------- the step protocol (parent <-> worker)

def reply(obj: dict) -> None:
    sys.stdout.write(PROTOCOL + json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(step_fn, ready: dict) -> None:
    """Worker loop: announce ``ready``, then run ``step_fn`` per ``step`` line until ``quit``."""
    reply(ready)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "step":
            t0 = time.perf_counter()
            extra = step_fn() or {}
            reply({"s": time.perf_counter() - t0, **extra})
        elif cmd == "quit":
            break
        else:
            raise SystemExit(f"worker: unknown command {cmd!r}")
    reply({"peak_rss_mb": common.peak_rss_mb()})


class Worker:
    """A benchmark side in its own process; ``step()`` runs one step there and returns its reply."""

    def __init__(self, name: str, argv: list[str], log_path: str, python: str | None = None):
        self.name, self.log_path = name, log_path
        self.log = open(log_path, "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.proc = subprocess.Popen([python or sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, bufsize=1, env=env, cwd=REPO)
        self.replies: list[dict] = []
        self.ready: dict | None = None

    def wait_ready(self) -> Worker:
        """Blocks until the worker has loaded everything and answered ``ready`` (its set-up message)."""
        if self.ready is None:
            self.ready = self._read()
        return self

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL):
                return json.loads(line[len(PROTOCOL):])
            self.log.write(line)
        self.log.flush()
        code = self.proc.wait()
        with open(self.log_path) as f:
            tail = f.read()[-2000:]
        raise RuntimeError(f"{self.name} worker exited with code {code} before answering; log "
                           f"{self.log_path}:\n{tail}")

    def step(self) -> dict:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        out = self._read()
        self.replies.append(out)
        return out

    def close(self) -> dict:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        out = self._read()
        self.proc.wait()
        self.log.close()
        return out


def run_pair(workers: dict, *, repeats: int, sequential: bool, log=print) -> dict:
    """``common.alternate`` over live workers (or one side after the other); adds worker replies + RSS.

    ``workers`` maps a name to a zero-argument factory returning a started :class:`Worker`. Alternated
    workers start up concurrently (imports, checkpoint loading: nothing is timed before both are ready)."""
    out = {}
    if sequential:
        for name, make in workers.items():
            w = make().wait_ready()
            res = common.alternate({name: w.step}, repeats=repeats, log=log)[name]
            out[name] = {**res, "ready": w.ready, "replies": w.replies, **w.close()}
    else:
        live = {name: make() for name, make in workers.items()}
        for w in live.values():
            w.wait_ready()
        res = common.alternate({n: w.step for n, w in live.items()}, repeats=repeats, log=log)
        for name, w in live.items():
            out[name] = {**res[name], "ready": w.ready, "replies": w.replies, **w.close()}
    return out


# ---------------------------------------------------------------- the two sides

def worker_ours(args, serve_fn=serve) -> None:
    """Our side: builds the step and hands it to ``serve_fn(step_fn, ready)`` (the pipe protocol by default;
    ``profile_grpo_step.py`` passes its own to run the identical step in-process)."""
    t_setup = time.perf_counter()
    import functools

    import jax
    import numpy as np
    from transformers import AutoTokenizer

    from grpojax.data.tokenizer import Tokenizer
    from grpojax.models import from_hf
    from grpojax.rollout import SamplingSettings, sample_and_score
    from grpojax.train.steps.forward import reference_logp_fn
    from grpojax.train.steps.grpo import GRPOSettings, grpo_step
    from grpojax.train.steps.optim import make_optimizer
    from grpojax.train.steps.state import create_train_state, merge_model
    from grpojax.train.tasks.base import host_row

    tok = Tokenizer(AutoTokenizer.from_pretrained(args.ckpt), chat_template=False)
    prompts = fixed_length_texts(tok.hf, args.num_prompts, args.prompt_len)
    tx = make_optimizer(LR, total_steps=1000, max_grad_norm=1.0)
    graphdef, state = create_train_state(from_hf(args.ckpt), tx, jax.random.key(args.seed))
    ref_params = jax.tree.map(lambda x: x.copy(), state.params)
    settings = GRPOSettings(loss_type="grpo", beta=BETA, epsilon=0.2, temperature=1.0,
                            max_completion_length=COMPLETION_LEN)
    sampling = SamplingSettings(num_generations=G, max_new_tokens=COMPLETION_LEN, temperature=1.0)
    step = jax.jit(functools.partial(grpo_step, graphdef=graphdef, tx=tx, settings=settings), donate_argnums=0)

    ref_logp = reference_logp_fn(graphdef, 1.0)  # what GRPOTask uses

    def score(batch, prompts_N, texts_N):  # [N, 1] aspect scores
        return np.asarray(length_reward_fn(prompts_N, texts_N), np.float32)[:, None]

    per_step = COMPLETIONS_PER_STEP // G
    holder = {"state": state, "i": 0, "rng": jax.random.key(args.seed + 1)}

    def one_step():
        s = holder["state"]
        i = holder["i"] % (len(prompts) // per_step)
        chunk = prompts[i * per_step:(i + 1) * per_step]
        pb = tok.prompt_batch(chunk, args.prompt_len)
        holder["rng"], r_roll, r_step = jax.random.split(holder["rng"], 3)
        t0 = time.perf_counter()
        ro = sample_and_score(merge_model(graphdef, s.params, s.frozen), pb.prompt_ids_BT, pb.prompt_mask_BT,
                                chunk, r_roll, tok=tok, sampling=sampling, aspect_names=["length"],
                                score_fn=score,
                                aggregation="weighted_sum", scale_rewards="group")
        t1 = time.perf_counter()
        ro.batch["ref_logp_BC"] = jax.block_until_ready(ref_logp(ref_params, s.frozen, ro.batch))
        t2 = time.perf_counter()
        holder["state"], metrics = step(s, ro.batch, r_step)
        row = host_row(metrics)
        t3 = time.perf_counter()
        holder["i"] += 1
        return {"rollout_s": t1 - t0, "ref_s": t2 - t1, "update_s": t3 - t2, "loss": row["loss"],
                "completion_tokens": int(ro.batch["completion_mask_BC"].sum()),
                "rows": int(ro.batch["completion_BC"].shape[0])}

    serve_fn(one_step, {"setup_s": time.perf_counter() - t_setup, "prompt_len": args.prompt_len})


def worker_trl(args) -> None:
    t_setup = time.perf_counter()
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(os.cpu_count() or 1)
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    prompts = fixed_length_texts(tok, args.num_prompts, args.prompt_len)
    out_dir = tempfile.mkdtemp(prefix="trl_grpo_")
    cfg = GRPOConfig(output_dir=out_dir, per_device_train_batch_size=COMPLETIONS_PER_STEP, num_generations=G,
                     max_completion_length=COMPLETION_LEN, beta=BETA, loss_type="grpo", epsilon=0.2,
                     num_iterations=1, temperature=1.0, top_p=1.0, use_vllm=False, learning_rate=LR,
                     max_grad_norm=1.0, weight_decay=0.0, lr_scheduler_type="constant", bf16=False, fp16=False,
                     gradient_checkpointing=False, use_cpu=True, report_to="none", save_strategy="no",
                     logging_steps=10**6, disable_tqdm=True, max_steps=args.steps, seed=args.seed,
                     model_init_kwargs={"dtype": torch.float32}, dataloader_num_workers=0,
                     log_completions=False)
    counts = {}

    class Gate(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            cmd = sys.stdin.readline().strip()
            if cmd != "step":
                raise SystemExit(f"TRL worker: expected 'step', got {cmd!r}")
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            reply({"s": time.perf_counter() - self.t0, **counts})

    trainer = GRPOTrainer(model=args.ckpt, reward_funcs=length_reward_fn, args=cfg,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tok,
                          callbacks=[Gate()])
    original = trainer._generate_and_score_completions

    def counted(inputs):  # records the shapes TRL really trained on (checked by the parent)
        out = original(inputs)
        counts.update(rows=int(out["completion_ids"].shape[0]), prompt_width=int(out["prompt_ids"].shape[1]),
                      completion_tokens=int(out["completion_mask"].sum()))
        return out

    trainer._generate_and_score_completions = counted
    reply({"setup_s": time.perf_counter() - t_setup, "prompt_len": args.prompt_len,
           "torch_threads": torch.get_num_threads()})
    trainer.train()
    line = sys.stdin.readline().strip()
    if line != "quit":
        raise SystemExit(f"TRL worker: expected 'quit', got {line!r}")
    reply({"peak_rss_mb": common.peak_rss_mb()})
    shutil.rmtree(out_dir, ignore_errors=True)


# ---------------------------------------------------------------- parent

def bench(size: str, *, work_dir: str, log_dir: str, repeats: int = 5, seed: int = 0, prompt_len: int = 16,
          sequential: bool = False, log=print) -> dict:
    """Runs both sides on ``size``; returns seconds per step, the ratio, compile / first-step times, RSS."""
    ckpt = os.path.join(work_dir, f"ckpt_{size}_seed{seed}")
    log(f"== grpo_step {size}: building the random checkpoint")
    n_params = build_checkpoint(size, seed, ckpt)
    steps = repeats + 1
    base = [os.path.abspath(__file__), "--ckpt", ckpt, "--steps", str(steps), "--seed", str(seed),
            "--prompt-len", str(prompt_len), "--num-prompts", str(2 * steps)]
    workers = {name: (lambda n=name: Worker(n, base + ["--worker", n], os.path.join(log_dir, f"grpo_{size}_{n}.log")))
               for name in ("ours", "trl")}
    res = run_pair(workers, repeats=repeats, sequential=sequential, log=log)
    for name in res:  # both sides must have trained on the same shapes
        last = res[name]["replies"][-1]
        if last.get("rows") != COMPLETIONS_PER_STEP:
            raise RuntimeError(f"{name} trained on {last.get('rows')} completions per step, expected "
                               f"{COMPLETIONS_PER_STEP}")
    ours, trl = res["ours"], res["trl"]
    upd = sorted(r["update_s"] for r in ours["replies"][1:])
    return {
        "size": size, "parameters": n_params, "config": SIZES[size],
        "workload": {"prompts_per_step": COMPLETIONS_PER_STEP // G, "num_generations": G,
                     "completions_per_step": COMPLETIONS_PER_STEP, "prompt_len": prompt_len,
                     "max_completion_len": COMPLETION_LEN, "beta": BETA, "loss_type": "grpo",
                     "dtype": "float32", "sequential": sequential},
        "ours_s_per_step": ours["median_s"], "trl_s_per_step": trl["median_s"],
        "ratio_vs_trl": trl["median_s"] / ours["median_s"],
        "ours_first_step_s": ours["first_s"], "ours_compile_s_estimate": ours["first_s"] - ours["median_s"],
        "trl_first_step_s": trl["first_s"],
        "ours_update_median_s": upd[len(upd) // 2],
        "ours_rollout_median_s": sorted(r["rollout_s"] for r in ours["replies"][1:])[len(upd) // 2],
        "ours_completion_tokens_last": ours["replies"][-1]["completion_tokens"],
        "trl_completion_tokens_last": trl["replies"][-1].get("completion_tokens"),
        "ours_peak_rss_mb": ours["peak_rss_mb"], "trl_peak_rss_mb": trl["peak_rss_mb"],
        "timings": {n: {k: v for k, v in res[n].items() if k != "replies"} for n in res},
        "worker_replies": {n: res[n]["replies"] for n in res},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--out", help="directory for grpo_results.json (parent mode)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--sequential", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--worker", choices=("ours", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--ckpt", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--num-prompts", type=int, default=16, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        (worker_ours if args.worker == "ours" else worker_trl)(args)
        return 0
    if not args.out:
        p.error("--out is required")
    common.prepare_out(args.out, ["grpo_results.json"], args.overwrite)
    with tempfile.TemporaryDirectory() as work:
        row = bench(args.size, work_dir=work, log_dir=args.out, repeats=args.repeats, seed=args.seed,
                    prompt_len=args.prompt_len, sequential=args.sequential)
    common.write_json(os.path.join(args.out, "grpo_results.json"), {"machine": common.machine(), "result": row})
    print(json.dumps({k: v for k, v in row.items() if k not in ("timings", "worker_replies")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
