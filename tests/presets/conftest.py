"""Fixtures of the preset tests: a user's working directory with the stand-in hub cache and data.

``preset_world`` (session scope, built once, ~10 s): a temporary directory laid out as a user's checkout
(``configs`` and ``scripts`` link to this repository's) holding

- ``hf/hub/``: the tiny offline stand-in for the Qwen2.5 hub checkpoints (``qwen_standin``), found by
  ``HF_HOME=<dir>/hf`` under the presets' own hub ids;
- ``data/multi_label_reward{,_eval}.jsonl``: the reward presets' default data paths;
- ``hub_data/``: PKU-SafeRLHF and GlobalOpinionQA in their real column layouts (``preset_data``).
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import preset_data  # noqa: E402
import qwen_standin  # noqa: E402


@pytest.fixture(scope="session")
def preset_world(tmp_path_factory):
    """``{"dir": working directory, "data": name -> path, "repos": hub id -> snapshot dir, "env": env}``;
    ``env`` is the environment a command of the world runs with (offline, ``HF_HOME`` = the stand-in)."""
    d = str(tmp_path_factory.mktemp("preset_world"))
    data = preset_data.write_all(d)
    repos = qwen_standin.build_hub_cache(os.path.join(d, "hf"), preset_data.corpus(data))
    for name in ("configs", "scripts"):
        os.symlink(os.path.join(ROOT, name), os.path.join(d, name))
    env = dict(os.environ, HF_HOME=os.path.join(d, "hf"), HF_HUB_CACHE=os.path.join(d, "hf", "hub"),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]))
    return {"dir": d, "data": data, "repos": repos, "env": env}
