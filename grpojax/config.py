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

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Literal, Union

import yaml

from grpojax import cli
from grpojax.cli import UserError


class _Invalid(Exception):
    """A field failed validation; ``key`` is the dotted path relative to the dataclass being built."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise _Invalid(key, message)


def _positive(obj, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        _check(v is None or v > 0, n, f"must be > 0, got {v}")


def _non_negative(obj, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        _check(v is None or v >= 0, n, f"must be >= 0, got {v}")


Dtype = Literal["float32", "bfloat16", "float16"]
_ALL_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters: ``W + (alpha / rank) B A`` on the ``targets`` projections; rank 0 = full fine-tuning."""

    rank: int = 0
    alpha: float = 16.0
    targets: tuple[str, ...] = _ALL_PROJ

    def __post_init__(self):
        _non_negative(self, "rank")
        _positive(self, "alpha")
        _check(self.rank == 0 or len(self.targets) > 0, "targets", "must name at least one projection")


@dataclass(frozen=True)
class ModelShape:
    """Optional overrides of a preset's shape (``QwenConfig`` field names; None = keep the preset's).
    Tiny CPU configs use a published preset shrunk this way: ``dataclasses.replace(PRESETS[p], **set)``."""

    vocab_size: Union[int, None] = None
    hidden_size: Union[int, None] = None
    intermediate_size: Union[int, None] = None
    num_layers: Union[int, None] = None
    num_heads: Union[int, None] = None
    num_kv_heads: Union[int, None] = None
    head_dim: Union[int, None] = None
    max_position_embeddings: Union[int, None] = None

    def __post_init__(self):
        _positive(self, *(f.name for f in dataclasses.fields(self)))
        n, k = self.num_heads, self.num_kv_heads
        _check(n is None or k is None or n % k == 0, "num_kv_heads", f"must divide num_heads={n}, got {k}")

    def overrides(self) -> dict:
        """The fields that are set, for ``dataclasses.replace(preset, **overrides)``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class ModelConfig:
    """The policy (or reward-model backbone). Exactly one of ``path`` (HF dir / hub id) or ``preset``
    (a name in ``grpojax.models.PRESETS``, random init, optionally resized by ``shape``) is set.
    ``ref_path``: the frozen reference for KL / DPO (None = the initial policy weights).
    ``remat``: activation checkpointing of every decoder block in training forwards (``none`` keeps all
    activations, ``block`` keeps the matmul outputs, ``full`` only each block's input; ``Qwen(remat=)``).
    ``scan_layers``: stack the layers and run them with ``jax.lax.scan`` (compile time independent of
    depth; ``QwenConfig.scan_layers``), for the policy and its reference (a reward run: its backbone).
    It changes the checkpoint's parameter tree, so a run resumes only with the value it started with;
    ``remat`` may change on resume."""

    path: Union[str, None] = None
    preset: Union[str, None] = None
    shape: ModelShape = field(default_factory=ModelShape)
    ref_path: Union[str, None] = None
    dtype: Dtype = "float32"
    param_dtype: Dtype = "float32"
    lora: LoraConfig = field(default_factory=LoraConfig)
    remat: Literal["none", "block", "full"] = "none"
    scan_layers: bool = False

    def __post_init__(self):
        _check((self.path is None) != (self.preset is None), "path",
               "set exactly one of model.path (HF dir or hub id) and model.preset (random init)")
        if self.preset is not None:
            from grpojax.models.config import PRESETS  # the published shapes (light module, no model code)

            _check(self.preset in PRESETS, "preset", f"unknown preset {self.preset!r}; valid presets: "
                   f"{', '.join(PRESETS)}")
        _check(self.preset is not None or not self.shape.overrides(), "shape",
               "shape overrides apply to model.preset only (a checkpoint's shape comes from its config.json)")


@dataclass(frozen=True)
class TokenizerConfig:
    """``path`` None = the model's directory / hub id. The chat template is applied when the tokenizer has
    one and ``chat_template`` is true; plain text otherwise."""

    path: Union[str, None] = None
    chat_template: bool = True
    system_prompt: Union[str, None] = None


@dataclass(frozen=True)
class DataConfig:
    """Where examples come from and how they are cut to fixed shapes.

    ``format``: ``columns`` (any hub id or local .jsonl/.json/.parquet/.csv file, columns named below) or a
    named builder: ``pku_saferlhf``, ``global_opinions`` (ALGORITHMS.md 2.5), ``hh_rlhf``. ``path`` None
    uses the builder's hub id. Sequence layout: prompt left-padded to ``max_prompt_length``, response
    right-padded to ``max_length - max_prompt_length``.
    """

    path: Union[str, None] = None
    format: Literal["columns", "pku_saferlhf", "global_opinions", "hh_rlhf"] = "columns"
    name: Union[str, None] = None  # hub config (subset) name
    split: str = "train"
    eval_split: Union[str, None] = None
    eval_path: Union[str, None] = None
    prompt_column: str = "prompt"
    response_column: str = "response"
    chosen_column: str = "chosen"
    rejected_column: str = "rejected"
    label_columns: tuple[str, ...] = ()
    group_column: Union[str, None] = None
    group_names: tuple[str, ...] = ()  # fixes the group name -> id order (default: sorted names)
    pku_preference: Literal["better", "safer"] = "better"
    max_prompt_length: int = 128
    max_length: int = 256
    max_examples: Union[int, None] = None
    shuffle_seed: int = 0

    def __post_init__(self):
        _check(self.path is not None or self.format != "columns", "path",
               "data.path is required with format=columns (a local file or a hub dataset id)")
        _positive(self, "max_prompt_length", "max_length", "max_examples")
        _check(self.max_length > self.max_prompt_length, "max_length",
               f"must exceed max_prompt_length={self.max_prompt_length}, got {self.max_length}")
        _check(len(set(self.group_names)) == len(self.group_names), "group_names", "has duplicates")


@dataclass(frozen=True)
class PlateauConfig:
    """LR-on-plateau (preference runs): multiply the LR by ``factor`` after ``patience`` evaluations
    without improvement of the eval loss (the GR-IPO paper divides by 10)."""

    enabled: bool = False
    factor: float = 0.1
    patience: int = 1
    min_delta: float = 0.0

    def __post_init__(self):
        _check(0.0 < self.factor < 1.0, "factor", f"must be in (0, 1), got {self.factor}")
        _positive(self, "patience")
        _non_negative(self, "min_delta")


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer (AdamW + schedule + clipping), loop length, logging and checkpoint cadence.

    ``batch_size`` = sequences per optimizer step (GRPO: completions); ``micro_batch_size`` (None = no
    gradient accumulation) must divide it. ``eval_every`` 0 = no evaluation; ``max_grad_norm`` None = no
    clipping."""

    steps: int = 100
    batch_size: int = 8
    micro_batch_size: Union[int, None] = None
    learning_rate: float = 1e-6
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: Union[float, None] = 1.0
    seed: int = 0
    log_every: int = 1
    save_every: int = 100
    keep_checkpoints: int = 3
    eval_every: int = 0
    plateau: PlateauConfig = field(default_factory=PlateauConfig)

    def __post_init__(self):
        _positive(self, "steps", "batch_size", "micro_batch_size", "learning_rate", "adam_eps",
                  "max_grad_norm", "log_every", "save_every", "keep_checkpoints")
        _non_negative(self, "warmup_steps", "weight_decay", "eval_every")
        _check(self.micro_batch_size is None or self.batch_size % self.micro_batch_size == 0,
               "micro_batch_size", f"must divide batch_size={self.batch_size}, got {self.micro_batch_size}")
        for n in ("adam_b1", "adam_b2"):
            _check(0.0 <= getattr(self, n) < 1.0, n, f"must be in [0, 1), got {getattr(self, n)}")
        _check(self.warmup_steps <= self.steps, "warmup_steps",
               f"must be <= steps={self.steps}, got {self.warmup_steps}")
        _check(not self.plateau.enabled or self.eval_every > 0, "plateau.enabled",
               "LR-on-plateau needs evaluations: set train.eval_every > 0")

    @property
    def grad_accum(self) -> int:
        """Micro-batches per optimizer step."""
        return 1 if self.micro_batch_size is None else self.batch_size // self.micro_batch_size


@dataclass(frozen=True)
class GRPOConfig:
    """Multi-objective GRPO (ALGORITHMS.md 1.2-1.4); TRL names. ``epsilon_high`` None = ``epsilon``;
    ``delta`` None = no two-sided ratio cap; ``top_k`` None = off. Rewards: a multi-label
    ``reward_model`` scoring ``aspects`` and/or rule-based ``reward_funcs`` (names in
    ``grpojax.rewards``), combined by ``aggregation`` with ``reward_weights`` (aspects first, then funcs;
    empty = all 1)."""

    num_generations: int = 8
    num_iterations: int = 1
    epsilon: float = 0.2
    epsilon_high: Union[float, None] = None
    delta: Union[float, None] = None
    beta: float = 0.04
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "grpo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    importance_sampling_level: Literal["token", "sequence"] = "token"
    mask_truncated_completions: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: Union[int, None] = None
    max_completion_length: int = 256
    reward_model: Union[str, None] = None
    reward_funcs: tuple[str, ...] = ()
    aspects: tuple[str, ...] = ()
    reward_weights: tuple[float, ...] = ()
    aggregation: Literal["weighted_sum", "normalize_then_sum", "min", "soft_min"] = "weighted_sum"

    def __post_init__(self):
        _check(self.num_generations >= 2, "num_generations",
               f"must be >= 2 (group-relative advantages need a group), got {self.num_generations}")
        _positive(self, "num_iterations", "epsilon", "epsilon_high", "delta", "temperature", "top_k",
                  "max_completion_length")
        _non_negative(self, "beta")
        _check(self.delta is None or self.delta > 1.0, "delta", f"must be > 1 (a cap on the ratio), got {self.delta}")
        _check(0.0 < self.top_p <= 1.0, "top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.reward_model is not None or len(self.reward_funcs) > 0, "reward_model",
               "GRPO needs a reward: set grpo.reward_model and/or grpo.reward_funcs")
        _check(self.reward_model is None or len(self.aspects) > 0, "aspects",
               "name the reward model's aspects (one per output score)")
        _check(len(set(self.aspects)) == len(self.aspects), "aspects", "has duplicates")


@dataclass(frozen=True)
class PreferenceConfig:
    """Offline preference losses (ALGORITHMS.md 2). ``eta_alpha``: robust step size; ``chi``: trade-off
    (1 = fully robust); ``eta_alpha_decay_on_lr_cut``: factor applied to eta_alpha at each LR-on-plateau
    cut (1 = unchanged); ``average_logprobs``: length-averaged instead of summed sequence log-probs."""

    loss: Literal["dpo", "ipo", "hinge", "gr_dpo", "gr_ipo", "is_dpo"] = "dpo"
    beta: float = 0.1
    label_smoothing: float = 0.0
    eta_alpha: float = 0.01
    chi: float = 1.0
    eta_alpha_decay_on_lr_cut: float = 1.0
    average_logprobs: bool = False

    def __post_init__(self):
        _positive(self, "beta")
        _non_negative(self, "eta_alpha")
        _check(0.0 <= self.label_smoothing < 0.5, "label_smoothing", f"must be in [0, 0.5), got {self.label_smoothing}")
        _check(0.0 <= self.chi <= 1.0, "chi", f"must be in [0, 1], got {self.chi}")
        _check(0.0 < self.eta_alpha_decay_on_lr_cut <= 1.0, "eta_alpha_decay_on_lr_cut",
               f"must be in (0, 1], got {self.eta_alpha_decay_on_lr_cut}")


@dataclass(frozen=True)
class RewardConfig:
    """Reward-model training (ALGORITHMS.md 1.1). ``label_affine`` = (scale, offset): labels are mapped
    ``y' = scale * y + offset`` before the loss (stored with the model to map scores back)."""

    aspects: tuple[str, ...] = ()
    loss: Literal["regression", "bradley_terry"] = "regression"
    aspect_weights: tuple[float, ...] = ()
    label_affine: Union[tuple[float, float], None] = None
    margin: float = 0.0

    def __post_init__(self):
        _check(len(self.aspects) > 0, "aspects", "name at least one aspect (one score per aspect)")
        _check(len(set(self.aspects)) == len(self.aspects), "aspects", "has duplicates")
        _check(not self.aspect_weights or len(self.aspect_weights) == len(self.aspects), "aspect_weights",
               f"needs one weight per aspect ({len(self.aspects)}), got {len(self.aspect_weights)}")
        _check(all(w >= 0 for w in self.aspect_weights), "aspect_weights", "must be >= 0")
        _check(self.label_affine is None or self.label_affine[0] != 0, "label_affine", "scale must be non-zero")
        _check(self.loss != "bradley_terry" or len(self.aspects) == 1, "aspects",
               "bradley_terry trains one score: give exactly one aspect")


@dataclass(frozen=True)
class _RolloutFields:
    """Sampling and reward fields shared by the online methods other than GRPO (same names and meaning as
    in :class:`GRPOConfig`): ``num_generations`` completions per prompt, sampled at ``temperature`` /
    ``top_p`` / ``top_k`` up to ``max_completion_length`` tokens, scored by a multi-label ``reward_model``
    (``aspects``) and/or ``reward_funcs``, combined by ``aggregation`` with ``reward_weights``."""

    num_generations: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: Union[int, None] = None
    max_completion_length: int = 256
    reward_model: Union[str, None] = None
    reward_funcs: tuple[str, ...] = ()
    aspects: tuple[str, ...] = ()
    reward_weights: tuple[float, ...] = ()
    aggregation: Literal["weighted_sum", "normalize_then_sum", "min", "soft_min"] = "weighted_sum"

    def __post_init__(self):
        _positive(self, "num_generations", "temperature", "top_k", "max_completion_length")
        _check(0.0 < self.top_p <= 1.0, "top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.reward_model is not None or len(self.reward_funcs) > 0, "reward_model",
               "needs a reward: set reward_model and/or reward_funcs")
        _check(self.reward_model is None or len(self.aspects) > 0, "aspects",
               "name the reward model's aspects (one per output score)")
        _check(len(set(self.aspects)) == len(self.aspects), "aspects", "has duplicates")
        r, f = len(self.aspects), len(self.reward_funcs)
        _check(not self.reward_weights or len(self.reward_weights) == r + f, "reward_weights",
               f"needs one weight per aspect ({r}) plus one per reward_func ({f}), got {len(self.reward_weights)}")


@dataclass(frozen=True)
class PPOConfig(_RolloutFields):
    """PPO-RLHF (Ziegler et al. 2019; TRL ``PPOConfig`` names where TRL has one). Each rollout of
    ``train.batch_size`` completions is reused for ``ppo_epochs`` passes of ``num_mini_batches`` shuffled
    mini-batches (one optimizer step each). ``kl_mode``: ``reward`` puts ``-kl_coef * KL`` in the per-token
    rewards, ``loss`` adds ``kl_coef * KL`` to the loss; ``adaptive_kl`` adapts ``kl_coef`` toward
    ``kl_target`` (per-sequence KL) over ``kl_horizon`` samples. ``critic``: ``shared`` = a value head on
    the policy backbone, ``separate`` = its own backbone loaded from ``critic_path`` (e.g. the reward model's
    backbone as a HF directory; None = a copy of the initial policy). ``missing_eos_penalty``: subtracted
    from the score of completions that hit the length limit (None = off)."""

    ppo_epochs: int = 4
    num_mini_batches: int = 1
    cliprange: float = 0.2
    cliprange_value: Union[float, None] = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    kl_mode: Literal["reward", "loss"] = "reward"
    kl_coef: float = 0.05
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    adaptive_kl: bool = False
    kl_target: float = 6.0
    kl_horizon: float = 10000.0
    whiten_rewards: bool = False
    whiten_advantages: bool = True
    reduction: Literal["token_mean", "sequence_mean"] = "token_mean"
    missing_eos_penalty: Union[float, None] = None
    critic: Literal["shared", "separate"] = "shared"
    critic_path: Union[str, None] = None
    value_head_init_std: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "ppo_epochs", "num_mini_batches", "kl_target", "kl_horizon")
        _non_negative(self, "cliprange", "cliprange_value", "vf_coef", "kl_coef", "missing_eos_penalty",
                      "value_head_init_std")
        for n in ("gamma", "lam"):
            _check(0.0 <= getattr(self, n) <= 1.0, n, f"must be in [0, 1], got {getattr(self, n)}")
        _check(self.critic == "separate" or self.critic_path is None, "critic_path",
               "a critic checkpoint needs critic: separate (the shared critic is the policy backbone)")


@dataclass(frozen=True)
class OnlineDPOConfig(_RolloutFields):
    """Online / iterative DPO from the reward model: per prompt, the best and the worst of the policy's
    ``num_generations`` samples under the aggregated reward form a (chosen, rejected) pair, trained with the
    ``preference`` section's loss against the initial policy as reference; groups whose best and worst
    rewards are equal give no pair."""

    num_generations: int = 4

    def __post_init__(self):
        super().__post_init__()
        _check(self.num_generations >= 2, "num_generations",
               f"must be >= 2 (a pair needs two samples), got {self.num_generations}")


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh axis sizes (-1 = all remaining devices, at most one axis); ``distributed`` calls
    ``jax.distributed.initialize()`` first (multi-host)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    distributed: bool = False

    def __post_init__(self):
        sizes = (self.data, self.fsdp, self.tensor)
        for n, v in zip(("data", "fsdp", "tensor"), sizes):
            _check(v == -1 or v >= 1, n, f"must be -1 or >= 1, got {v}")
        _check(sizes.count(-1) <= 1, "data", "at most one mesh axis may be -1")

Kind = Literal["grpo", "reward", "dpo", "sft", "ppo", "online_dpo"]
KINDS = ("grpo", "reward", "dpo", "sft", "ppo", "online_dpo")


@dataclass(frozen=True)
class _RunBase:
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    run_dir: str = "runs/default"  # checkpoints, metrics.jsonl, tb/, config.yaml
    export_hf: Union[str, None] = None  # write the final policy as a HF directory here
    # persistent XLA compilation cache (grpojax.compilation): a rerun / resumed run loads its compiled
    # programs from here instead of compiling again; null = JAX's own setting (JAX_COMPILATION_CACHE_DIR)
    compilation_cache_dir: Union[str, None] = None

    def __post_init__(self):
        _check(self.tokenizer.path is not None or self.model.path is not None, "tokenizer.path",
               "model.preset has no tokenizer: set tokenizer.path (a tokenizer directory or hub id)")
        _check(bool(self.run_dir.strip()), "run_dir", "must be a non-empty directory path")

    @property
    def tokenizer_path(self) -> str:
        """``tokenizer.path``, else the model's directory / hub id."""
        return self.tokenizer.path if self.tokenizer.path is not None else self.model.path


@dataclass(frozen=True)
class GRPORunConfig(_RunBase):
    """``scripts/train_grpo.py``: online multi-objective GRPO (ALGORITHMS.md 1)."""

    kind: Literal["grpo"] = "grpo"
    grpo: GRPOConfig = field(default_factory=GRPOConfig)

    def __post_init__(self):
        super().__post_init__()
        g = self.grpo.num_generations
        _check(self.train.batch_size % g == 0, "train.batch_size",
               f"must be a multiple of grpo.num_generations={g} (completions per step), got {self.train.batch_size}")
        mb = self.train.micro_batch_size
        _check(mb is None or mb % g == 0, "train.micro_batch_size",
               f"must be a multiple of grpo.num_generations={g} so groups are never split, got {mb}")
        r = len(self.grpo.aspects)
        _check(not self.grpo.reward_weights or len(self.grpo.reward_weights) == r + len(self.grpo.reward_funcs),
               "grpo.reward_weights", f"needs one weight per aspect ({r}) plus one per reward_func "
               f"({len(self.grpo.reward_funcs)}), got {len(self.grpo.reward_weights)}")


@dataclass(frozen=True)
class RewardRunConfig(_RunBase):
    """``scripts/train_reward.py``: multi-label (or Bradley-Terry) reward model (ALGORITHMS.md 1.1)."""

    kind: Literal["reward"] = "reward"
    reward: RewardConfig = field(default_factory=RewardConfig)

    def __post_init__(self):
        super().__post_init__()
        if self.reward.loss == "regression" and self.data.format == "columns":
            n = len(self.reward.aspects)
            _check(len(self.data.label_columns) == n, "data.label_columns",
                   f"needs one column per reward.aspects entry ({n}), got {len(self.data.label_columns)}")


@dataclass(frozen=True)
class DPORunConfig(_RunBase):
    """``scripts/train_dpo.py``: DPO / IPO / hinge / GR-DPO / GR-IPO / IS-DPO (ALGORITHMS.md 2)."""

    kind: Literal["dpo"] = "dpo"
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)

    def __post_init__(self):
        super().__post_init__()
        robust = self.preference.loss in ("gr_dpo", "gr_ipo", "is_dpo")
        _check(not robust or self.data.group_column is not None or self.data.format == "global_opinions",
               "data.group_column", f"preference.loss={self.preference.loss} needs groups: set data.group_column")


@dataclass(frozen=True)
class SFTRunConfig(_RunBase):
    """``scripts/sft.py``: supervised fine-tuning on (prompt, response) pairs."""

    kind: Literal["sft"] = "sft"


@dataclass(frozen=True)
class PPORunConfig(_RunBase):
    """``scripts/train_ppo.py``: PPO-RLHF with a value head / critic, GAE and a KL controller.
    ``train.batch_size`` = completions per rollout (a multiple of ``ppo.num_generations``); each
    optimizer step takes one mini-batch of ``batch_size / ppo.num_mini_batches`` completions."""

    kind: Literal["ppo"] = "ppo"
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def __post_init__(self):
        super().__post_init__()
        p, bs = self.ppo, self.train.batch_size
        _check(bs % p.num_generations == 0, "train.batch_size",
               f"must be a multiple of ppo.num_generations={p.num_generations}, got {bs}")
        _check(bs % p.num_mini_batches == 0, "ppo.num_mini_batches",
               f"must divide train.batch_size={bs}, got {p.num_mini_batches}")
        mini, mb = bs // p.num_mini_batches, self.train.micro_batch_size
        _check(mb is None or mini % mb == 0, "train.micro_batch_size",
               f"must divide the mini-batch size {mini} (train.batch_size / ppo.num_mini_batches), got {mb}")


@dataclass(frozen=True)
class OnlineDPORunConfig(_RunBase):
    """``scripts/train_online_dpo.py``: online DPO on best-vs-worst pairs of the policy's own samples.
    ``train.batch_size`` = completions per step (prompts per step = pairs at most =
    ``batch_size / online_dpo.num_generations``)."""

    kind: Literal["online_dpo"] = "online_dpo"
    online_dpo: OnlineDPOConfig = field(default_factory=OnlineDPOConfig)
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)

    def __post_init__(self):
        super().__post_init__()
        g, bs = self.online_dpo.num_generations, self.train.batch_size
        _check(bs % g == 0, "train.batch_size",
               f"must be a multiple of online_dpo.num_generations={g} (completions per step), got {bs}")
        _check(self.preference.loss in ("dpo", "ipo", "hinge"), "preference.loss",
               f"online DPO has no groups: use dpo, ipo or hinge, got {self.preference.loss}")
        mb, prompts = self.train.micro_batch_size, bs // g
        _check(mb is None or prompts % mb == 0, "train.micro_batch_size",
               f"counts pairs here and must divide the {prompts} prompts per step, got {mb}")


SCHEMAS = {"grpo": GRPORunConfig, "reward": RewardRunConfig, "dpo": DPORunConfig, "sft": SFTRunConfig,
           "ppo": PPORunConfig, "online_dpo": OnlineDPORunConfig}
RunConfig = Union[GRPORunConfig, RewardRunConfig, DPORunConfig, SFTRunConfig, PPORunConfig, OnlineDPORunConfig]


def load_config(path: str, overrides: list[str] | tuple[str, ...] = (), kind: str | None = None) -> RunConfig:
    """Reads a YAML config, applies ``key=value`` overrides, validates, and returns the frozen config.

    Args:
      path: a YAML file holding a mapping (values only). Its top-level ``kind`` key picks the schema
        unless ``kind`` is given; when both are present they must agree.
      overrides: ``"section.key=value"`` strings applied after the file (dotted paths, e.g.
        ``train.steps=10``, ``model.lora.rank=8``, ``grpo.aspects=[safety,helpfulness]``, ``export_hf=null``).
        Values are parsed as YAML scalars/lists and coerced to the field's type.
      kind: ``"grpo" | "reward" | "dpo" | "sft"``.

    Raises:
      UserError: missing/unreadable file, bad YAML, unknown key (names the file and lists the valid keys),
        wrong type, or an invalid value (names the dotted key).
    """
    raw = _read_yaml(path)
    file_kind = raw.get("kind")
    if kind is None and file_kind is None:
        raise UserError(f"{path}: no 'kind' key and no kind given; add 'kind: grpo|reward|dpo|sft'")
    if kind is not None and kind not in SCHEMAS:
        raise UserError(f"unknown config kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if file_kind is not None and file_kind not in SCHEMAS:
        raise UserError(f"{path}: kind: {file_kind!r} is not one of {', '.join(KINDS)}")
    if kind is not None and file_kind is not None and kind != file_kind:
        raise UserError(f"{path}: this is a kind={file_kind!r} config but this script needs kind={kind!r}")
    kind = kind or file_kind
    raw = dict(raw, kind=kind)
    for item in overrides:
        _apply_override(raw, item, SCHEMAS[kind])
    return _build(SCHEMAS[kind], raw, source=path)


def config_from_dict(d: dict, kind: str | None = None, source: str = "<dict>") -> RunConfig:
    """Builds and validates a config from a plain (e.g. JSON-restored) dict; same checks as YAML files."""
    kind = kind or d.get("kind")
    if kind not in SCHEMAS:
        raise UserError(f"{source}: kind {kind!r} is not one of {', '.join(KINDS)}")
    return _build(SCHEMAS[kind], dict(d, kind=kind), source=source)


def config_to_dict(cfg) -> dict:
    """The resolved config as plain JSON-able Python (tuples become lists)."""
    return _to_plain(dataclasses.asdict(cfg))


def dump_config(cfg, fmt: Literal["yaml", "json"] = "yaml") -> str:
    """The resolved config as YAML (``kind`` first, section order as in the schema) or JSON text."""
    d = config_to_dict(cfg)
    if fmt == "json":
        return json.dumps(d, indent=2)
    if fmt != "yaml":
        raise ValueError(f"fmt must be 'yaml' or 'json', got {fmt!r}")
    d = {"kind": d.pop("kind"), **d}
    return yaml.safe_dump(d, sort_keys=False, default_flow_style=False)


def write_config(cfg, run_dir: str) -> str:
    """Writes the resolved config to ``<run_dir>/config.yaml`` (atomically) and returns the path. A resumed
    run rewrites it with its own resolved values (only resumable keys such as ``train.steps`` can differ:
    ``grpojax.checkpoint.Checkpointer`` refuses anything else)."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "config.yaml")
    with open(path + ".tmp", "w") as f:
        f.write(dump_config(cfg))
    os.replace(path + ".tmp", path)
    return path


def diff_configs(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two config dicts, skipping ``ignore`` prefixes."""
    out = []

    def walk(a, b, prefix):
        for k in sorted(set(a) | set(b)):
            key = f"{prefix}{k}"
            if any(key == i or key.startswith(i + ".") for i in ignore):
                continue
            va, vb = a.get(k, "<missing>"), b.get(k, "<missing>")
            if isinstance(va, dict) and isinstance(vb, dict):
                walk(va, vb, key + ".")
            elif va != vb:
                out.append(f"{key}: {va!r} -> {vb!r}")

    walk(old, new, "")
    return out


# ----------------------------------------------------------------------------------------------------------
# Parsing: YAML / overrides -> typed, validated dataclasses.

_NULLS = ("null", "none", "~")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"config file not found: {path}")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML: {cli.one_line(str(e))}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    return raw


def _fields(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _apply_override(raw: dict, item: str, schema) -> None:
    """Sets ``raw[a][b] = value`` for ``"a.b=value"`` after checking that ``a.b`` is a schema key."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"bad override {item!r}: expected key=value (e.g. train.steps=10)")
    parts = key.strip().split(".")
    cls, cursor = schema, raw
    for i, part in enumerate(parts):
        fields = _fields(cls)
        here = ".".join(parts[:i])
        if part not in fields:
            where = f" in section '{here}'" if here else ""
            raise UserError(f"override {item!r}: unknown key '{'.'.join(parts[: i + 1])}'; "
                            f"valid keys{where}: {', '.join(fields)}")
        tp = fields[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                raise UserError(f"override {item!r}: '{key}' is a section; set one of its keys: "
                                f"{', '.join(f'{key}.{k}' for k in _fields(tp))}")
            cursor[part] = value
        else:
            if not dataclasses.is_dataclass(tp):
                raise UserError(f"override {item!r}: '{'.'.join(parts[: i + 1])}' is a value, not a section")
            if not isinstance(cursor.get(part), dict):
                cursor[part] = {}
            cls, cursor = tp, cursor[part]


def _type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is Union:
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        return "a list" if len(args) == 2 and args[1] is Ellipsis else f"a list of {len(args)} values"
    return {type(None): "null", int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _coerce(v, tp, source: str, key: str):
    """Coerces a YAML value (or a raw override string) to type ``tp``; UserError naming ``key`` if it can't."""

    def bad(extra=""):
        return UserError(f"{source}: {key}: expected {_type_name(tp)}, got {v!r}{extra}")

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, {} if v is None else v, source, key + ".")
    if origin is Union:
        if v is None or (isinstance(v, str) and v.strip().lower() in _NULLS):
            if type(None) in args:
                return None
            raise bad()
        inner = [a for a in args if a is not type(None)]
        return _coerce(v, inner[0], source, key)
    if origin is Literal:
        if v in args:
            return v
        raise UserError(f"{source}: {key}: must be one of {', '.join(map(str, args))}; got {v!r}")
    if origin is tuple:
        if isinstance(v, str):
            s = v.strip()
            if s.startswith("["):
                try:
                    v = yaml.safe_load(s)
                except yaml.YAMLError:
                    raise bad(" (not a valid [a, b, ...] list)") from None
            else:
                v = [p.strip() for p in s.split(",")] if s else []
        if not isinstance(v, (list, tuple)):
            raise bad()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(x, args[0], source, f"{key}[{i}]") for i, x in enumerate(v))
        if len(v) != len(args):
            raise bad(f" (needs exactly {len(args)} values)")
        return tuple(_coerce(x, a, source, f"{key}[{i}]") for i, (x, a) in enumerate(zip(v, args)))
    if tp is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in _TRUE + _FALSE:
            return v.strip().lower() in _TRUE
        raise bad()
    if tp is int:
        if isinstance(v, bool):
            raise bad()
        if isinstance(v, str):
            try:
                v = float(v.strip()) if any(c in v for c in ".eE") else int(v.strip())
            except ValueError:
                raise bad() from None
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, int):
            return v
        raise bad()
    if tp is float:
        if isinstance(v, bool):
            raise bad()
        if isinstance(v, str):
            try:
                return float(v.strip())
            except ValueError:
                raise bad() from None
        if isinstance(v, (int, float)):
            return float(v)
        raise bad()
    if tp is str:
        if isinstance(v, str):
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)
        raise bad()
    raise TypeError(f"config schema uses an unsupported type {tp!r} at {key}")


def _build(cls, raw, source: str, prefix: str = ""):
    """Builds dataclass ``cls`` from mapping ``raw``: unknown keys, types, then ``__post_init__`` checks."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: '{prefix.rstrip('.')}' must be a mapping of keys, got {raw!r}")
    fields = _fields(cls)
    for k in raw:
        if k not in fields:
            where = f" in section '{prefix.rstrip('.')}'" if prefix else " at the top level"
            raise UserError(f"{source}: unknown key '{prefix}{k}'; valid keys{where}: {', '.join(fields)}")
    kwargs = {k: _coerce(v, fields[k], source, prefix + str(k)) for k, v in raw.items()}
    for k, tp in fields.items():  # absent sections: build their defaults here so errors carry the prefix
        if k not in kwargs and dataclasses.is_dataclass(tp):
            kwargs[k] = _build(tp, {}, source, f"{prefix}{k}.")
    try:
        return cls(**kwargs)
    except _Invalid as e:
        raise UserError(f"{source}: {prefix}{e.key}: {e.message}") from None


def _to_plain(x):
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x
