"""What every task shares: the config's tokenizer, data, optimizer and mesh, put together once.

A task gives :func:`grpojax.train.runner.run` what its :class:`grpojax.train.runner.Task` protocol asks:
``init_state()``, ``position()`` / ``restore_position(d)`` (data order and plateau counters, JSON),
``steps_per_call(step, total)``, ``train_steps(state, step, rngs) -> (state, metric rows)``,
``after_steps(state, step, rows)`` (evaluation, LR-on-plateau) and ``export(state, out_dir)``. Each kind's
task (:mod:`grpojax.train.tasks`) subclasses :class:`BaseTask`, whose constructor reads the config top to
bottom: the compilation cache, the :class:`grpojax.train.placement.Placement` (training mesh, rollout mesh,
batch moves), the tokenizer, the dataset and its loader (:func:`make_loader`), the optimizer
(:func:`grpojax.train.build.build_optimizer`), the held-out data of ``train.eval_every``.

``init_state`` builds the model (:func:`grpojax.train.build.build_model`, LoRA wrapped) and the train state
already sharded (:func:`grpojax.train.placement.place`: born sharded under one jit for a random init,
loaded then placed for a checkpoint on disk) and jits the task's step with those shardings (donated).
The frozen reference, when a task needs one, is a :class:`grpojax.train.tasks.reference.Reference`.
Rollout tasks sample with :meth:`BaseTask.sample_prompts` (:func:`grpojax.rollout.sample_and_score` on
the rollout mesh). A training batch whose row count the batch axes do not divide is a :class:`UserError`
naming the config keys (``Placement.check_rows``).
"""

from __future__ import annotations

import abc
import functools
import os

import jax
import numpy as np

from grpojax import sharding as shd
from grpojax.cli import UserError
from grpojax.compilation import use_compilation_cache
from grpojax.data import COLLATE, DataLoader, load_from_config, load_tokenizer
from grpojax.data.packing import fill as packed_fill
from grpojax.data.packing import rows_multiple_of
from grpojax.data.tokenizer import write_generation_config
from grpojax.models import to_hf
from grpojax.models.lora import merge_lora
from grpojax.models.peft_io import ADAPTER_SUBDIR, peft_adapter, write_peft_adapter
from grpojax.rollout import sample_and_score, sampling_settings, text_rewards
from grpojax.train.build import build_model, build_optimizer, maybe_lora
from grpojax.train.placement import Placement
from grpojax.train.steps.state import create_train_state, merge_model
from grpojax.train.tasks.reference import Reference, frozen_reference


def host_row(metrics: dict, group_names=None) -> dict:
    """Device metrics -> one flat dict of Python floats (vector metrics become ``name/<group>`` keys)."""
    row = {}
    for k, v in shd.to_host(metrics).items():
        v = np.asarray(v)
        if v.ndim == 0:
            row[k] = float(v)
        else:
            names = group_names or [str(i) for i in range(v.shape[0])]
            for name, x in zip(names, v.reshape(-1)):
                row[f"{k}/{name}"] = float(x)
    return row


def make_loader(data_cfg, kind: str, tok, dataset, batch_size: int, *, shuffle: bool = True) -> DataLoader:
    """The loader of ``dataset`` for a ``kind`` task: ``batch_size`` rows a step, this process's share of
    them (``jax.process_index`` of ``jax.process_count``), collated by ``COLLATE[kind]`` with the ``data``
    section's lengths, shuffled by ``data.shuffle_seed``."""
    collate = functools.partial(COLLATE[kind], tok, max_prompt_length=data_cfg.max_prompt_length,
                                max_length=data_cfg.max_length)
    return DataLoader(dataset, lambda rows: collate(rows), batch_size, seed=data_cfg.shuffle_seed, shuffle=shuffle,
                      shard=(jax.process_index(), jax.process_count()))


class BaseTask(abc.ABC):
    """Model, tokenizer, optimizer, device mesh and data loader common to every task."""

    kind = "sft"

    def __init__(self, cfg):
        self.cfg = cfg
        use_compilation_cache(cfg.compilation_cache_dir)
        self.placement = Placement(cfg.mesh)
        self.mesh, self.rollout_mesh = self.placement.mesh, self.placement.rollout_mesh
        self.placement.check_rows(cfg.train.batch_size, "train.batch_size")
        self.tok = load_tokenizer(cfg.tokenizer.path or cfg.model.path, cfg.tokenizer.chat_template,
                                  cfg.tokenizer.system_prompt, model_path=cfg.model.path)
        self.dataset = load_from_config(cfg.data, self.kind, **self.data_options())
        self.loader = make_loader(cfg.data, self.kind, self.tok, self.dataset, self.loader_rows())
        self.tx = build_optimizer(cfg.train)
        self.lora = cfg.model.lora.rank > 0
        self.graphdef = None
        self.state_sh = None
        # held-out data of train.eval_every (periodic_eval; preference / reward tasks keep their own)
        self._eval_data = self.load_eval_data() if cfg.train.eval_every and self.kind in ("grpo", "sft") else None

    def next_rows(self) -> dict:
        """The next rollout's prompt rows, ``{column: [values]}`` (every host reads them whole: reward
        functions score every completion; the columns other than ``prompt`` are theirs)."""
        return self.loader.dataset[next(self.loader.iterator).tolist()]

    def next_prompts(self) -> list:
        """The next rollout's prompts (text or conversations)."""
        return list(self.next_rows()["prompt"])

    def sample_prompts(self, model, prompts: list, rng, rc, scorer, *, columns: dict | None = None, **options):
        """``(model, rollout)``: :func:`grpojax.rollout.sample_and_score` of ``prompts`` with the method
        section ``rc``'s sampling and aggregation and ``scorer``'s aspects, on the rollout mesh
        (:meth:`sampling_inputs`; the returned model is the one sampled with, reused by the next call).
        ``columns`` (the prompts' data columns, one value per prompt; ``prompt`` itself is skipped) reach the
        scorer aligned with the completions. ``options``: ``scale_rewards``, ``mask_truncated_completions``."""
        pb = self.tok.prompt_batch(prompts, self.cfg.data.max_prompt_length)
        model, ids, mask, cache_fn = self.placement.sampling_inputs(model, pb.prompt_ids_BT, pb.prompt_mask_BT)
        score_fn = scorer if columns is None else functools.partial(
            scorer, columns=text_rewards.data_columns(columns, rc.num_generations))
        ro = sample_and_score(model, ids, mask, prompts, rng, tok=self.tok, sampling=sampling_settings(rc),
                              aspect_names=scorer.names, score_fn=score_fn, aggregation=rc.aggregation,
                              reward_weights=rc.reward_weights or None, cache_fn=cache_fn, **options)
        return model, ro

    def jit_step(self, step_fn, rows: int):
        """``step_fn(state, batch, rng)`` jitted with this task's state shardings (donated) and ``rows``
        batch rows."""
        return self.placement.jit_step(step_fn, self.state_sh, rows)

    def evaluate_policy(self, state, prompts: list, rc, scorer, *, batch_prompts: int | None = None,
                        seed: int = 0, columns: dict | None = None) -> dict:
        """Mean reward and per-aspect scores of the policy in ``state`` on ``prompts``: ``rc.num_generations``
        samples each with the method section ``rc``'s sampling settings, scored by ``scorer`` (the
        training reward; ``columns``: the prompts' other data columns, one value per prompt) and aggregated
        as in training; no update. Returns TRL-named means over all prompts (``eval/reward``,
        ``eval/rewards/<aspect>/mean``, ``eval/completions/mean_length``, ...)."""
        n = batch_prompts or self.cfg.train.batch_size // rc.num_generations
        sums, count, model = {}, 0, self.model_of(state)
        for i in range(0, len(prompts), n):
            chunk = prompts[i:i + n]
            cols = None if columns is None else {k: v[i:i + n] for k, v in columns.items()}
            model, ro = self.sample_prompts(model, chunk, jax.random.fold_in(jax.random.key(seed), i), rc, scorer,
                                            columns=cols)
            for k, v in ro.metrics.items():
                if k == "reward" or k.endswith("/mean") or k.startswith("completions/mean"):
                    sums[k] = sums.get(k, 0.0) + v * len(chunk)
            count += len(chunk)
        return {f"eval/{k}": v / count for k, v in sums.items()} | {"eval/num_prompts": count}

    def data_options(self) -> dict:
        """Extra keyword arguments of :func:`grpojax.data.load_from_config` (the reward task's aspects)."""
        return {}

    def loader_rows(self) -> int:
        """Dataset rows one optimizer step reads: ``train.batch_size`` (sequences or pairs) by default;
        prompts (``batch_size / num_generations``) for the tasks that sample completions."""
        return self.cfg.train.batch_size

    def new_model(self):
        model = build_model(self.cfg.model, seed=self.cfg.train.seed)
        vocab = model.config.vocab_size
        if self.tok.vocab_size > vocab:
            raise UserError(f"tokenizer {self.tok.name} has {self.tok.vocab_size} tokens but the model's "
                            f"vocab_size is {vocab}")
        return maybe_lora(model, self.cfg.model, seed=self.cfg.train.seed)

    def init_state(self, robust=None):
        def build():
            graphdef, state = create_train_state(self.new_model(), self.tx,
                                                 jax.random.key(self.cfg.train.seed), lora=self.lora,
                                                 robust=robust)
            return state, graphdef

        state, self.graphdef, self.state_sh = self.placement.place(build, on_disk=self.cfg.model.path is not None)
        self._compile(self.graphdef)
        return state

    @abc.abstractmethod
    def _compile(self, graphdef):
        """Jit this task's step(s) for ``graphdef`` (called once the model structure is known)."""

    @abc.abstractmethod
    def train_steps(self, state, step: int, rngs: list):
        """Run ``len(rngs)`` optimizer steps after ``step``; returns ``(state, [metric row per step])``."""

    def position(self) -> dict:
        return {"data": self.loader.state()}

    def restore_position(self, d: dict) -> None:
        self.loader.restore(d["data"])

    def steps_per_call(self, step: int, total: int) -> int:
        return 1

    def after_steps(self, state, step: int, rows: list) -> object:
        """Every ``train.eval_every`` steps (a call of several steps that passes a multiple counts) the
        held-out evaluation :meth:`periodic_eval` joins the call's last metric row."""
        every = self.cfg.train.eval_every
        if every and step // every > (step - len(rows)) // every:
            rows[-1].update(self.periodic_eval(state))
        return state

    def load_eval_data(self):
        """The held-out split (``data.eval_split``, or ``data.eval_path`` for local files): prompts for the
        rollout kinds (GRPO, PPO, online DPO read prompt data, ``kind == "grpo"``), pairs for SFT."""
        d = self.cfg.data
        data = load_from_config(d, self.kind, split=d.eval_split or "validation")
        if self.kind == "grpo":  # the other columns reach the reward functions (periodic_eval)
            self._eval_columns = {k: data[k] for k in data.column_names if k != "prompt"}
            return list(data["prompt"])
        return data

    def periodic_eval(self, state) -> dict:
        """Rollout kinds: the policy's mean reward and per-aspect scores on the held-out prompts
        (:meth:`evaluate`, seeded by ``train.seed`` as ``scripts/evaluate.py`` is): ``eval/reward``,
        ``eval/rewards/<name>/mean``, ``eval/completions/mean_length``, ``eval/num_prompts``; the held-out
        prompts' other columns reach the reward functions."""
        return self.evaluate(state, self._eval_data, seed=self.cfg.train.seed, columns=self._eval_columns)

    def model_of(self, state):
        return merge_model(self.graphdef, state.params, state.frozen)

    def frozen_reference(self, state) -> Reference:
        """:func:`grpojax.train.tasks.reference.frozen_reference` of this run's model on its mesh."""
        return frozen_reference(self.cfg.model, self.placement, self.graphdef, state)

    def ref_arrays(self, state):
        """``(params, frozen)`` to call the reference ``self._ref`` with at ``state``
        (:meth:`Reference.arrays`; a policy copy's frozen part is read from ``state``)."""
        return self._ref.arrays(self.ref_frozen_of(state))

    def ref_frozen_of(self, state):
        return state.frozen

    def export(self, state, out_dir: str) -> str | None:
        """The trained policy as a HF directory with the tokenizer and a ``generation_config.json`` listing
        every end id (process 0 writes; on a pod the weights are gathered to every host first, a collective
        every process runs). A LoRA run exports the merged weights and, when it started from a checkpoint
        (``model.path``), its adapters in PEFT's format on that base in ``out_dir/adapter``
        (:mod:`grpojax.models.peft_io`)."""
        params, frozen = shd.to_host((state.params, state.frozen))
        if not shd.is_main_process():
            return None
        model = self.model_of(state._replace(params=params, frozen=frozen))
        adapter = None
        if self.lora:
            if self.cfg.model.path:  # a random-init preset has no base checkpoint to apply an adapter to
                adapter = peft_adapter(model)  # read before merging removes the adapters
            model = merge_lora(model)
        path = to_hf(model, out_dir)
        if adapter is not None:  # the PEFT adapter on the base checkpoint, next to the merged weights
            write_peft_adapter(adapter, os.path.join(out_dir, ADAPTER_SUBDIR), base_model=self.cfg.model.path)
        self.tok.hf.save_pretrained(out_dir)
        write_generation_config(out_dir, self.tok, self.cfg.model.path)  # every end id travels with it
        print(f"exported the policy to {path}")
        return path


def rows_multiple(task) -> int:
    """This process's packed-row quantum (``data.packing``): the global rows divide over the mesh's batch
    axes and into ``train.grad_accum`` micro-batches, an equal share per process."""
    return rows_multiple_of(shd.batch_axis_size(task.mesh), task.cfg.train.grad_accum, jax.process_count())


def packing_metrics(data_cfg, local: dict) -> dict:
    """``packing/rows`` (the step's global rows) and ``packing/fill`` (this host's share of row tokens that
    are real) for a packed batch; nothing without ``data.packing``."""
    if not data_cfg.packing:
        return {}
    return {"packing/rows": float(len(local["segment_ids_BT"]) * jax.process_count()),
            "packing/fill": packed_fill(local)}


def split_sequences(batch: dict, prompt_len: int, prefix: str = "") -> dict:
    """``{prefix}input_ids_BT`` etc. (grpojax.data layout) -> prompt_BQ / completion_BC NumPy arrays (host
    rows; the task puts them on the mesh)."""
    ids, att, loss = (np.asarray(batch[f"{prefix}{k}"])
                      for k in ("input_ids_BT", "attention_mask_BT", "loss_mask_BT"))
    return {"prompt_BQ": ids[:, :prompt_len], "prompt_mask_BQ": att[:, :prompt_len],
            "completion_BC": ids[:, prompt_len:], "completion_mask_BC": loss[:, prompt_len:]}
