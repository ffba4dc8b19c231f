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
    """LoRA rank r of every adapter; 0 = full fine-tuning (no adapters)."""
    alpha: float = 16.0
    """LoRA alpha: the adapter update is scaled by alpha / rank (PEFT's scaling)."""
    targets: tuple[str, ...] = _ALL_PROJ
    """Projections that get an adapter (HF names q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)."""

    def __post_init__(self):
        non_negative(self, "rank")
        positive(self, "alpha")
        check(self.rank == 0 or len(self.targets) > 0, "targets", "must name at least one projection")


@dataclass(frozen=True)
class ModelShape:
    """Optional overrides of a preset's shape (``QwenConfig`` field names; None = keep the preset's).
    Tiny CPU configs use a published preset shrunk this way: ``dataclasses.replace(PRESETS[p], **set)``."""

    vocab_size: Union[int, None] = None
    """Vocabulary size of the random-init preset (null = the preset's)."""
    hidden_size: Union[int, None] = None
    """Hidden (model) width (null = the preset's)."""
    intermediate_size: Union[int, None] = None
    """MLP inner width (null = the preset's)."""
    num_layers: Union[int, None] = None
    """Number of decoder layers (null = the preset's)."""
    num_heads: Union[int, None] = None
    """Query heads per layer (null = the preset's)."""
    num_kv_heads: Union[int, None] = None
    """Key/value heads per layer; must divide num_heads (null = the preset's)."""
    head_dim: Union[int, None] = None
    """Width of one attention head (null = the preset's)."""
    max_position_embeddings: Union[int, None] = None
    """Longest position the RoPE tables cover (null = the preset's)."""

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
    ``remat`` may change on resume. ``attention``: the attention implementation of every Qwen the run
    builds (policy, reference, reward backbone, critic; docs/attention.md)."""

    path: Union[str, None] = None
    """The policy (or reward backbone) checkpoint: a HF directory or hub id; exclusive with preset."""
    preset: Union[str, None] = None
    """Random init of a published shape (a name in grpojax.models.PRESETS); exclusive with path."""
    shape: ModelShape = field(default_factory=ModelShape)
    """Shape overrides of model.preset (tiny CPU models)."""
    ref_path: Union[str, None] = None
    """The frozen reference for KL / DPO: a HF directory or hub id (null = the initial policy)."""
    dtype: Dtype = "float32"
    """Compute dtype of the forward passes."""
    param_dtype: Dtype = "float32"
    """Dtype the parameters are stored and updated in."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapters (rank 0 = full fine-tuning)."""
    remat: Literal["none", "block", "full"] = "none"
    """Activation checkpointing of each decoder block: none, block (keep matmul outputs) or full."""
    scan_layers: bool = False
    """Stack the layers and run them with jax.lax.scan (compile time independent of depth)."""
    attention: Literal["auto", "einsum", "blockwise", "cudnn", "splash"] = "auto"
    """Attention kernel: auto (best the backend has), einsum, blockwise, cudnn (GPU) or splash (TPU)."""

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
    """Tokenizer directory or hub id (null = the model's)."""
    chat_template: bool = True
    """Apply the tokenizer's chat template to prompts when it has one (else plain text)."""
    system_prompt: Union[str, None] = None
    """System message put before every prompt by the chat template (null = none)."""


@dataclass(frozen=True)
class DataConfig:
    """Where examples come from and how they are cut to fixed shapes.

    ``format``: ``columns`` (any hub id or local .jsonl/.json/.parquet/.csv file, columns named below) or a
    named builder: ``pku_saferlhf``, ``global_opinions`` (ALGORITHMS.md 2.5), ``hh_rlhf``. ``path`` None
    uses the builder's hub id. Sequence layout: prompt left-padded to ``max_prompt_length``, response
    right-padded to ``max_length - max_prompt_length``.
    """

    path: Union[str, None] = None
    """Training data: a hub dataset id or a local .jsonl/.json/.parquet/.csv file (null = the builder's hub id)."""
    format: Literal["columns", "pku_saferlhf", "global_opinions", "hh_rlhf"] = "columns"
    """columns (named columns below) or a named builder: pku_saferlhf, global_opinions, hh_rlhf."""
    name: Union[str, None] = None  # hub config (subset) name
    """Hub config (subset) name of the dataset."""
    split: str = "train"
    """Split to train on."""
    eval_split: Union[str, None] = None
    """Held-out split of a hub dataset for evaluation."""
    eval_path: Union[str, None] = None
    """Held-out local file for evaluation (same columns as the training data)."""
    prompt_column: str = "prompt"
    """Column holding the prompt."""
    response_column: str = "response"
    """Column holding the response (SFT, regression reward)."""
    chosen_column: str = "chosen"
    """Column holding the preferred response of a pair."""
    rejected_column: str = "rejected"
    """Column holding the dispreferred response of a pair."""
    label_columns: tuple[str, ...] = ()
    """Columns holding one numeric label per reward aspect (regression reward)."""
    group_column: Union[str, None] = None
    """Column naming each example's group (group-robust preference losses)."""
    group_names: tuple[str, ...] = ()  # fixes the group name -> id order (default: sorted names)
    """Fixes the group name -> id order (empty = sorted names)."""
    pku_preference: Literal["better", "safer"] = "better"
    """Which PKU-SafeRLHF response is preferred: better or safer."""
    max_prompt_length: int = 128
    """Prompt tokens per sequence (prompts are left-padded to this length)."""
    max_length: int = 256
    """Prompt + response tokens per sequence (the response gets max_length - max_prompt_length)."""
    max_examples: Union[int, None] = None
    """Use only the first N examples (null = all)."""
    shuffle_seed: int = 0
    """Seed of the data order."""

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
    """Cut the LR when the eval loss stops improving (needs train.eval_every > 0)."""
    factor: float = 0.1
    """The LR is multiplied by this at each cut."""
    patience: int = 1
    """Evaluations without improvement before a cut."""
    min_delta: float = 0.0
    """Smallest decrease of the eval loss that counts as an improvement."""

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
    """Optimizer steps to train for (a resumed run continues up to this step)."""
    batch_size: int = 8
    """Sequences per optimizer step (GRPO / PPO / online DPO: completions)."""
    micro_batch_size: Union[int, None] = None
    """Sequences per gradient-accumulation micro-batch; must divide batch_size (null = no accumulation)."""
    learning_rate: float = 1e-6
    """Peak learning rate of AdamW."""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """LR schedule after warm-up: constant, linear or cosine decay."""
    schedule_steps: Union[int, None] = None
    """Horizon of the linear / cosine decay (null = train.steps)."""
    warmup_steps: int = 0
    """Linear LR warm-up steps from 0."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    adam_b1: float = 0.9
    """AdamW beta1."""
    adam_b2: float = 0.999
    """AdamW beta2."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    max_grad_norm: Union[float, None] = 1.0
    """Clip the global gradient norm to this (null = no clipping)."""
    seed: int = 0
    """Seed of the initialisation, sampling and evaluation RNG."""
    log_every: int = 1
    """Print the progress line (and sample completions.jsonl) every N steps."""
    save_every: int = 100
    """Save a checkpoint every N steps (and always at the end)."""
    keep_checkpoints: int = 3
    """Checkpoints kept in run_dir (older ones are deleted)."""
    eval_every: int = 0
    """Evaluate on the held-out data every N steps (0 = never)."""
    max_bad_steps: int = 3
    """Stop after this many non-finite (skipped) steps in a row."""
    plateau: PlateauConfig = field(default_factory=PlateauConfig)
    """LR-on-plateau (preference runs)."""

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
    """Data-parallel axis size (-1 = all remaining devices)."""
    fsdp: int = 1
    """Fully-sharded data-parallel axis size (parameters sharded over it; -1 = the rest)."""
    tensor: int = 1
    """Tensor-parallel axis size (heads / MLP width / vocabulary; -1 = the rest)."""
    distributed: bool = False
    """Call jax.distributed.initialize() first (multi-host pods; implied by the three keys below)."""
    coordinator_address: Union[str, None] = None
    """host:port of process 0's coordinator (null = JAX detects it on TPU VMs / SLURM)."""
    num_processes: Union[int, None] = None
    """Number of processes of the run (null = detected)."""
    process_id: Union[int, None] = None
    """This process's index, 0 .. num_processes-1 (null = detected)."""
    heartbeat_timeout_seconds: int = 100
    """Seconds without a heartbeat after which the other processes stop (a dead process ends the run)."""
    rollout_tensor: Union[int, None] = None
    """Tensor-parallel size rollouts sample with (null = the training layout; -1 = every device)."""

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


@dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases: the scalars of ``metrics.jsonl`` and the sampled completions (a table) go to the
    run ``project`` / ``name`` (``wandb.init``); ``project`` null = off. ``mode: offline`` writes the run
    under ``WANDB_DIR`` (``wandb sync`` uploads it later)."""

    project: Union[str, None] = None
    """W&B project to log to (null = W&B off)."""
    name: Union[str, None] = None
    """W&B run name (null = W&B picks one)."""
    mode: Literal["online", "offline", "disabled"] = "online"
    """online (upload while training), offline (write locally, wandb sync later) or disabled."""


@dataclass(frozen=True)
class LoggingConfig:
    """Metric sinks besides ``run_dir/metrics.jsonl`` and TensorBoard (always written)."""

    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases (needs pip install wandb)."""
