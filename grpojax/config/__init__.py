"""Run configuration: frozen dataclasses are the schema of ``configs/*.yaml`` (DESIGN rule 13).

YAML files hold values only. :func:`load_config` reads one, applies ``key=value`` command-line overrides,
checks every key against the schema (an unknown key is an error that names the file and lists the valid
keys at that level), coerces and type-checks every value, validates ranges and cross-field rules, and
returns a frozen, fully resolved config. :func:`dump_config` writes it back as YAML or JSON (the resolved
config is printed at start-up, saved to ``run_dir`` and stored in every checkpoint).

One top-level schema per script kind, sharing sections:

    kind    grpo            reward            dpo (every preference loss)   sft
    ------  --------------  ----------------  ----------------------------  -----------
            model tokenizer data train mesh run_dir export_hf compilation_cache_dir   (all kinds)
            grpo            reward            preference                    --

    kind    ppo (PPO-RLHF)  online_dpo (pairs from the policy's own samples)
            ppo             online_dpo + preference

Names follow TRL where TRL has one (``num_generations``, ``epsilon_high``, ``loss_type``, ``beta``...).
``train.batch_size`` counts *sequences per optimizer step*; for GRPO that is completions, so it must be a
multiple of ``grpo.num_generations`` (prompts per step = batch_size / num_generations), as in TRL.

Modules: ``sections`` (model, tokenizer, data, train, mesh), ``methods`` (grpo, preference, reward,
ppo, online_dpo), ``runs`` (one schema per kind), ``io`` (load / dump), ``checks``, ``unused`` (a key
its kind would never read is refused when set away from its default).

Public API: ``load_config``, ``config_from_dict``, ``config_to_dict``, ``dump_config``, ``write_config``,
``diff_configs``; schemas ``GRPORunConfig``, ``RewardRunConfig``, ``DPORunConfig``, ``SFTRunConfig``,
``PPORunConfig``, ``OnlineDPORunConfig`` (``SCHEMAS[kind]``) and their sections ``ModelConfig``
(``LoraConfig``, ``ModelShape``),
``TokenizerConfig``, ``DataConfig``, ``TrainConfig`` (``PlateauConfig``), ``GRPOConfig``,
``PreferenceConfig``, ``RewardConfig``, ``PPOConfig``, ``OnlineDPOConfig``, ``MeshConfig``.

Example::

    cfg = load_config("configs/tiny_grpo.yaml", ["train.steps=20", "run_dir=/tmp/run"])
    print(dump_config(cfg))
"""

from grpojax.config.io import (
    config_from_dict,
    config_to_dict,
    diff_configs,
    dump_config,
    load_config,
    write_config,
)
from grpojax.config.methods import GRPOConfig, OnlineDPOConfig, PPOConfig, PreferenceConfig, RewardConfig
from grpojax.config.runs import (
    KINDS,
    SCHEMAS,
    DPORunConfig,
    GRPORunConfig,
    OnlineDPORunConfig,
    PPORunConfig,
    RewardRunConfig,
    RunConfig,
    SFTRunConfig,
)
from grpojax.config.sections import (
    DataConfig,
    LoraConfig,
    MeshConfig,
    ModelConfig,
    ModelShape,
    PlateauConfig,
    TokenizerConfig,
    TrainConfig,
)

__all__ = [
    "load_config", "config_from_dict", "config_to_dict", "dump_config", "write_config", "diff_configs",
    "KINDS", "SCHEMAS", "RunConfig", "GRPORunConfig", "RewardRunConfig", "DPORunConfig", "SFTRunConfig",
    "PPORunConfig", "OnlineDPORunConfig", "ModelConfig", "LoraConfig", "ModelShape", "TokenizerConfig",
    "DataConfig", "TrainConfig", "PlateauConfig", "GRPOConfig", "PreferenceConfig", "RewardConfig",
    "PPOConfig", "OnlineDPOConfig", "MeshConfig",
]
