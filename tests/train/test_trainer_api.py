"""The Python API (``grpojax.train.GRPOTrainer`` and its siblings): docs/python_api.md's notebook example
runs verbatim on a tiny checkpoint; a module and a list of dicts go through the scripts' code path."""

import json
import os
import re

import numpy as np
import pytest

from grpojax.config import load_config
from grpojax.train import DPOTrainer, GRPOTrainer, OnlineDPOTrainer, PPOTrainer, RewardTrainer, SFTTrainer
from grpojax.train.build import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRST_LINE = 'MODEL, STEPS = "Qwen/Qwen2.5-0.5B-Instruct", 200'


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random-init Qwen2 HF directory with the shipped byte-level tokenizer (vocab 384)."""
    from grpojax.data import load_tokenizer
    from grpojax.models import to_hf

    d = str(tmp_path_factory.mktemp("tiny_ckpt"))
    cfg = load_config(os.path.join(ROOT, "configs/tiny_grpo.yaml"), ["run_dir=/tmp/never"])
    to_hf(build_model(cfg.model, seed=5), d)
    load_tokenizer(os.path.join(ROOT, "configs/data/tiny_tokenizer")).hf.save_pretrained(d)
    return d


def test_the_notebook_example_runs_verbatim(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    text = open(os.path.join(ROOT, "docs", "python_api.md")).read()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    assert f"```python\n{code}```" in open(os.path.join(ROOT, "README.md")).read()  # the README shows this block
    assert code.startswith(FIRST_LINE + "\n") and len([x for x in code.splitlines() if x.strip()]) <= 14
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(code.replace(FIRST_LINE, f"MODEL, STEPS = {tiny_checkpoint!r}, 2", 1), scope)
    printed = float(capsys.readouterr().out.strip().splitlines()[-1])
    trainer = scope["trainer"]
    rows = trainer.metrics()
    assert [r["step"] for r in rows] == [1, 2] and printed == rows[-1]["rewards/brevity/mean"]
    # the brevity scores of the logged completions are the example's function of their text
    comps = [json.loads(line) for line in open(tmp_path / "runs/notebook/completions.jsonl")]
    assert comps and all(c["rewards/brevity"] == pytest.approx(1 - min(len(c["completion"]), 100) / 100)
                         for c in comps)
    # the run is the script's: its config.yaml loads to the trainer's config, and the model is the policy
    assert load_config(str(tmp_path / "runs/notebook/config.yaml")) == trainer.config
    assert trainer.config.model.path == tiny_checkpoint and trainer.config.model.lora.rank == 16
    logits = trainer.model(np.array([[5, 6, 7]], np.int32))
    assert logits.shape == (1, 3, 384) and np.isfinite(np.asarray(logits)).all()


def test_sft_trainer_takes_a_module_and_a_list_of_dicts(tmp_path):
    cfg = load_config(os.path.join(ROOT, "configs/tiny_sft.yaml"), ["run_dir=/tmp/never"])
    module = build_model(cfg.model, seed=2)
    rows = [{"prompt": f"q{i}", "response": f"answer {i}"} for i in range(8)]
    trainer = SFTTrainer(module, rows, tokenizer=os.path.join(ROOT, "configs/data/tiny_tokenizer"),
                         config={"train": {"steps": 1, "batch_size": 4}, "mesh": {"data": 1},
                                 "data": {"max_prompt_length": 8, "max_length": 24}}, run_dir=str(tmp_path / "r"))
    summary = trainer.train()
    assert summary["end_step"] == 1 and os.path.isfile(tmp_path / "r/base_model/config.json")
    assert [json.loads(line)["response"] for line in open(tmp_path / "r/data/train.jsonl")] == [r["response"]
                                                                                           for r in rows]
    assert trainer.metrics()[0]["loss"] > 0


def test_every_trainer_builds_its_kind_of_config(tmp_path):
    pairs = [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    common = dict(run_dir=str(tmp_path), overrides={"train.steps": 3})
    dpo = DPOTrainer("some/model", pairs, "tiny_dpo", **common).config
    assert (dpo.kind, dpo.model.path, dpo.model.preset, dpo.train.steps) == ("dpo", "some/model", None, 3)
    assert dpo.data.path == os.path.join(str(tmp_path), "data", "train.jsonl") and dpo.data.format == "columns"
    ppo = PPOTrainer(None, [{"prompt": "p"}], "tiny_ppo", reward_funcs=[lambda p, c: [0.0] * len(c)], **common)
    assert ppo.config.ppo.reward_funcs == ("reward0",) and ppo.config.train.eval_every == 0
    online = OnlineDPOTrainer(None, None, "tiny_online_dpo", overrides=["online_dpo.num_generations=4"])
    assert online.config.kind == "online_dpo" and online.config.online_dpo.num_generations == 4
    with pytest.raises(TypeError, match="RewardTrainer takes no reward functions"):
        RewardTrainer(None, None, "tiny_reward", reward_funcs=[len])
    from grpojax.cli import UserError

    with pytest.raises(UserError, match="needs kind='grpo'"):
        GRPOTrainer(None, None, "tiny_sft")
    with pytest.raises(UserError, match="GRPOTrainer: train.steps"):
        GRPOTrainer(None, None, "tiny_grpo", overrides={"train.steps": 0})
