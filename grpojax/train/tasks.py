"""What each script trains: data -> batches -> the pure jitted step, plus evaluation and export.

A task gives :func:`grpojax.train.runner.run` six things: ``init_state()``, ``position()`` /
``restore_position(d)`` (data order and plateau counters, JSON), ``steps_per_call(step, total)``,
``train_steps(state, step, rngs) -> (state, metric rows)``, ``after_steps(state, step, rows)`` (evaluation,
LR-on-plateau) and ``export(state, out_dir)``. :class:`BaseTask` and SFT live here; preference losses in
:mod:`grpojax.train.preference_task`; GRPO in :mod:`grpojax.train.grpo_task`; PPO / online DPO in
:mod:`grpojax.train.ppo_task` / :mod:`grpojax.train.online_dpo_task`; the reward model in
:mod:`grpojax.train.reward_task`.

Sharding (``cfg.mesh``, :mod:`grpojax.sharding`): the constructor starts ``jax.distributed`` when
``mesh.distributed`` is set and builds ``self.mesh`` once; ``init_state`` returns the train state placed by
the logical-axis rules (born sharded under one jit for a random init, loaded then placed for a HF
checkpoint; on a 1-device mesh exactly today's eager build); steps are ``jit_step``s with the state's
shardings (donated) and batch rows over ``(data, fsdp)``; ``global_rows`` / ``full_rows`` turn this host's
rows / a batch every host holds into global arrays. A training batch whose row count the batch axes do
not divide is a :class:`UserError` naming the config keys (``check_rows``).
"""

from __future__ import annotations

import abc
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax import sharding as shd
from grpojax.cli import UserError
from grpojax.compilation import use_compilation_cache
from grpojax.data import COLLATE, DataLoader, load_from_config, load_tokenizer, padded_batches
from grpojax.data.tokenizer import write_generation_config
from grpojax.train.runner import build_model, build_optimizer, maybe_lora, split_sequences
from grpojax.train.sft import sft_nll_sums, sft_step
from grpojax.train.state import create_train_state, merge_model, split_model


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


def start_mesh(mesh_cfg):
    """``jax.distributed.initialize()`` when ``mesh.distributed`` is set, then the mesh of ``mesh_cfg``
    (``-1`` = the remaining devices). Single-process, sizes without ``-1`` whose product is below the
    device count use the first devices (``mesh: {data: 1}`` = one device on a multi-device host); on a pod
    the mesh must span every device. Configuration problems become :class:`UserError` naming ``mesh``."""
    try:
        shd.maybe_initialize_distributed(mesh_cfg)
    except RuntimeError as e:
        raise UserError(f"mesh.distributed=true: jax.distributed.initialize() failed ({e}); it must run "
                        "before any other JAX call, on every host of the pod") from None
    sizes = {a: getattr(mesh_cfg, a) for a in shd.AXES}
    want = int(np.prod(list(sizes.values())))
    devices = None
    if -1 not in sizes.values() and want < jax.device_count() and jax.process_count() == 1:
        devices = jax.devices()[:want]  # e.g. mesh {data: 1} on a multi-device host: the first device(s)
    try:
        return shd.make_mesh(mesh_cfg, devices=devices)
    except ValueError as e:
        raise UserError(f"mesh={sizes}: {e}") from None


class BaseTask(abc.ABC):
    """Model, tokenizer, optimizer, device mesh and data loader common to every task."""

    kind = "sft"

    def __init__(self, cfg):
        self.cfg = cfg
        use_compilation_cache(cfg.compilation_cache_dir)
        self.mesh = start_mesh(cfg.mesh)
        try:  # where rollouts sample (grpojax.sharding.rollout_mesh): the training mesh unless rollout_tensor
            self.rollout_mesh = shd.rollout_mesh(self.mesh, cfg.mesh.rollout_tensor)
        except ValueError as e:
            raise UserError(f"mesh.rollout_tensor: {e}") from None
        self.check_rows(cfg.train.batch_size, "train.batch_size")
        self.tok = load_tokenizer(cfg.tokenizer.path or cfg.model.path, cfg.tokenizer.chat_template,
                                  cfg.tokenizer.system_prompt, model_path=cfg.model.path)
        self.dataset = load_from_config(cfg.data, self.kind, **self.data_options())
        self.loader = self._loader(self.dataset, shuffle=True, batch_size=self.loader_rows())
        self.tx = build_optimizer(cfg.train)
        self.lora = cfg.model.lora.rank > 0
        self.graphdef = None
        self.state_sh = None
        # held-out data of train.eval_every (periodic_eval; preference / reward tasks keep their own)
        self._eval_data = self.load_eval_data() if cfg.train.eval_every and self.kind in ("grpo", "sft") else None

    # ------------------------------------------------------------------ sharding
    def check_rows(self, rows: int, key: str) -> None:
        """UserError unless the batch axes ``data * fsdp`` of the mesh divide ``rows`` (named by ``key``)."""
        n = shd.batch_axis_size(self.mesh)
        if rows % n:
            m = self.cfg.mesh
            raise UserError(f"{key}={rows} is not divisible by mesh data*fsdp={n} (mesh.data={m.data}, "
                            f"mesh.fsdp={m.fsdp} on {self.mesh.size} devices); use a multiple of {n} or "
                            "change mesh.data / mesh.fsdp")

    def batch_sharding(self, rows: int):
        """The sharding of a ``[rows, ...]`` batch leaf: rows over ``(data, fsdp)`` where they divide."""
        return shd.named(self.mesh, shd.batch_spec((rows,), self.mesh))

    def global_rows(self, local: dict) -> dict:
        """This host's rows of a batch (NumPy, from the loader) -> global arrays sharded over the batch axes."""
        return shd.global_batch({k: np.asarray(v) for k, v in local.items()}, self.mesh)

    def full_rows(self, batch: dict) -> dict:
        """A batch every host holds whole (sampler outputs, host-side rewards) -> rows over the batch axes."""
        return shd.global_batch_from_full(batch, self.mesh)

    def sampling_inputs(self, model, prompt_ids_BP, prompt_mask_BP):
        """``(model, prompt_ids, prompt_mask, cache_fn)`` for ``grpojax.sampling.sample`` on the rollout mesh.

        On the training mesh (``mesh.rollout_tensor`` null) the model is used as it is; otherwise its state
        is copied onto :attr:`rollout_mesh` (:func:`grpojax.sharding.copy_to_rollout`; once per rollout,
        freed with the returned model; a model returned by this method is reused as it is). The host's whole
        prompt batch goes on the same mesh with rows over its batch axes, and the KV cache is a
        :class:`ShardedCache` there (``None``, the sampler's default, on one device). The
        sampled arrays come back on the rollout mesh: ``full_rows`` moves them onto the training mesh."""
        mesh = self.rollout_mesh
        graphdef, st = nnx.split(model)
        leaf = jax.tree.leaves(st)[0]
        if mesh is not self.mesh and leaf.sharding.mesh != mesh:  # not yet copied (evaluate reuses the copy)
            model = nnx.merge(graphdef, shd.copy_to_rollout(st, self.mesh, mesh))
        rows = shd.global_batch_from_full({"ids": prompt_ids_BP, "mask": prompt_mask_BP}, mesh)
        cache_fn = None if mesh.size == 1 else shd.ShardedCache(
            model.config, mesh, jnp.dtype(getattr(model, "dtype", jnp.float32)))
        return model, rows["ids"], rows["mask"], cache_fn

    def evaluate_policy(self, state, prompts: list, rc, score_fn, aspect_names, *,
                        batch_prompts: int | None = None, seed: int = 0, columns: dict | None = None) -> dict:
        """Mean reward and per-aspect scores of the policy in ``state`` on ``prompts``: ``rc.num_generations``
        samples each with the method section ``rc``'s sampling settings, scored by ``score_fn`` (the
        training reward) and aggregated as in training; no update. Returns TRL-named means over all
        prompts (``eval/reward``, ``eval/rewards/<aspect>/mean``, ``eval/completions/mean_length``, ...).
        ``columns`` (the prompts' other data columns, one value per prompt) reach ``score_fn`` as its
        ``columns`` keyword, aligned with the completions."""
        from grpojax.rewards.functions import data_columns
        from grpojax.rollout import generate_and_score, sampling_settings

        n = batch_prompts or self.cfg.train.batch_size // rc.num_generations
        sums, count, model, sampling = {}, 0, self.model_of(state), sampling_settings(rc)
        for i in range(0, len(prompts), n):
            chunk = prompts[i:i + n]
            if columns is not None:
                cols = data_columns({k: v[i:i + n] for k, v in columns.items()}, rc.num_generations)
                score_fn_chunk = functools.partial(score_fn, columns=cols)
            pb = self.tok.prompt_batch(chunk, self.cfg.data.max_prompt_length)
            model, ids, mask, cache_fn = self.sampling_inputs(model, pb.prompt_ids_BT, pb.prompt_mask_BT)
            ro = generate_and_score(model, ids, mask, chunk, jax.random.fold_in(jax.random.key(seed), i),
                                    tok=self.tok, sampling=sampling, aspect_names=aspect_names,
                                    score_fn=score_fn if columns is None else score_fn_chunk,
                                    aggregation=rc.aggregation, reward_weights=rc.reward_weights or None,
                                    cache_fn=cache_fn)
            for k, v in ro.metrics.items():
                if k == "reward" or k.endswith("/mean") or k.startswith("completions/mean"):
                    sums[k] = sums.get(k, 0.0) + v * len(chunk)
            count += len(chunk)
        return {f"eval/{k}": v / count for k, v in sums.items()} | {"eval/num_prompts": count}

    def jit_step(self, step_fn, rows: int):
        """``step_fn(state, batch, rng)`` jitted with the state's shardings (donated) and ``rows`` batch rows."""
        return shd.jit_step(step_fn, self.state_sh, self.batch_sharding(rows), self.mesh)

    def born_sharded(self) -> bool:
        """Random-init models are created sharded under jit; checkpoints on disk are loaded, then placed."""
        return self.cfg.model.path is None

    def place(self, build, *, on_disk: bool | None = None):
        """``build() -> (pytree of arrays, static)`` with the arrays placed on the mesh by the rules.

        On a multi-device mesh with :meth:`born_sharded`, ``build`` runs under ``jax.jit`` with the rules'
        ``out_shardings`` (no device ever holds a whole weight); otherwise it runs eagerly (a 1-device mesh
        is exactly the unsharded build) and the result is ``device_put`` onto its shardings. Returns
        ``(tree, static, shardings)``; ``on_disk`` (default ``not born_sharded()``) forces the eager path."""
        holder = {}
        on_disk = not self.born_sharded() if on_disk is None else on_disk

        def arrays():
            tree, holder["static"] = build()
            return tree

        if self.mesh.size == 1:
            tree = arrays()
            shardings = shd.tree_shardings(tree, self.mesh)
            return shd.shard(tree, shardings), holder["static"], shardings
        if not on_disk:
            abstract = jax.eval_shape(arrays)
            shardings = shd.tree_shardings(abstract, self.mesh)
            return jax.jit(arrays, out_shardings=shardings)(), holder["static"], shardings
        with shd.host_memory():  # load into host memory, then each device takes its slices
            tree = arrays()
        shardings = shd.tree_shardings(tree, self.mesh)
        return shd.place_from_host(tree, shardings), holder["static"], shardings

    def data_options(self) -> dict:
        """Extra keyword arguments of :func:`grpojax.data.load_from_config` (the reward task's aspects)."""
        return {}

    def loader_rows(self) -> int:
        """Dataset rows one optimizer step reads: ``train.batch_size`` (sequences or pairs) by default;
        prompts (``batch_size / num_generations``) for the tasks that sample completions."""
        return self.cfg.train.batch_size

    def _loader(self, dataset, shuffle: bool, batch_size: int | None = None):
        d = self.cfg.data
        collate = functools.partial(COLLATE[self.kind], self.tok, max_prompt_length=d.max_prompt_length,
                                    max_length=d.max_length)
        return DataLoader(dataset, lambda rows: collate(rows), batch_size or self.cfg.train.batch_size,
                          seed=d.shuffle_seed, shuffle=shuffle,
                          shard=(jax.process_index(), jax.process_count()))

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

        state, self.graphdef, self.state_sh = self.place(build)
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
        if self.kind == "grpo":  # the other columns reach the reward functions (GRPOTask.periodic_eval)
            self._eval_columns = {k: data[k] for k in data.column_names if k != "prompt"}
            return list(data["prompt"])
        return data

    def periodic_eval(self, state) -> dict:
        """Rollout kinds: the policy's mean reward and per-aspect scores on the held-out prompts
        (:meth:`evaluate`, seeded by ``train.seed`` as ``scripts/evaluate.py`` is): ``eval/reward``,
        ``eval/rewards/<name>/mean``, ``eval/completions/mean_length``, ``eval/num_prompts``."""
        return self.evaluate(state, self._eval_data, seed=self.cfg.train.seed)

    def model_of(self, state):
        return merge_model(self.graphdef, state.params, state.frozen)

    def frozen_reference(self, state):
        """``(graphdef, params, frozen)`` of the frozen reference: ``model.ref_path`` when set, else a copy
        of the initial policy (under LoRA the initial adapters are zero, so that is the base model)."""
        if self.cfg.model.ref_path:
            def build():
                graphdef, params, frozen = split_model(build_model(self.cfg.model, path=self.cfg.model.ref_path))
                return (params, frozen), graphdef

            (params, frozen), graphdef, _ = self.place(build, on_disk=True)
            return graphdef, params, frozen
        return self.graphdef, jax.tree.map(jnp.copy, state.params), None

    def ref_arrays(self, state):
        """``(params, frozen)`` to call the reference with. A reference copied from the initial policy has
        ``frozen = None`` in ``self._ref``: its frozen part (the LoRA base) IS the train state's, read from
        the current ``state`` -- the jitted step donates the state, so a captured handle to those buffers
        would point at deleted memory after the first step (and a copy would double the base's memory)."""
        _, params, frozen = self._ref
        return params, (self.ref_frozen_of(state) if frozen is None else frozen)

    def ref_frozen_of(self, state):
        return state.frozen

    def export(self, state, out_dir: str) -> str | None:
        """The trained policy as a HF directory with the tokenizer and a ``generation_config.json`` listing
        every end id (process 0 writes; on a pod the weights are gathered to every host first, a collective
        every process runs)."""
        from grpojax.models import to_hf

        params, frozen = shd.to_host((state.params, state.frozen))
        if not shd.is_main_process():
            return None
        model = self.model_of(state._replace(params=params, frozen=frozen))
        if self.lora:
            from grpojax.models.lora import merge_lora

            model = merge_lora(model)
        path = to_hf(model, out_dir)
        self.tok.hf.save_pretrained(out_dir)
        write_generation_config(out_dir, self.tok, self.cfg.model.path)  # every end id travels with it
        print(f"exported the policy to {path}")
        return path


class SFTTask(BaseTask):
    kind = "sft"

    def _compile(self, graphdef):
        self._step = self.jit_step(functools.partial(sft_step, graphdef=graphdef, tx=self.tx,
                                                     num_micro=self.cfg.train.grad_accum),
                                   self.cfg.train.batch_size)

    def train_steps(self, state, step, rngs):
        batch = self.global_rows(split_sequences(next(self.loader), self.cfg.data.max_prompt_length))
        state, metrics = self._step(state, batch, rngs[0])
        return state, [host_row(metrics)]

    def periodic_eval(self, state) -> dict:
        """The training loss on the held-out pairs: token-mean response NLL over every pair once
        (``eval/loss``, ``eval/perplexity``), in batches of ``train.batch_size`` (padding rows masked)."""
        d, bs = self.cfg.data, self.cfg.train.batch_size
        if getattr(self, "_eval_nll", None) is None:
            fn = functools.partial(sft_nll_sums, graphdef=self.graphdef)
            self._eval_nll = jax.jit(shd.traced_on_mesh(fn, self.mesh))
        nll = tokens = 0.0
        for idx, real in padded_batches(len(self._eval_data), bs):
            raw = COLLATE[self.kind](self.tok, self._eval_data[idx], max_prompt_length=d.max_prompt_length,
                                     max_length=d.max_length)
            b = split_sequences(raw, d.max_prompt_length)
            b["completion_mask_BL"] = b["completion_mask_BL"].copy()
            b["completion_mask_BL"][real:] = 0
            s, t = shd.to_host(self._eval_nll(state.params, state.frozen, self.full_rows(b)))
            nll, tokens = nll + float(s), tokens + float(t)
        loss = nll / max(tokens, 1.0)
        return {"eval/loss": loss, "eval/perplexity": float(np.exp(loss))}
