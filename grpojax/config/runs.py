"""One top-level schema per script kind (``SCHEMAS[kind]``): the shared sections of ``_RunBase`` plus the
kind's method section, and the cross-section rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

from grpojax.config.checks import check
from grpojax.config.methods import GRPOConfig, OnlineDPOConfig, PPOConfig, PreferenceConfig, RewardConfig
from grpojax.config.sections import (
    DataConfig,
    LoggingConfig,
    MeshConfig,
    ModelConfig,
    TokenizerConfig,
    TrainConfig,
)
from grpojax.config.unused import ROLLOUT, refuse_ignored

Kind = Literal["grpo", "reward", "dpo", "sft", "ppo", "online_dpo"]
KINDS = ("grpo", "reward", "dpo", "sft", "ppo", "online_dpo")


@dataclass(frozen=True)
class _RunBase:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy (or reward backbone) to train."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """The tokenizer and chat template."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training (and held-out) data."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimizer, loop length, logging and checkpoint cadence."""
    mesh: MeshConfig = field(default_factory=MeshConfig)
    """Device mesh."""
    run_dir: str = "runs/default"
    """Run directory: checkpoints, metrics.jsonl, completions.jsonl, tb/, config.yaml."""
    export_hf: Union[str, None] = None
    """Write the final policy as a HF directory here (LoRA runs also get a PEFT adapter in its adapter/)."""
    compilation_cache_dir: Union[str, None] = None
    """Persistent XLA compilation cache directory (null = JAX's own setting, JAX_COMPILATION_CACHE_DIR)."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Where metrics go besides metrics.jsonl and TensorBoard."""

    def __post_init__(self):
        check(self.tokenizer.path is not None or self.model.path is not None, "tokenizer.path",
              "model.preset has no tokenizer: set tokenizer.path (a tokenizer directory or hub id)")
        check(bool(self.run_dir.strip()), "run_dir", "must be a non-empty directory path")
        d = self.data
        check(not self.train.eval_every or d.eval_split is not None or d.eval_path is not None, "train.eval_every",
              "evaluating needs held-out data: set data.eval_split (hub data) or data.eval_path (a local file)")
        rollout = getattr(self, self.kind, None) if self.kind in ROLLOUT else None
        if rollout is not None and d.max_length != DataConfig.max_length:
            # rollouts sample max_prompt_length + max_completion_length tokens: a data.max_length that is set
            # is the sequence budget the run was sized for, checked (nothing else of a rollout reads it)
            n = d.max_prompt_length + rollout.max_completion_length
            check(n <= d.max_length, "data.max_length",
                  f"must hold data.max_prompt_length + {self.kind}.max_completion_length = {n}, got {d.max_length}")
        refuse_ignored(self)

    @property
    def tokenizer_path(self) -> str:
        """``tokenizer.path``, else the model's directory / hub id."""
        return self.tokenizer.path if self.tokenizer.path is not None else self.model.path


@dataclass(frozen=True)
class GRPORunConfig(_RunBase):
    """``scripts/train_grpo.py``: online multi-objective GRPO (ALGORITHMS.md 1)."""

    kind: Literal["grpo"] = "grpo"
    """The script kind this config is for."""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    """Multi-objective GRPO."""

    def __post_init__(self):
        super().__post_init__()
        g = self.grpo.num_generations
        check(self.train.batch_size % g == 0, "train.batch_size",
              f"must be a multiple of grpo.num_generations={g} (completions per step), got {self.train.batch_size}")
        mb = self.train.micro_batch_size
        check(mb is None or mb % g == 0, "train.micro_batch_size",
              f"must be a multiple of grpo.num_generations={g} so groups are never split, got {mb}")
        r = len(self.grpo.aspects)
        check(not self.grpo.reward_weights or len(self.grpo.reward_weights) == r + len(self.grpo.reward_funcs),
              "grpo.reward_weights", f"needs one weight per aspect ({r}) plus one per reward_func "
              f"({len(self.grpo.reward_funcs)}), got {len(self.grpo.reward_weights)}")


@dataclass(frozen=True)
class RewardRunConfig(_RunBase):
    """``scripts/train_reward.py``: multi-label (or Bradley-Terry) reward model (ALGORITHMS.md 1.1)."""

    kind: Literal["reward"] = "reward"
    """The script kind this config is for."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward-model training."""

    def __post_init__(self):
        super().__post_init__()
        if self.reward.loss == "regression" and self.data.format == "columns":
            n = len(self.reward.aspects)
            check(len(self.data.label_columns) == n, "data.label_columns",
                  f"needs one column per reward.aspects entry ({n}), got {len(self.data.label_columns)}")


@dataclass(frozen=True)
class DPORunConfig(_RunBase):
    """``scripts/train_dpo.py``: DPO / IPO / hinge / GR-DPO / GR-IPO / IS-DPO (ALGORITHMS.md 2)."""

    kind: Literal["dpo"] = "dpo"
    """The script kind this config is for."""
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    """The preference loss."""

    def __post_init__(self):
        super().__post_init__()
        robust = self.preference.loss in ("gr_dpo", "gr_ipo", "is_dpo")
        check(not robust or self.data.group_column is not None or self.data.format == "global_opinions",
              "data.group_column", f"preference.loss={self.preference.loss} needs groups: set data.group_column")
        check(not self.data.packing or self.train.grad_accum == 1, "data.packing",
              "packed pairs span rows, so they cannot be split into micro-batches: unset train.micro_batch_size")
        check(not (self.data.packing and self.preference.shared_prefix), "preference.shared_prefix",
              "a packed batch has no separate prompt rows to share: set data.packing=false or "
              "preference.shared_prefix=false")


@dataclass(frozen=True)
class SFTRunConfig(_RunBase):
    """``scripts/sft.py``: supervised fine-tuning on (prompt, response) pairs."""

    kind: Literal["sft"] = "sft"
    """The script kind this config is for."""


@dataclass(frozen=True)
class PPORunConfig(_RunBase):
    """``scripts/train_ppo.py``: PPO-RLHF with a value head / critic, GAE and a KL controller.
    ``train.batch_size`` = completions per rollout (a multiple of ``ppo.num_generations``); each
    optimizer step takes one mini-batch of ``batch_size / ppo.num_mini_batches`` completions."""

    kind: Literal["ppo"] = "ppo"
    """The script kind this config is for."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO-RLHF."""

    def __post_init__(self):
        super().__post_init__()
        p, bs = self.ppo, self.train.batch_size
        check(bs % p.num_generations == 0, "train.batch_size",
              f"must be a multiple of ppo.num_generations={p.num_generations}, got {bs}")
        check(bs % p.num_mini_batches == 0, "ppo.num_mini_batches",
              f"must divide train.batch_size={bs}, got {p.num_mini_batches}")
        mini, mb = bs // p.num_mini_batches, self.train.micro_batch_size
        check(mb is None or mini % mb == 0, "train.micro_batch_size",
              f"must divide the mini-batch size {mini} (train.batch_size / ppo.num_mini_batches), got {mb}")


@dataclass(frozen=True)
class OnlineDPORunConfig(_RunBase):
    """``scripts/train_online_dpo.py``: online DPO on best-vs-worst pairs of the policy's own samples.
    ``train.batch_size`` = completions per step (prompts per step = pairs at most =
    ``batch_size / online_dpo.num_generations``)."""

    kind: Literal["online_dpo"] = "online_dpo"
    """The script kind this config is for."""
    online_dpo: OnlineDPOConfig = field(default_factory=OnlineDPOConfig)
    """Online DPO sampling and rewards."""
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    """The preference loss of the sampled pairs."""

    def __post_init__(self):
        super().__post_init__()
        g, bs = self.online_dpo.num_generations, self.train.batch_size
        check(bs % g == 0, "train.batch_size",
              f"must be a multiple of online_dpo.num_generations={g} (completions per step), got {bs}")
        check(self.preference.loss in ("dpo", "ipo", "hinge"), "preference.loss",
              f"online DPO has no groups: use dpo, ipo or hinge, got {self.preference.loss}")
        check(not self.preference.precompute_ref_logps, "preference.precompute_ref_logps",
              "online DPO samples new pairs every step: there is nothing to precompute")
        mb, prompts = self.train.micro_batch_size, bs // g
        check(mb is None or prompts % mb == 0, "train.micro_batch_size",
              f"counts pairs here and must divide the {prompts} prompts per step, got {mb}")


SCHEMAS = {"grpo": GRPORunConfig, "reward": RewardRunConfig, "dpo": DPORunConfig, "sft": SFTRunConfig,
           "ppo": PPORunConfig, "online_dpo": OnlineDPORunConfig}
RunConfig = Union[GRPORunConfig, RewardRunConfig, DPORunConfig, SFTRunConfig, PPORunConfig, OnlineDPORunConfig]
