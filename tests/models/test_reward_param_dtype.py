"""``model.param_dtype`` of a reward run reaches a reward model loaded from a HF checkpoint (issue 17 item 8:
it was accepted and ignored, the weights took ``model.dtype``: bf16 master weights under the 0.5B reward
preset's ``param_dtype: float32``)."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from grpojax.config import ModelConfig, RewardConfig, TrainConfig
from grpojax.train.build import build_reward_model


@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_reward_backbone_from_hf_keeps_param_dtype(hf_checkpoint, param_dtype):
    ckpt, _ = hf_checkpoint("qwen2-gqa2-untied")
    cfg = SimpleNamespace(model=ModelConfig(path=ckpt, dtype="bfloat16", param_dtype=param_dtype),
                          reward=RewardConfig(aspects=("a", "b")), train=TrainConfig())
    model = build_reward_model(cfg)
    dtypes = {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))}
    assert dtypes == {jnp.dtype(param_dtype)}, dtypes
    assert model.backbone.dtype == jnp.bfloat16  # computes in model.dtype
