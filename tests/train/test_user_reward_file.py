"""A reward function in a user's file outside the package, named by its path in ``grpo.reward_funcs``,
receives the data's ``answer`` column aligned with each completion (prompt-major, G copies), a tiny GRPO
run trains on it, and its metric ``rewards/<function>/mean`` (and the held-out ``eval/...``) is logged."""

import json
import os
import sys

import numpy as np

from grpojax.config import load_config
from grpojax.train.runner import run
from grpojax.train.tasks import GRPOTask

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
        "grpo.dynamic_sampling_max_rounds=3"])  # DAPO dynamic sampling in a real run, on the way
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
    assert 0.0 <= rows[1]["eval/rewards/parity_matches/mean"] <= 1.0
