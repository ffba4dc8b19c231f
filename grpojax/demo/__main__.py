"""``python -m grpojax.demo [--task demo|arithmetic] [--out DIR] [--seed 0] [--quick] [--overwrite]``: the
end-to-end demo (:mod:`grpojax.demo.pipeline`) or RL with a verifiable reward on the arithmetic world
(``--task arithmetic``, :mod:`grpojax.demo.arithmetic_pipeline`). Bad input exits 2 with one line; an
existing summary is never replaced
without ``--overwrite``: the same command run again prints the finished run's report and exits 0."""

from __future__ import annotations

import argparse
import os

from grpojax import cli


def _args(argv, prog="python -m grpojax.demo"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("demo", "arithmetic"), default="demo",
                        help="demo: the multi-objective / group-robust demo; "
                             "arithmetic: SFT then GRPO with exact match")
    parser.add_argument("--out", default=None, help="output directory (default runs/demo or runs/arithmetic)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world, models, data order, sampling")
    parser.add_argument("--quick", action="store_true", help="shortened run (CI): fewer steps")
    parser.add_argument("--dpo", action="store_true", help="also run DPO vs GR-DPO on the opinion task")
    parser.add_argument("--overwrite", action="store_true", help="re-run and replace an existing demo run in --out")
    return parser.parse_args(argv)


def main(argv: list[str], prog: str = "python -m grpojax.demo") -> int:
    """``cli.main`` body of the demo (``grpojax demo`` passes its own ``prog``)."""
    args = _args(argv, prog)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.task == "arithmetic":
        if args.quick or args.dpo:
            raise cli.UserError("--quick and --dpo are options of --task demo")
        from grpojax.demo.arithmetic_pipeline import run_arithmetic

        run_arithmetic(args.out or "runs/arithmetic", seed=args.seed, overwrite=args.overwrite)
        return 0
    from grpojax.demo.pipeline import run_pipeline

    run_pipeline(args.out or "runs/demo", seed=args.seed, quick=args.quick, overwrite=args.overwrite, dpo=args.dpo)
    return 0


if __name__ == "__main__":
    cli.main(main)
