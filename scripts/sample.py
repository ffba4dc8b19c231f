#!/usr/bin/env python
"""Sample completions from a HF Qwen checkpoint with grpojax's KV-cache sampler.

    python scripts/sample.py --model DIR_OR_ID --prompt TEXT | --prompt-ids "1 2 3" --max-new-tokens N
        [--greedy] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--num-samples G] [--chat]
        [--dtype float32|bfloat16] [--json]

Prints the completion text (or ids when the checkpoint has no tokenizer); --json prints one JSON object
with the prompt ids and, per completion, its ids, per-token log-probs, text, finished / truncated flags.
Bad input: a one-line error on stderr and exit code 2. See grpojax/sampling/cli.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from grpojax.sampling.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
