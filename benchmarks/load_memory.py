"""Peak host memory of ``grpojax.models.from_hf`` on a Qwen2.5-0.5B-shaped random checkpoint.

    python benchmarks/load_memory.py [--dtype bfloat16|float32] [--preset qwen2.5-0.5b] [--dir DIR]

Writes a random-weight HF checkpoint with the preset's exact tensor names and shapes (NumPy, one
safetensors file, the dtype real Qwen checkpoints ship in: bfloat16), then loads it in a fresh
process and reports the process's peak RSS (VmHWM) above its RSS just before ``from_hf`` as a
multiple of the checkpoint's size on disk. The issue asks for at most ~2x.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

CHILD = r"""
import json, os, sys, time
import jax, jax.numpy as jnp
from grpojax.models import from_hf

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
before = status("VmRSS")
t = time.time()
model = from_hf(sys.argv[1], dtype=jnp.dtype(sys.argv[2]))
jax.block_until_ready(jax.tree.leaves(model))
print(json.dumps({"rss_before": before, "peak": status("VmHWM"), "rss_after": status("VmRSS"),
                  "seconds": time.time() - t}))
"""


def write_checkpoint(preset: str, dtype: str, out_dir: str) -> int:
    import ml_dtypes
    from flax import nnx
    from safetensors.numpy import save_file

    from grpojax.models import PRESETS, Qwen, config_to_hf_dict, hf_name_table
    from grpojax.models.hf_io import _get, hf_shape

    cfg = PRESETS[preset]
    abstract = nnx.eval_shape(lambda: Qwen(cfg, rngs=nnx.Rngs(0)))
    pure = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32
    rs = np.random.default_rng(0)
    tensors = {}
    for e in hf_name_table(cfg):
        shape = hf_shape(e, tuple(_get(pure, e.path).shape))
        tensors[e.hf_name] = (0.02 * rs.standard_normal(shape, dtype=np.float32)).astype(np_dtype)
    path = os.path.join(out_dir, "model.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config_to_hf_dict(cfg, extra={"dtype": dtype}), f)
    return os.path.getsize(path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="qwen2.5-0.5b")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--dir", default=None, help="where to write the checkpoint (default: a temp dir)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = args.dir or tmp
        os.makedirs(d, exist_ok=True)
        size = write_checkpoint(args.preset, args.dtype, d)
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        out = subprocess.run([sys.executable, "-c", CHILD, d, args.dtype], env=env, capture_output=True,
                             text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
    gb = 1e9
    extra = r["peak"] - r["rss_before"]
    print(f"preset {args.preset} {args.dtype}: checkpoint {size / gb:.3f} GB; from_hf took {r['seconds']:.1f} s")
    print(f"RSS before load {r['rss_before'] / gb:.3f} GB, after {r['rss_after'] / gb:.3f} GB, "
          f"peak {r['peak'] / gb:.3f} GB")
    print(f"peak increase during load = {extra / gb:.3f} GB = {extra / size:.2f}x the checkpoint size")


if __name__ == "__main__":
    main()
