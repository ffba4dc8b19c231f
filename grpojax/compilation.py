"""The persistent XLA compilation cache: compiled programs written to a directory and reused by any later
process that compiles the same program (same HLO, compile options, device kind and JAX / XLA version).

    use_compilation_cache("runs/xla_cache")      # or the run config's ``compilation_cache_dir`` key

A training run compiles its step, the sampler, the reference forward and the evaluation programs at start
(compile times: ``docs/history.md``). With the cache, a resumed, restarted or repeated run (and another
stage compiling an identical program) loads the executable instead. This is JAX's own cache
(``jax_compilation_cache_dir``); the environment variable ``JAX_COMPILATION_CACHE_DIR`` still works when the
config leaves the key unset. The directory is trusted code: never point it at a location that others can
write.
"""

from __future__ import annotations

import os

import jax


def use_compilation_cache(path: str | None, *, min_compile_seconds: float | None = None) -> str | None:
    """Persist compiled programs under ``path`` from now on (``None``: leave JAX's setting as it is).

    ``min_compile_seconds``: only programs whose compilation took at least this long are written (JAX's
    default is 1 s; tiny programs are cheaper to recompile than to read). Switching to another directory
    within one process takes effect for the next compilation. Returns the directory in use (or ``None``).
    """
    from jax._src import compilation_cache

    if min_compile_seconds is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    if path is None:
        return jax.config.jax_compilation_cache_dir
    path = os.path.abspath(os.path.expanduser(path))
    if jax.config.jax_compilation_cache_dir != path:
        os.makedirs(path, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", path)
        compilation_cache.reset_cache()  # a cache opened on another directory is dropped; reopened lazily
    return path
