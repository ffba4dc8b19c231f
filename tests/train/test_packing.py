"""Sequence packing (``data.packing``): a packed batch gives the unpacked batch's loss, metrics and update.

Each step runs once on the unpacked rows and once on the same examples packed several per row, with plain
SGD (lr 1), so equal updated parameters mean equal gradients. The tokenizer is a stand-in whose pad id is
its EOS (as Qwen's), so the reward model's "last non-pad token" rule is exercised per segment. The runs
through the real task and runner then compare 2-step metrics with the key on and off.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from grpojax.cli import UserError
from grpojax.config import load_config
from grpojax.data import encode_sequences
from grpojax.data.packing import pack_preference, pack_reward, pack_sft
from grpojax.models import Qwen, QwenConfig, RewardModel
from grpojax.train.steps.preference import (
    PreferenceSettings,
    init_robust_state,
    preference_step,
)
from grpojax.train.steps.reward import reward_step
from grpojax.train.steps.sft import sft_step
from grpojax.train.steps.state import create_train_state

CFG = QwenConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=4,
                 num_kv_heads=2, head_dim=8, tie_word_embeddings=True)
EOS, P_LEN, T_LEN, B = 3, 8, 24, 8
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Tok:
    """Token lists in, token lists out; pad == EOS like Qwen's base tokenizers."""
    pad_id = eos_id = EOS

    def encode_prompt(self, x):
        return list(x)

    def encode_response(self, x):
        return list(x)


def _texts(seed, n=B):
    r = np.random.default_rng(seed)
    prompts = [list(r.integers(4, CFG.vocab_size, r.integers(2, P_LEN + 1))) for _ in range(n)]
    responses = [list(r.integers(4, CFG.vocab_size, r.integers(1, 9))) for _ in range(n)]
    return prompts, responses


def _unpacked(raw, prefix=""):
    """The unpacked step's prompt / completion layout of a collated batch."""
    ids, att, loss = (np.asarray(raw[f"{prefix}{k}"]) for k in ("input_ids_BT", "attention_mask_BT", "loss_mask_BT"))
    return {"prompt_BQ": ids[:, :P_LEN], "prompt_mask_BQ": att[:, :P_LEN], "completion_BC": ids[:, P_LEN:],
            "completion_mask_BC": loss[:, P_LEN:]}


def _run(step, state, batch):
    new, metrics = jax.jit(step)(jax.tree.map(jnp.copy, state), jax.tree.map(jnp.asarray, batch), jax.random.key(0))
    return new, {k: np.asarray(v) for k, v in metrics.items()}


def _assert_same(a, b, keys, rtol=2e-5, atol=1e-6):
    (sa, ma), (sb, mb) = a, b
    for k in keys:
        np.testing.assert_allclose(ma[k], mb[k], rtol=rtol, atol=atol, err_msg=k)
    for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params)):  # SGD lr 1: equal gradients
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_sft_packed_step_equals_unpacked(num_micro=2):
    prompts, responses = _texts(0)
    raw = encode_sequences(_Tok(), prompts, responses, P_LEN, T_LEN)
    packed = pack_sft(raw, T_LEN, EOS, rows_multiple=num_micro)
    assert packed["input_ids_BT"].shape[0] < B  # fewer rows
    tx = optax.sgd(1.0)
    graphdef, state = create_train_state(Qwen(CFG, rngs=nnx.Rngs(0)), tx, jax.random.key(0))
    step = functools.partial(sft_step, graphdef=graphdef, tx=tx, num_micro=num_micro, logprob_chunk=8)
    _assert_same(_run(step, state, _unpacked(raw)), _run(step, state, packed), ["loss", "tokens", "grad_norm"])


def test_reward_packed_step_equals_unpacked():
    prompts, responses = _texts(1)
    raw = encode_sequences(_Tok(), prompts, responses, P_LEN, T_LEN)
    r = np.random.default_rng(2)
    label_mask = (r.uniform(size=(B, 3)) < 0.7).astype(np.int32)
    raw["labels_BR"] = np.where(label_mask > 0, r.normal(size=(B, 3)), 0.0).astype(np.float32)
    raw["label_mask_BR"] = label_mask
    packed = pack_reward(raw, T_LEN, EOS)
    assert packed["input_ids_BT"].shape[0] < B
    tx = optax.sgd(1.0)
    graphdef, state = create_train_state(RewardModel(CFG, 3, rngs=nnx.Rngs(1), pad_token_id=EOS), tx,
                                         jax.random.key(0))
    step = functools.partial(reward_step, graphdef=graphdef, tx=tx)
    plain = {k: raw[k] for k in ("input_ids_BT", "attention_mask_BT", "labels_BR", "label_mask_BR")}
    _assert_same(_run(step, state, plain), _run(step, state, packed), ["loss", "mse", "grad_norm"])


def test_preference_packed_step_equals_unpacked():
    """GR-IPO with length-averaged log-probs (the run test below covers summed ones): the pairs' sequence
    log-probs, the alpha update and the weighted loss's gradient."""
    prompts, chosen = _texts(3)
    _, rejected = _texts(4)
    tok = _Tok()
    raw = encode_sequences(tok, prompts, chosen, P_LEN, T_LEN, "chosen_")
    raw.update(encode_sequences(tok, prompts, rejected, P_LEN, T_LEN, "rejected_"))
    group = np.asarray([0, 1, 1, 0, 1, 1, 1, 0], np.int32)
    c, rj = _unpacked(raw, "chosen_"), _unpacked(raw, "rejected_")
    plain = {"prompt_BQ": c["prompt_BQ"], "prompt_mask_BQ": c["prompt_mask_BQ"], "chosen_BC": c["completion_BC"],
             "chosen_mask_BC": c["completion_mask_BC"], "rejected_BC": rj["completion_BC"],
             "rejected_mask_BC": rj["completion_mask_BC"], "group_id_B": group}
    packed = {**pack_preference(raw, T_LEN, EOS), "group_id_B": group}
    assert packed["input_ids_BT"].shape[0] < 2 * B  # the unpacked step runs 2B sequences
    r = np.random.default_rng(5)  # reference log-probs (the reference runs the same pair_logprobs)
    ref = (r.normal(-4.0, 0.3, B).astype(np.float32), r.normal(-4.5, 0.3, B).astype(np.float32))
    for batch in (plain, packed):
        batch["ref_chosen_logp_B"], batch["ref_rejected_logp_B"] = ref
    settings = PreferenceSettings(loss="gr_ipo", beta=0.5, num_groups=2, group_sizes=(30, 70), eta_alpha=0.5,
                                  average_logprobs=True, logprob_chunk=8)
    tx = optax.sgd(1.0)
    graphdef, state = create_train_state(Qwen(CFG, rngs=nnx.Rngs(2)), tx, jax.random.key(0),
                                         robust=init_robust_state(settings))
    step = functools.partial(preference_step, graphdef=graphdef, tx=tx, settings=settings)
    a, b = _run(step, state, plain), _run(step, state, packed)
    _assert_same(a, b, ["loss", "rewards/margins", "rewards/chosen_rewards", "rewards/rejected_rewards",
                        "group_loss", "robust/alpha", "grad_norm"])


def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("kind", ["dpo"])  # sft and reward: their steps are compared above (CI time)
def test_two_step_run_with_packing_matches_unpacked(kind, tmp_path, monkeypatch):
    """The real task and runner, 2 steps of 16 examples (2 per row of 112 tokens): the same metrics with
    data.packing on as off, on fewer rows (8 devices: rows come in multiples of 8). ``sft`` and ``reward``
    work the same way (``python -m pytest ... -k two_step`` after adding them to the list)."""
    from grpojax.train.runner import run
    from grpojax.train.tasks import PreferenceTask, RewardTask, SFTTask

    monkeypatch.chdir(ROOT)
    task = {"sft": SFTTask, "reward": RewardTask, "dpo": PreferenceTask}[kind]
    rows = {}
    for packing in (False, True):
        out = tmp_path / str(packing)
        cfg = load_config(f"configs/tiny_{kind}.yaml", [
            "train.steps=2", "train.batch_size=16", "data.max_length=112", f"data.packing={packing}",
            f"run_dir={out}", "train.save_every=100", "model.shape.num_layers=1"])
        run(cfg, task(cfg))
        rows[packing] = _metrics(out)
    assert len(rows[True]) == len(rows[False]) == 2
    sequences = 32 if kind == "dpo" else 16
    for off, on in zip(rows[False], rows[True]):
        assert on["packing/rows"] < sequences and "packing/rows" not in off
        for k, v in off.items():
            if isinstance(v, float) and "time" not in k and "per_sec" not in k:
                np.testing.assert_allclose(on[k], v, rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("kind,overrides,words", [
    ("grpo", [], "grpo runs train on sampled completions"),
    ("reward", ["reward.loss=bradley_terry", "reward.aspects=[safety]", "data.label_columns=[]"],
     "reward.loss=regression"),
    ("dpo", ["train.micro_batch_size=4"], "unset train.micro_batch_size"),
    ("dpo", ["preference.shared_prefix=true"], "no separate prompt rows to share"),
])
def test_packing_is_refused_where_it_cannot_work(kind, overrides, words):
    with pytest.raises(UserError, match="data.packing") as e:
        load_config(os.path.join(ROOT, f"configs/tiny_{kind}.yaml"),
                    ["run_dir=/tmp/never", "data.packing=true", *overrides])
    assert words in str(e.value) and "\n" not in str(e.value)
