#!/usr/bin/env python
"""Convert a Hugging Face Qwen checkpoint to an Orbax checkpoint, or back: ``grpojax convert-hf`` from a clone.

    python scripts/convert_hf.py HF_DIR_OR_HUB_ID ORBAX_DIR [--dtype float32|bfloat16] [--overwrite]
    python scripts/convert_hf.py --to-hf ORBAX_DIR HF_OUT_DIR [--overwrite] [--max-shard-mb N]

See grpojax/commands/convert_hf.py. Bad input prints one line on stderr and exits with status 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from grpojax.commands.convert_hf import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
