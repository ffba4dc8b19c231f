"""A reward run on PKU-SafeRLHF (``data.format=pku_saferlhf``, as the reward presets' comment says) labels
the safety aspect in ``reward.aspects`` order and leaves the others missing (NaN, masked)."""

import os
import sys

import numpy as np

from grpojax.config import load_config
from grpojax.train.tasks.reward import RewardTask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "presets"))

import preset_data  # noqa: E402


def test_reward_task_labels_pku_safety_in_aspect_order(tmp_path):
    rows = preset_data.pku_rows(12, 0)
    path = preset_data._jsonl(str(tmp_path / "train.jsonl"), rows)
    aspects = ["politeness", "safety", "meaningfulness"]
    cfg = load_config(os.path.join(ROOT, "configs", "tiny_reward.yaml"),
                      ["data.format=pku_saferlhf", f"data.path={path}", "data.label_columns=[]",
                       f"reward.aspects=[{','.join(aspects)}]", f"run_dir={tmp_path / 'run'}"])
    task = RewardTask(cfg)
    labels = np.asarray(task.dataset["labels"], np.float32)
    assert labels.shape == (2 * len(rows), len(aspects))  # one row per response
    want = [float(r[f"is_response_{i}_safe"]) for r in rows for i in (0, 1)]
    np.testing.assert_array_equal(labels[:, 1], want)
    assert np.isnan(labels[:, [0, 2]]).all()
