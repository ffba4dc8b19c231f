"""The sampling tasks read prompts, not completions: a 32-prompt file trains at batch_size=64, G=8
(8 prompts per step), for GRPO, PPO and online DPO."""

import os

import jax
import pytest

from grpojax.config import load_config
from grpojax.train.tasks.grpo import GRPOTask
from grpojax.train.tasks.online_dpo import OnlineDPOTask
from grpojax.train.tasks.ppo import PPOTask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZES = ["train.batch_size=64", "data.path=configs/data/tiny_prompts.jsonl"]  # 32 prompts


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_grpo_trains_on_32_prompts_with_batch_64_and_8_generations(tmp_path):
    cfg = load_config("configs/tiny_grpo.yaml", SIZES + ["grpo.num_generations=8", "grpo.max_completion_length=4",
                                                          f"run_dir={tmp_path}"])
    task = GRPOTask(cfg)
    assert len(task.dataset) == 32 and task.loader.iterator.batch_size == 8
    state = task.init_state()
    for step in range(5):  # past the end of the 4-step epoch
        state, rows = task.train_steps(state, step, [jax.random.key(step)])
        assert task._rollout.batch["completion_BC"].shape[0] == 64
    assert task.loader.iterator.epoch == 1 and "reward" in rows[0]


@pytest.mark.parametrize("kind, cls, extra", [
    ("ppo", PPOTask, ["ppo.num_generations=8"]),
    ("online_dpo", OnlineDPOTask, ["online_dpo.num_generations=8"]),
])
def test_ppo_and_online_dpo_read_8_prompts_per_step(tmp_path, kind, cls, extra):
    cfg = load_config(f"configs/tiny_{kind}.yaml", SIZES + extra + [f"run_dir={tmp_path}"])
    task = cls(cfg)
    assert len(task.dataset) == 32 and task.loader.iterator.batch_size == 8
    rows = task.loader.dataset[next(task.loader.iterator).tolist()]
    assert len(rows["prompt"]) == 8
