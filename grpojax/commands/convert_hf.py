"""Convert a Hugging Face Qwen checkpoint to an Orbax checkpoint, or back.

    grpojax convert-hf HF_DIR_OR_HUB_ID ORBAX_DIR [--dtype float32|bfloat16] [--overwrite]
    grpojax convert-hf --to-hf ORBAX_DIR HF_OUT_DIR [--overwrite] [--max-shard-mb N]

(``python scripts/convert_hf.py ...`` in a clone is the same command.)
Bad input (missing files, unsupported architecture, non-empty output dir) prints one line on stderr and
exits with status 2; existing output is never overwritten unless --overwrite is given.
"""

import argparse
import sys

import jax.numpy as jnp

from grpojax.models import from_hf, to_hf
from grpojax.models.orbax_io import load_orbax, save_orbax

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def main(argv=None, prog=None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("src", help="HF checkpoint dir or hub id (or, with --to-hf, an Orbax dir)")
    p.add_argument("dst", help="output directory")
    p.add_argument("--to-hf", action="store_true", help="convert an Orbax checkpoint back to HF")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="parameter dtype")
    p.add_argument("--overwrite", action="store_true", help="replace files in a non-empty dst")
    p.add_argument("--max-shard-mb", type=float, default=None, help="shard HF safetensors above this size")
    args = p.parse_args(argv)
    dtype = DTYPES[args.dtype] if args.dtype else None
    try:
        if args.to_hf:
            model = load_orbax(args.src, dtype=dtype)
            shard = None if args.max_shard_mb is None else int(args.max_shard_mb * 2**20)
            to_hf(model, args.dst, overwrite=args.overwrite, max_shard_bytes=shard)
        else:
            model = from_hf(args.src, dtype=dtype or jnp.float32)
            save_orbax(model, args.dst, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as err:
        print(f"convert_hf: error: {err}".replace("\n", " "), file=sys.stderr)
        return 2
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
