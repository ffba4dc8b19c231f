"""A trained reward model as the scorer of GRPO / PPO / online-DPO rollouts.

``load_reward_scorer(path, cfg, tok)`` loads a grpojax reward ``run_dir`` (its ``config.yaml`` + latest
checkpoint) or a HF ``*ForSequenceClassification`` directory / hub id (e.g. the ``export_hf`` of a reward
run) and returns a :class:`RewardModelScorer`: ``scorer(batch, prompts_N, texts_N) -> [N, R]`` scores on
the labels' scale (``RewardModel.to_label_space``), the column order of ``<section>.aspects``.

Which token ids the reward model reads:

* the reward model's tokenizer is the policy's (same vocabulary, pad / EOS / BOS ids and prompt
  formatting): the sampled ids ``prompt_BQ`` + ``completion_BC`` as they are (no host round trip);
* another tokenizer (e.g. a reward model of another family): the prompt texts and decoded completions
  are tokenised again with the reward model's tokenizer exactly as reward training encodes a row
  (:func:`grpojax.data.batching.encode_sequences`: its chat template / system prompt, then the response
  and its EOS when the completion ended with an end token), left / right padded to lengths rounded up to
  a multiple of ``PAD_MULTIPLE`` (a few compilations, not one per batch);
* a HF directory without tokenizer files: the policy's ids when its vocabulary fits the reward model's
  embedding, otherwise a :class:`UserError` naming both.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from flax import nnx

from grpojax.checkpoint import Checkpointer, abstract_like
from grpojax.cli import UserError
from grpojax.config import load_config
from grpojax.data import load_tokenizer
from grpojax.data.batching import left_pad, right_pad
from grpojax.models import reward_model
from grpojax.models.hf_io import read_hf_config, resolve_checkpoint
from grpojax.models.reward_model import grpojax_meta, hf_aspect_names
from grpojax.sharding import global_batch_from_full, make_mesh, shard, to_host, traced_on_mesh, tree_shardings
from grpojax.train.build import DTYPES, build_optimizer, build_reward_model
from grpojax.train.steps.forward import sequence_inputs
from grpojax.train.steps.state import create_train_state, merge_model

SCORED = ("prompt_BQ", "prompt_mask_BQ", "completion_BC", "completion_mask_BC")
PAD_MULTIPLE = 32
_PROBE = "Is this the same prompt format?"


def same_tokenizer(a, b) -> bool:
    """True when ``a`` and ``b`` (:class:`grpojax.data.Tokenizer`) turn the same text into the same ids:
    same special ids, same formatted prompt, same vocabulary."""
    if (a.eos_id, a.pad_id, a.hf.bos_token_id, a.use_chat_template) != \
            (b.eos_id, b.pad_id, b.hf.bos_token_id, b.use_chat_template):
        return False
    return a.format_prompt(_PROBE) == b.format_prompt(_PROBE) and a.hf.get_vocab() == b.hf.get_vocab()


def _round_up(n: int) -> int:
    return max(PAD_MULTIPLE, -(-n // PAD_MULTIPLE) * PAD_MULTIPLE)


class RewardModelScorer:
    """``scorer(batch, prompts_N=None, texts_N=None) -> [N, R]`` label-scale scores (a jax array).

    ``retokenize`` says which path it takes (module docstring); the texts are needed only then.
    ``tokenizer``: the reward model's :class:`grpojax.data.Tokenizer` (None: it uses the policy's ids)."""

    def __init__(self, graphdef, state, mesh, *, tokenizer=None, policy_tokenizer=None, retokenize=False):
        self.tokenizer, self.policy_tokenizer, self.retokenize = tokenizer, policy_tokenizer, retokenize
        self.mesh = mesh

        def label_scores(state, prompt, prompt_mask, completion, completion_mask):
            m = nnx.merge(graphdef, state)
            tokens, mask, positions = sequence_inputs(prompt, prompt_mask, completion, completion_mask)
            return m.to_label_space(m(tokens, mask, positions))

        self._state = state
        self._score = jax.jit(traced_on_mesh(label_scores, mesh))  # the backbone's activation pins apply

    def __call__(self, batch, prompts_N=None, texts_N=None):
        if not self.retokenize:  # arrays on another mesh of the same devices (rollout_tensor): jit reshards
            return self._score(self._state, *(batch[k] for k in SCORED))
        if prompts_N is None or texts_N is None:
            raise ValueError("this reward model has its own tokenizer: call the scorer with the prompt and "
                             "completion texts")
        arrays = global_batch_from_full(self.encode(batch, prompts_N, texts_N), self.mesh)
        return self._score(self._state, *(arrays[k] for k in SCORED))

    def ended(self, batch) -> np.ndarray:
        """``[N]`` bool: the sampled completion's last token is one of the policy's end ids."""
        tok = self.policy_tokenizer
        ends = {tok.eos_id, *(getattr(tok, "end_ids", None) or ())}
        ids, mask = to_host((batch["completion_BC"], batch["completion_mask_BC"]))
        lengths = np.asarray(mask).astype(bool).sum(axis=1)
        last = np.asarray(ids)[np.arange(len(lengths)), np.maximum(lengths - 1, 0)]
        return (lengths > 0) & np.isin(last, list(ends))

    def encode(self, batch, prompts_N, texts_N) -> dict:
        """The texts as reward training encodes them, with the reward model's tokenizer (NumPy rows)."""
        rtok = self.tokenizer
        ended = self.ended(batch)
        if len(prompts_N) != len(texts_N) or len(texts_N) != len(ended):
            raise ValueError(f"{len(prompts_N)} prompts and {len(texts_N)} texts for {len(ended)} sampled rows")
        prompts = [rtok.encode_prompt(p) for p in prompts_N]
        responses = [rtok.encode_response(t) + ([rtok.eos_id] if e else []) for t, e in zip(texts_N, ended)]
        p_ids, p_mask = left_pad(prompts, _round_up(max(map(len, prompts))), rtok.pad_id)
        r_ids, r_mask = right_pad(responses, _round_up(max(map(len, responses))), rtok.pad_id)
        return {"prompt_BQ": p_ids, "prompt_mask_BQ": p_mask, "completion_BC": r_ids, "completion_mask_BC": r_mask}


def _dtypes(model_cfg) -> dict:
    """The run's compute dtype ``model.dtype`` (float32 where it names none) for the frozen reward model's
    compute and storage: nothing trains it, so float32 storage (``model.param_dtype``, kept for the
    policy's optimizer) would only double its memory."""
    dtype = DTYPES[getattr(model_cfg, "dtype", "float32")]
    return {"dtype": dtype, "param_dtype": dtype}


def _hf_tokenizer(ckpt: str, meta: dict):
    """The tokenizer saved in a HF reward directory with the prompt formatting recorded at export (None
    when the directory has no tokenizer files)."""
    if not any(os.path.isfile(os.path.join(ckpt, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    return load_tokenizer(ckpt, meta.get("chat_template", True), meta.get("system_prompt"))


def _restore_run_dir(path: str, mesh):
    """``(model, tokenizer, aspects)`` of a reward run_dir: its latest checkpoint on ``mesh``."""

    rcfg = load_config(os.path.join(path, "config.yaml"), kind="reward")
    rtok = load_tokenizer(rcfg.tokenizer_path, rcfg.tokenizer.chat_template, rcfg.tokenizer.system_prompt)
    holder = {}

    def build():  # shapes only: nothing is materialised before the restore
        holder["graphdef"], st = create_train_state(build_reward_model(rcfg, rtok.pad_id),
                                                    build_optimizer(rcfg.train), jax.random.key(0),
                                                    lora=rcfg.model.lora.rank > 0)
        return st

    template = jax.eval_shape(build)
    with Checkpointer(path, save_every=1, keep=1) as ck:
        restored = ck.restore_latest(abstract_like(template, tree_shardings(template, mesh)))
    if restored is None:
        raise UserError(f"{path}: a reward run directory without checkpoints")
    model = merge_model(holder["graphdef"], restored.state.params, restored.state.frozen)
    return model, rtok, list(rcfg.reward.aspects)


def load_reward_scorer(path: str, cfg, tok, *, mesh=None, section: str = "grpo") -> RewardModelScorer:
    """The :class:`RewardModelScorer` of a reward run_dir or a HF directory / hub id.

    ``section`` names the config section whose ``aspects`` the reward model must score (``grpo``, ``ppo``,
    ``online_dpo``): a run_dir's aspects, or a HF directory's ``id2label`` names (when it has any), must be
    them, in order. ``tok``: the policy's tokenizer (None: score the sampled ids as they are).

    A HF reward model is loaded in the run's ``model.dtype`` (compute and storage) and layer layout; a
    run_dir's in its own run's. With ``mesh`` the reward model's weights are placed on it by the
    logical-axis rules (restored straight onto those shardings from a run_dir), so it scores the sharded
    sampler's global arrays in place."""

    aspects = list(getattr(cfg, section).aspects)
    if mesh is None:  # one device, as an unsharded model
        mesh = make_mesh((1, 1, 1), devices=jax.local_devices()[:1])
    if os.path.isfile(os.path.join(path, "config.yaml")):
        model, rtok, names = _restore_run_dir(path, mesh)
    elif os.path.isfile(os.path.join(path, "config.json")) or path.count("/") == 1:
        try:  # a HF *ForSequenceClassification directory or hub id (num_labels = the aspects)
            ckpt = resolve_checkpoint(path)
            raw = read_hf_config(ckpt)
            # the run's layer layout (model.scan_layers: on in the 7B / 14B presets) and compute dtype (a 14B
            # reward model in float32 next to a bf16 policy would double its memory) for the reward model too
            model = reward_model.reward_model_from_hf(path, num_labels=len(aspects),
                                                      scan_layers=cfg.model.scan_layers,
                                                      attention=cfg.model.attention, **_dtypes(cfg.model))
        except (FileNotFoundError, OSError, ValueError) as e:
            raise UserError(f"cannot load reward model {path!r}: {e}") from None
        names = hf_aspect_names(raw) or aspects
        rtok = _hf_tokenizer(ckpt, grpojax_meta(raw))
    else:
        raise UserError(f"{section}.reward_model={path!r} is neither a reward run_dir (config.yaml + "
                        "checkpoints) nor a HF directory / hub id")
    if names != aspects:
        raise UserError(f"{path}: the reward model scores aspects {names} but {section}.aspects is {aspects}")
    retokenize = tok is not None and rtok is not None and not same_tokenizer(tok, rtok)
    vocab = model.config.vocab_size
    if tok is not None and rtok is None and tok.vocab_size > vocab:
        raise UserError(f"{section}.reward_model={path!r} has no tokenizer files and a vocabulary of {vocab} "
                        f"ids, but the policy's tokenizer {tok.name} has {tok.vocab_size}: save the reward "
                        f"model's tokenizer in {path} so the texts can be tokenised with it")
    graphdef, state = nnx.split(model)
    state = shard(state, tree_shardings(state, mesh))
    return RewardModelScorer(graphdef, state, mesh, tokenizer=rtok, policy_tokenizer=tok, retokenize=retokenize)
