"""No key is accepted and ignored (issue 17 item 8): a kind that would never read a key refuses a
non-default value of it in one line naming the key (``grpojax.config.unused``), and the same key stays
accepted where it has an effect."""

import os

import pytest

from grpojax.cli import UserError
from grpojax.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BT = ["reward.loss=bradley_terry", "reward.aspects=[safety]", "data.label_columns=[]"]
EVAL = "data.eval_path=configs/data/tiny_prompts.jsonl"


def _load(kind, overrides):
    return load_config(os.path.join(ROOT, f"configs/tiny_{kind}.yaml"), ["run_dir=/tmp/never", *overrides])


@pytest.mark.parametrize("kind,overrides,key", [
    ("sft", ["model.ref_path=ref"], "model.ref_path"),
    ("sft", ["data.chosen_column=c"], "data.chosen_column"),
    ("sft", ["data.rejected_column=r"], "data.rejected_column"),
    ("sft", ["data.label_columns=[a]"], "data.label_columns"),
    ("sft", ["data.group_column=g"], "data.group_column"),
    ("sft", ["data.group_names=[a,b]"], "data.group_names"),
    ("sft", ["data.pku_preference=safer"], "data.pku_preference"),
    ("sft", ["data.eval_path=e.jsonl"], "data.eval_path"),
    ("sft", ["mesh.rollout_tensor=1"], "mesh.rollout_tensor"),
    ("sft", ["train.plateau.factor=0.5"], "train.plateau.factor"),
    ("sft", ["tokenizer.chat_template=false", "tokenizer.system_prompt=hi"], "tokenizer.system_prompt"),
    ("sft", ["data.format=pku_saferlhf", "data.prompt_column=q"], "data.prompt_column"),
    ("reward", ["model.ref_path=ref"], "model.ref_path"),
    ("reward", ["data.chosen_column=c"], "data.chosen_column"),
    ("reward", ["data.group_column=g"], "data.group_column"),
    ("reward", ["reward.margin=1.0"], "reward.margin"),
    ("reward", ["data.eval_path=e.jsonl"], "data.eval_path"),
    ("reward", ["mesh.rollout_tensor=1"], "mesh.rollout_tensor"),
    ("reward", [*BT, "reward.aspect_weights=[2.0]"], "reward.aspect_weights"),
    ("reward", [*BT, "reward.label_affine=[2.0,0.0]"], "reward.label_affine"),
    ("reward", [*BT, "data.response_column=r"], "data.response_column"),
    ("reward", [*BT, "train.eval_every=1", "data.eval_path=e.jsonl"], "data.eval_path"),  # no BT evaluation
    ("dpo", ["data.response_column=r"], "data.response_column"),
    ("dpo", ["data.label_columns=[a]"], "data.label_columns"),
    ("dpo", ["preference.loss=dpo", "preference.eta_alpha=0.5"], "preference.eta_alpha"),
    ("dpo", ["preference.loss=ipo", "preference.chi=0.5"], "preference.chi"),
    ("dpo", ["preference.label_smoothing=0.1"], "preference.label_smoothing"),  # gr_ipo: not sigmoid
    ("dpo", ["preference.eta_alpha_decay_on_lr_cut=0.5"], "preference.eta_alpha_decay_on_lr_cut"),
    ("dpo", ["train.plateau.patience=3"], "train.plateau.patience"),
    ("dpo", ["mesh.rollout_tensor=1"], "mesh.rollout_tensor"),
    ("grpo", ["model.ref_path=ref"], "model.ref_path"),  # tiny_grpo: beta 0
    ("grpo", ["grpo.kl_estimator=k1"], "grpo.kl_estimator"),
    ("grpo", ["grpo.use_bias_correction_kl=true"], "grpo.use_bias_correction_kl"),
    ("grpo", ["data.response_column=r"], "data.response_column"),
    ("grpo", ["data.chosen_column=c"], "data.chosen_column"),
    ("grpo", ["train.plateau.min_delta=0.1"], "train.plateau.min_delta"),
    ("grpo", ["grpo.robust.eta_alpha=0.5"], "grpo.robust.eta_alpha"),  # group-robust GRPO off
    ("grpo", ["grpo.robust.chi=0.5"], "grpo.robust.chi"),
    ("grpo", ["grpo.robust.score=char_frac"], "grpo.robust.score"),
    ("ppo", ["ppo.kl_target=3.0"], "ppo.kl_target"),
    ("ppo", ["ppo.kl_horizon=100.0"], "ppo.kl_horizon"),
    ("ppo", ["data.group_column=g"], "data.group_column"),
    ("online_dpo", ["preference.eta_alpha=0.5"], "preference.eta_alpha"),
    ("online_dpo", ["preference.chi=0.5"], "preference.chi"),
    ("online_dpo", ["data.label_columns=[a]"], "data.label_columns"),
])
def test_a_key_the_kind_never_reads_is_refused(kind, overrides, key):
    with pytest.raises(UserError) as e:
        _load(kind, overrides)
    msg = str(e.value)
    assert f": {key}: has no effect in this {kind} run (" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("kind,overrides", [
    ("sft", ["train.eval_every=2"]),
    ("grpo", ["train.eval_every=2"]),
    ("ppo", ["train.eval_every=2"]),
    ("online_dpo", ["train.eval_every=2"]),
    ("reward", ["train.eval_every=2"]),
    ("dpo", ["train.eval_every=2"]),
])
def test_eval_every_without_held_out_data_is_refused(kind, overrides):
    with pytest.raises(UserError, match="train.eval_every: evaluating needs held-out data: set data.eval_split"):
        _load(kind, overrides)


def test_a_rollout_max_length_must_hold_prompt_and_completion():
    with pytest.raises(UserError, match=r"data.max_length: must hold data.max_prompt_length \+ "
                                        r"grpo.max_completion_length = 56, got 50"):
        _load("grpo", ["data.max_length=50"])


@pytest.mark.parametrize("kind,overrides", [  # the same keys where they have an effect
    ("dpo", ["data.chosen_column=c", "data.rejected_column=r", "data.group_column=g"]),
    ("dpo", ["preference.loss=dpo", "preference.label_smoothing=0.1"]),
    ("dpo", ["train.eval_every=2", "data.eval_path=e.jsonl", "train.plateau.enabled=true",
             "train.plateau.patience=3", "preference.eta_alpha_decay_on_lr_cut=0.5"]),
    ("reward", [*BT, "reward.margin=1.0", "data.chosen_column=c"]),
    ("reward", ["train.eval_every=2", "data.eval_path=e.jsonl", "reward.label_affine=[2.0,0.0]"]),
    ("sft", ["train.eval_every=2", "data.eval_path=e.jsonl", "model.lora.rank=2", "model.lora.alpha=8"]),
    ("sft", ["data.format=pku_saferlhf", "data.pku_preference=safer"]),
    ("grpo", ["grpo.beta=0.04", "model.ref_path=ref", "grpo.kl_estimator=k1", "mesh.rollout_tensor=1", EVAL,
              "grpo.use_bias_correction_kl=true"]),
    ("grpo", ["grpo.robust.group_column=g", "grpo.robust.eta_alpha=0.5", "grpo.robust.chi=0.5",
              "grpo.robust.score=char_frac"]),
    ("ppo", ["ppo.adaptive_kl=true", "ppo.kl_target=3.0", "model.ref_path=ref", EVAL]),
    ("online_dpo", ["model.ref_path=ref", "preference.label_smoothing=0.1", "train.eval_every=1", EVAL]),
])
def test_the_same_keys_are_accepted_where_they_have_an_effect(kind, overrides):
    _load(kind, overrides)


def test_dynamic_sampling_and_group_robust_grpo_are_not_combined():
    with pytest.raises(UserError, match="dynamic_sampling_max_rounds: cannot be combined with grpo.robust"):
        _load("grpo", ["grpo.robust.group_column=g", "grpo.dynamic_sampling_max_rounds=2"])
