"""One name per knob from YAML to loss: each step's options are named as their config section's keys and
as their loss's keywords, and :func:`from_section` copies them by name (the derived ones apart)."""

import dataclasses
import inspect

import pytest

from grpojax.config.methods import GRPOConfig, PPOConfig, PreferenceConfig
from grpojax.losses.dpo import dpo_loss
from grpojax.losses.grpo import grpo_loss
from grpojax.losses.ppo import ppo_loss
from grpojax.train.steps.grpo import GRPOSettings
from grpojax.train.steps.ppo import PPOSettings
from grpojax.train.steps.preference import PreferenceSettings
from grpojax.train.steps.settings import from_section

# options that are no config key: derived by the task (or a memory knob with its default)
DERIVED = {GRPOSettings: {"emit_logp", "logprob_chunk", "group_robust"}, PPOSettings: {"logprob_chunk"},
           PreferenceSettings: {"num_groups", "group_sizes", "plateau_factor", "logprob_chunk"}}
SECTION = {GRPOSettings: GRPOConfig, PPOSettings: PPOConfig, PreferenceSettings: PreferenceConfig}


def _names(cls):
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("cls", list(SECTION), ids=lambda c: c.__name__)
def test_every_option_is_a_config_key_of_the_same_name(cls):
    assert _names(cls) - DERIVED[cls] <= _names(SECTION[cls]), _names(cls) - DERIVED[cls] - _names(SECTION[cls])


def test_the_options_reaching_a_loss_keep_their_names():
    assert {"epsilon", "epsilon_high", "delta", "beta", "kl_estimator", "loss_type",
            "importance_sampling_level", "max_completion_length"} <= set(inspect.signature(grpo_loss).parameters)
    assert {"cliprange", "cliprange_value", "kl_coef", "reduction"} <= set(inspect.signature(ppo_loss).parameters)
    assert {"beta", "label_smoothing"} <= set(inspect.signature(dpo_loss).parameters)


def test_from_section_copies_shared_fields_by_name_and_refuses_a_second_value():
    ppo = PPOConfig(cliprange=0.3, cliprange_value=None, kl_mode="loss", gamma=0.9, reward_funcs=("length",))
    s = from_section(PPOSettings, ppo)
    assert (s.cliprange, s.cliprange_value, s.kl_in_loss, s.gamma, s.logprob_chunk) == (0.3, None, True, 0.9, 128)
    pref = PreferenceConfig(loss="gr_dpo", eta_alpha=0.5, eta_alpha_decay_on_lr_cut=0.5)
    p = from_section(PreferenceSettings, pref, num_groups=2, group_sizes=(3, 5))
    assert (p.eta_alpha, p.eta_alpha_decay_on_lr_cut, p.group_sizes) == (0.5, 0.5, (3, 5))
    with pytest.raises(ValueError, match=r"\['beta'\] come from the config section"):
        from_section(PreferenceSettings, pref, beta=1.0)
