"""The records of ``run_dir/completions.jsonl``: a few sampled completions of a rollout with their prompt,
every aspect's score and the reward (plus what the method adds, e.g. GRPO's advantage), written by
:class:`grpojax.train.callbacks.CompletionsLogger` from a task's ``sample_records``."""

from __future__ import annotations

import math
from collections.abc import Sequence


def completion_records(prompts: Sequence[str], completions: Sequence[str], scores_NR, aspect_names: Sequence[str],
                       rewards_N, group: int, limit: int, **per_completion) -> list[dict]:
    """The records :class:`CompletionsLogger` writes for a rollout of ``len(prompts)`` prompts x ``group``
    completions (prompt-major): the first ``max(1, limit // group)`` prompts' groups whole, each completion
    as ``{prompt, completion, rewards/<aspect>, reward, **{k: v[i]}}`` for the ``per_completion`` arrays
    (e.g. ``advantage=``); NaN (not applicable) becomes None (JSON has no NaN)."""
    n = min(max(1, limit // group) * group, len(completions))
    out = []
    for i in range(n):
        rec = {"prompt": prompts[i // group], "completion": completions[i],
               **{f"rewards/{a}": _finite(v) for a, v in zip(aspect_names, scores_NR[i])},
               "reward": _finite(rewards_N[i])}
        rec.update({k: _finite(v[i]) if not isinstance(v[i], str) else v[i] for k, v in per_completion.items()})
        out.append(rec)
    return out


def _finite(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x
