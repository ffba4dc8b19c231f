"""A reward function in a user's file outside the package, named by its path in ``grpo.reward_funcs``,
receives the data's ``answer`` column aligned with each completion (prompt-major, G copies), a tiny GRPO
run trains on it, and its metric ``rewards/<function>/mean`` (and the held-out ``eval/...``) is logged."""

import json
import os
import sys

import numpy as np
import pytest

from grpojax.config import load_config
from grpojax.train.runner import run
from grpojax.train.tasks import GRPOTask, OnlineDPOTask, PPOTask

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pytest runs with --import-mode=importlib
from test_runner import _metrics, _repo_root  # noqa: F401 (autouse fixture)

REWARD_FILE = '''
import json, os

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.jsonl")

def parity_matches(prompts, completions, answer, **kwargs):
    """1 when the completion's length has the parity the answer names; None without an answer."""
    with open(LOG, "a") as f:
        f.write(json.dumps({"prompts": prompts, "answer": answer, "n": len(completions)}) + "\\n")
    return [None if a is None else float(len(c) % 2 == int(a) % 2) for c, a in zip(completions, answer)]
'''


def test_user_reward_file_gets_the_answer_column_and_is_logged(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "my_reward.py").write_text(REWARD_FILE)
    with open("configs/data/tiny_prompts.jsonl") as f:
        prompts = [json.loads(line)["prompt"] for line in f][:8]
    answers = {p: (None if i == 3 else str(i)) for i, p in enumerate(prompts)}  # one prompt without an answer
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "answer": answers[p]}) + "\n" for p in prompts))
    cfg = load_config("configs/tiny_grpo.yaml", [
        "train.steps=2", "train.eval_every=2", f"data.path={data}", f"data.eval_path={data}",
        f"run_dir={tmp_path / 'run'}",
        f"grpo.reward_funcs=[{user / 'my_reward.py'}:parity_matches]", "train.save_every=100", "mesh.data=1",
        "grpo.dynamic_sampling_max_rounds=3",  # DAPO dynamic sampling in a real run, on the way
        "grpo.shared_prefix=true"])  # and the shared-prefix forward: the mixed rounds keep whole groups
    run(cfg, GRPOTask(cfg))
    calls = [json.loads(line) for line in (user / "calls.jsonl").read_text().splitlines()]
    rows = _metrics(tmp_path / "run")
    rounds = [r["dynamic_sampling/rounds"] for r in rows]
    assert all(1 <= n <= 3 for n in rounds)
    assert len(calls) == sum(rounds) + 2  # every sampling round, then the held-out evaluation: 8 prompts, 2 x 4
    G = cfg.grpo.num_generations
    for c in calls:
        assert c["n"] == len(c["prompts"]) == len(c["answer"]) == 4 * G
        assert c["answer"] == [answers[p] for p in c["prompts"]]  # aligned with each completion's prompt
        assert all(c["prompts"][i] == c["prompts"][i - i % G] for i in range(len(c["prompts"])))  # G copies
    assert len(rows) == 2
    for r in rows:
        assert 0.0 <= r["rewards/parity_matches/mean"] <= 1.0 and np.isfinite(r["loss"])
        assert r["shared_prefix/mismatch"] == 0 and r["train/nonfinite_steps"] == 0
    assert 0.0 <= rows[1]["eval/rewards/parity_matches/mean"] <= 1.0
    # completions.jsonl names each group's prompt as the data gave it, also when dynamic sampling mixed rounds
    assert max(rounds) > 1
    records = [json.loads(line) for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    assert records and all(r["prompt"] in answers for r in records)


@pytest.mark.parametrize("kind", ["ppo", "online_dpo"])
def test_ppo_and_online_dpo_reward_functions_get_the_data_columns(tmp_path, kind):
    """PPO's and online DPO's rollouts (and their held-out evaluation) hand the data's other columns to the
    reward functions as GRPO's do: ``answer`` aligned with every completion's prompt."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "my_reward.py").write_text(REWARD_FILE)
    with open("configs/data/tiny_prompts.jsonl") as f:
        prompts = [json.loads(line)["prompt"] for line in f][:8]
    answers = {p: str(i) for i, p in enumerate(prompts)}
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "answer": answers[p]}) + "\n" for p in prompts))
    extra = (["ppo.ppo_epochs=1", "ppo.num_mini_batches=1", "train.batch_size=8"] if kind == "ppo"
             else ["train.batch_size=8", "online_dpo.num_generations=2"])
    cfg = load_config(f"configs/tiny_{kind}.yaml", [
        "train.steps=1", "train.eval_every=1", f"data.path={data}", f"data.eval_path={data}",
        f"run_dir={tmp_path / 'run'}", f"{kind}.reward_funcs=[{user / 'my_reward.py'}:parity_matches]",
        f"{kind}.max_completion_length=4", "train.save_every=100", "mesh.data=1", *extra])
    run(cfg, {"ppo": PPOTask, "online_dpo": OnlineDPOTask}[kind](cfg))
    calls = [json.loads(line) for line in (user / "calls.jsonl").read_text().splitlines()]
    assert len(calls) >= 2  # the rollout, then the held-out evaluation
    for c in calls:
        assert c["answer"] == [answers[p] for p in c["prompts"]] and c["n"] == len(c["prompts"])
    assert 0.0 <= _metrics(tmp_path / "run")[-1]["eval/rewards/parity_matches/mean"] <= 1.0
