"""Non-finite steps (issue 17 item 9): a NaN / inf loss or gradient is skipped inside the jitted step (the
state after it equals the state before it, leaf for leaf), counted in ``train/nonfinite_steps``, and
``train.max_bad_steps`` of them in a row stop the run with one ``error:`` line, nothing non-finite saved."""

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.cli import UserError
from grpojax.config import load_config
from grpojax.train.runner import run
from grpojax.train.steps import sft as sft_module
from grpojax.train.steps.grpo import GRPOSettings, grpo_step
from grpojax.train.steps.optim import make_optimizer
from grpojax.train.steps.sft import sft_step
from grpojax.train.steps.state import create_train_state
from grpojax.train.tasks import SFTTask

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pytest runs with --import-mode=importlib
from test_runner import _final_state_leaves, _metrics, _repo_root  # noqa: E402,F401 (autouse fixture)
from test_steps import _batch, _model  # noqa: E402

POISON = 3  # a prompt whose first token is POISON makes the (patched) SFT loss NaN


@pytest.fixture
def poisoned_sft(monkeypatch):
    """SFT's log-probs become NaN for a batch whose first prompt token is POISON: a loss that yields NaN
    on chosen data, traced into the real jitted step."""
    real = sft_module.completion_logprobs

    def patched(model, prompt_BQ, *args, **kwargs):
        out = real(model, prompt_BQ, *args, **kwargs)
        return out._replace(logp_BC=jnp.where(prompt_BQ[0, 0] == POISON, jnp.nan, 1.0) * out.logp_BC)

    monkeypatch.setattr(sft_module, "completion_logprobs", patched)


def _host(tree):
    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in jax.tree.leaves(tree)]


def _assert_same(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def _run_steps(step, state, batches):
    """Host copies of the state before and after each step, and each step's metrics."""
    states, metrics = [_host(state)], []
    for b in batches:
        state, m = step(state, b, jax.random.key(0))
        states.append(_host(state))
        metrics.append({k: float(v) for k, v in m.items() if np.ndim(v) == 0})
    return states, metrics


def test_sft_step_skips_a_nan_loss(poisoned_sft):
    graphdef, state = create_train_state(_model(), make_optimizer(1e-2, total_steps=10), jax.random.key(0))
    step = jax.jit(functools.partial(sft_step, graphdef=graphdef, tx=make_optimizer(1e-2, total_steps=10)))
    good = _batch(1)
    bad = dict(good, prompt_BQ=good["prompt_BQ"].at[0, 0].set(POISON))
    states, metrics = _run_steps(step, state, [good, bad, good])
    assert [m["nonfinite"] for m in metrics] == [0.0, 1.0, 0.0]
    assert not np.isfinite(metrics[1]["loss"])
    _assert_same(states[2], states[1])  # the NaN step changed nothing (params, Adam moments, counts, step)
    assert not np.array_equal(states[1][1], states[0][1]) and not np.array_equal(states[3][1], states[2][1])
    assert all(np.all(np.isfinite(x)) for x in states[3] if x.dtype.kind == "f")


@pytest.mark.parametrize("num_micro", [1, 2])
def test_grpo_step_skips_nan_advantages(num_micro):
    tx = make_optimizer(1e-2, total_steps=10)
    graphdef, state = create_train_state(_model(), tx, jax.random.key(0))
    step = jax.jit(functools.partial(grpo_step, graphdef=graphdef, tx=tx, num_micro=num_micro,
                                     settings=GRPOSettings(loss_type="grpo", beta=0.0)))
    b = _batch(2)
    B, L = b["completion_BC"].shape
    good = dict(b, old_logp_BC=jnp.full((B, L), -2.0), advantages_B=jnp.linspace(-1.0, 1.0, B))
    row = int(np.argmax(np.asarray(b["completion_mask_BC"]).sum(1)))  # a row with completion tokens
    bad = dict(good, advantages_B=good["advantages_B"].at[row].set(jnp.nan))
    inf = dict(good, old_logp_BC=good["old_logp_BC"].at[row, 0].set(-jnp.inf))
    states, metrics = _run_steps(step, state, [good, bad, inf, good])
    assert [m["nonfinite"] for m in metrics] == [0.0, 1.0, 1.0, 0.0]
    _assert_same(states[2], states[1])
    _assert_same(states[3], states[1])
    assert not np.array_equal(states[4][1], states[3][1])


class PoisonedSFT(SFTTask):
    """SFT whose batches after the steps in ``bad_steps`` are poisoned (their loss is NaN)."""

    bad_steps: tuple = ()

    def train_steps(self, state, step, rngs):
        if step + 1 not in self.bad_steps:
            return super().train_steps(state, step, rngs)
        real = self.placement.global_rows

        def poisoned(local):
            local = dict(local, prompt_BQ=np.asarray(local["prompt_BQ"]).copy())
            local["prompt_BQ"][0, 0] = POISON
            return real(local)

        self.placement.global_rows = poisoned
        try:
            return super().train_steps(state, step, rngs)
        finally:
            self.placement.global_rows = real


def _poisoned_run(tmp_path, bad_steps, overrides):
    cfg = load_config("configs/tiny_sft.yaml", [f"run_dir={tmp_path}", "train.save_every=1",
                                                "train.keep_checkpoints=10", *overrides])
    task = PoisonedSFT(cfg)
    task.bad_steps = bad_steps
    return run(cfg, task)


def _checkpoint(run_dir, step):
    from grpojax.checkpoint import Checkpointer

    with Checkpointer(str(run_dir), save_every=1, keep=10) as ck:
        return _host(ck.restore(step).state)


def test_runner_counts_a_skipped_step_and_goes_on(tmp_path, poisoned_sft):
    summary = _poisoned_run(tmp_path, (2,), ["train.steps=3"])
    assert summary["end_step"] == 3
    rows = _metrics(tmp_path)
    assert [r["train/nonfinite_steps"] for r in rows] == [0.0, 1.0, 1.0]
    assert "nonfinite" not in rows[0]
    _assert_same(_checkpoint(tmp_path, 2), _checkpoint(tmp_path, 1))


def test_runner_stops_after_max_bad_steps_in_a_row(tmp_path, poisoned_sft):
    with pytest.raises(UserError) as e:
        _poisoned_run(tmp_path, (2, 3, 4, 5), ["train.steps=6", "train.max_bad_steps=3"])
    msg = str(e.value)
    assert "steps 2-4: 3 non-finite steps in a row" in msg and "train.max_bad_steps=3" in msg, msg
    assert "last checkpoint: step 3" in msg and "\n" not in msg
    assert [r["train/nonfinite_steps"] for r in _metrics(tmp_path)] == [0.0, 1.0, 2.0, 3.0]
    from grpojax.checkpoint import Checkpointer

    with Checkpointer(str(tmp_path), save_every=1, keep=10) as ck:
        assert ck.all_steps() == [1, 2, 3]
    first = _checkpoint(tmp_path, 1)
    for s in (2, 3):  # every checkpoint written during the streak holds step 1's finite state
        _assert_same(_checkpoint(tmp_path, s), first)
