"""Run-independent config sections: the model (``LoraConfig``, ``ModelShape``), tokenizer, data, optimizer /
loop (``TrainConfig``, ``PlateauConfig``) and mesh."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Union

from grpojax.config.checks import check, non_negative, positive

Dtype = Literal["float32", "bfloat16", "float16"]
_ALL_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters: ``W + (alpha / rank) B A`` on the ``targets`` projections; rank 0 = full fine-tuning."""

    rank: int = 0
    alpha: float = 16.0
    targets: tuple[str, ...] = _ALL_PROJ

    def __post_init__(self):
        non_negative(self, "rank")
        positive(self, "alpha")
        check(self.rank == 0 or len(self.targets) > 0, "targets", "must name at least one projection")


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
        positive(self, *(f.name for f in dataclasses.fields(self)))
        n, k = self.num_heads, self.num_kv_heads
        check(n is None or k is None or n % k == 0, "num_kv_heads", f"must divide num_heads={n}, got {k}")

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
        check((self.path is None) != (self.preset is None), "path",
              "set exactly one of model.path (HF dir or hub id) and model.preset (random init)")
        if self.preset is not None:
            from grpojax.models.config import PRESETS  # the published shapes (light module, no model code)

            check(self.preset in PRESETS, "preset", f"unknown preset {self.preset!r}; valid presets: "
                  f"{', '.join(PRESETS)}")
        check(self.preset is not None or not self.shape.overrides(), "shape",
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
        check(self.path is not None or self.format != "columns", "path",
              "data.path is required with format=columns (a local file or a hub dataset id)")
        positive(self, "max_prompt_length", "max_length", "max_examples")
        check(self.max_length > self.max_prompt_length, "max_length",
              f"must exceed max_prompt_length={self.max_prompt_length}, got {self.max_length}")
        check(len(set(self.group_names)) == len(self.group_names), "group_names", "has duplicates")


@dataclass(frozen=True)
class PlateauConfig:
    """LR-on-plateau (preference runs): multiply the LR by ``factor`` after ``patience`` evaluations
    without improvement of the eval loss (the GR-IPO paper divides by 10)."""

    enabled: bool = False
    factor: float = 0.1
    patience: int = 1
    min_delta: float = 0.0

    def __post_init__(self):
        check(0.0 < self.factor < 1.0, "factor", f"must be in (0, 1), got {self.factor}")
        positive(self, "patience")
        non_negative(self, "min_delta")


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer (AdamW + schedule + clipping), loop length, logging and checkpoint cadence.

    ``batch_size`` = sequences per optimizer step (GRPO: completions); ``micro_batch_size`` (None = no
    gradient accumulation) must divide it. ``max_grad_norm`` None = no clipping.

    ``eval_every`` 0 = no evaluation; > 0 needs ``data.eval_split`` / ``data.eval_path`` and adds the
    held-out evaluation to every ``eval_every``-th metric row: SFT ``eval/loss`` (token-mean response NLL),
    reward ``eval/mse[/<aspect>]`` and ``eval/pearson/<aspect>`` (regression), dpo ``eval/loss``,
    ``eval/worst_group/*`` per group (and LR-on-plateau), GRPO / PPO / online DPO ``eval/reward`` and
    ``eval/rewards/<name>/mean`` of the policy's samples (as ``scripts/evaluate.py``, seeded by ``seed``).

    ``schedule_steps``: the horizon of the ``linear`` / ``cosine`` decay (None = ``steps``); past it the
    LR stays at its final value. A run resumed with another ``steps`` keeps its LR curve only if the
    horizon is unchanged, so the runner refuses (one line) a resume whose horizon differs from the saved
    run's: to extend or shorten a decaying run, resume with ``schedule_steps`` set to the original horizon
    (printed in the refusal). ``constant`` has no horizon (warm-up only), so ``steps`` may change freely.

    ``max_bad_steps``: a step whose loss, gradient or update is NaN / inf is skipped (params and
    optimizer state unchanged, ``train/nonfinite_steps`` counts them); after ``max_bad_steps`` such steps
    in a row the run stops with one ``error:`` line (exit 2), having saved nothing non-finite."""

    steps: int = 100
    batch_size: int = 8
    micro_batch_size: Union[int, None] = None
    learning_rate: float = 1e-6
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    schedule_steps: Union[int, None] = None
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
    max_bad_steps: int = 3
    plateau: PlateauConfig = field(default_factory=PlateauConfig)

    def __post_init__(self):
        positive(self, "steps", "schedule_steps", "max_bad_steps", "batch_size", "micro_batch_size",
                 "learning_rate", "adam_eps",
                 "max_grad_norm", "log_every", "save_every", "keep_checkpoints")
        non_negative(self, "warmup_steps", "weight_decay", "eval_every")
        check(self.micro_batch_size is None or self.batch_size % self.micro_batch_size == 0,
              "micro_batch_size", f"must divide batch_size={self.batch_size}, got {self.micro_batch_size}")
        for n in ("adam_b1", "adam_b2"):
            check(0.0 <= getattr(self, n) < 1.0, n, f"must be in [0, 1), got {getattr(self, n)}")
        check(self.warmup_steps <= self.horizon, "warmup_steps",
              f"must be <= the schedule's horizon {self.horizon} (schedule_steps, else steps), got "
              f"{self.warmup_steps}")
        check(not self.plateau.enabled or self.eval_every > 0, "plateau.enabled",
              "LR-on-plateau needs evaluations: set train.eval_every > 0")

    @property
    def horizon(self) -> int:
        """The LR schedule's length in steps: ``schedule_steps``, else ``steps``."""
        return self.steps if self.schedule_steps is None else self.schedule_steps

    @property
    def grad_accum(self) -> int:
        """Micro-batches per optimizer step."""
        return 1 if self.micro_batch_size is None else self.batch_size // self.micro_batch_size


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh axis sizes (-1 = all remaining devices, at most one axis) and multi-host start-up.

    Multi-host (several processes, one per host, all running the same command): ``distributed: true`` calls
    ``jax.distributed.initialize()`` before any device use; on a Cloud TPU VM pod slice, under SLURM or Open
    MPI it detects the coordinator, the process count and this process's id. Elsewhere (or to override the
    detection) give ``coordinator_address`` (``host:port`` of process 0), ``num_processes`` and ``process_id``;
    setting any of them implies ``distributed``. ``heartbeat_timeout_seconds``: a process silent that long is
    declared dead and every other process stops with an error (JAX's default 100 s). On CPU the cross-process
    collectives run through gloo (``grpojax.sharding.maybe_initialize_distributed``). See docs/multihost.md.

    ``rollout_tensor``: the layout rollouts sample in (GRPO, PPO, online DPO). None = the training layout
    (under ``fsdp`` every decoded token all-gathers every weight). k = before each rollout the policy is
    copied onto the same devices as ``(data = devices / k, fsdp = 1, tensor = k)``: weights split by heads /
    MLP width / vocabulary over k chips and replicated over the rest, so decoding moves activations only
    (``grpojax.sharding.rollout_mesh``); -1 = every device on ``tensor``; 1 = weights replicated (models
    that fit one chip). The copy costs ``1 / k`` of the weights per chip while the rollout runs."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    distributed: bool = False
    coordinator_address: Union[str, None] = None
    num_processes: Union[int, None] = None
    process_id: Union[int, None] = None
    heartbeat_timeout_seconds: int = 100
    rollout_tensor: Union[int, None] = None

    def __post_init__(self):
        sizes = (self.data, self.fsdp, self.tensor)
        for n, v in zip(("data", "fsdp", "tensor"), sizes):
            check(v == -1 or v >= 1, n, f"must be -1 or >= 1, got {v}")
        check(sizes.count(-1) <= 1, "data", "at most one mesh axis may be -1")
        r = self.rollout_tensor
        check(r is None or r == -1 or r >= 1, "rollout_tensor", f"must be null, -1 or >= 1, got {r}")
        a = self.coordinator_address
        if a is not None:
            host, sep, port = a.rpartition(":")
            check(bool(sep) and bool(host) and port.isdigit() and 0 < int(port) < 65536, "coordinator_address",
                  f"must be host:port of process 0 (e.g. 10.0.0.1:8476), got {a!r}")
        positive(self, "num_processes", "heartbeat_timeout_seconds")
        non_negative(self, "process_id")
        n, i = self.num_processes, self.process_id
        check(n is None or i is None or i < n, "process_id", f"must be < num_processes={n}, got {i}")

    @property
    def multihost(self) -> bool:
        """True when ``jax.distributed`` is to be started (``distributed`` or any address / count / id set)."""
        return self.distributed or any(v is not None for v in (self.coordinator_address, self.num_processes,
                                                                self.process_id))

    def initialize_kwargs(self) -> dict:
        """The ``jax.distributed.initialize`` keyword arguments this section sets (unset ones are detected)."""
        given = {"coordinator_address": self.coordinator_address, "num_processes": self.num_processes,
                 "process_id": self.process_id}
        return {**{k: v for k, v in given.items() if v is not None},
                "heartbeat_timeout_seconds": self.heartbeat_timeout_seconds}
