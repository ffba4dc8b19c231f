"""Timing helpers shared by the benchmarks: alternated runs, medians, peak RSS, machine description.

Rules every benchmark here follows:
- warm up each contender first (compilation / lazy init), and report that first-call time separately;
- then time ``repeats`` (>= 5) rounds, alternating the contenders inside each round (and their order from
  round to round), so slow drifts of a shared machine hit both sides alike;
- report medians (and min / max), and ratios of medians from the same run.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall-clock seconds of ``fn()`` (which must block until its result is ready) and its result."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def alternate(contenders: dict[str, Callable[[], object]], *, repeats: int = 5,
              log: Callable[[str], None] = print) -> dict[str, dict]:
    """Warm-up once each, then ``repeats`` alternated timed rounds.

    Args:
      contenders: name -> zero-argument callable that runs the workload to completion.
      repeats: timed rounds (>= 5); in odd rounds the order of the contenders is reversed.
      log: progress printer.

    Returns:
      name -> dict(first_s, times_s, median_s, min_s, max_s).
    """
    if repeats < 5:
        raise ValueError(f"repeats must be >= 5 for a median, got {repeats}")
    names = list(contenders)
    out = {n: {"times_s": []} for n in names}
    for n in names:
        first, _ = timed(contenders[n])
        out[n]["first_s"] = first
        log(f"  warm-up {n}: {first:.2f}s")
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            t, _ = timed(contenders[n])
            out[n]["times_s"].append(t)
        log(f"  round {r + 1}: " + ", ".join(f"{n} {out[n]['times_s'][-1]:.2f}s" for n in names))
    for n in names:
        ts = out[n]["times_s"]
        out[n].update(median_s=statistics.median(ts), min_s=min(ts), max_s=max(ts))
    return out


def machine() -> dict:
    """A short description of this machine and the library versions (for results.json / the README)."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 1024 ** 2, 1)
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for mod in ("jax", "jaxlib", "flax", "torch", "transformers", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_1m": os.getloadavg()[0],
        "versions": versions,
    }


def prepare_out(out_dir: str, files: list[str], overwrite: bool) -> None:
    """Creates ``out_dir``; refuses (exit 2) to overwrite existing result files unless ``overwrite``."""
    existing = [f for f in files if os.path.exists(os.path.join(out_dir, f))]
    if existing and not overwrite:
        raise SystemExit(f"error: {', '.join(os.path.join(out_dir, f) for f in existing)} already exists; "
                         "pass --overwrite or choose another --out")
    os.makedirs(out_dir, exist_ok=True)


def write_json(path: str, obj: dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def table(rows: list[list[str]], header: list[str]) -> str:
    """A GitHub-markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
