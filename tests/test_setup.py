import os

import jax
import jax.numpy as jnp
import pytest


def test_eight_fake_cpu_devices():
    assert jax.device_count() == 8
    assert all(d.platform == "cpu" for d in jax.devices())


def test_rank_promotion_raises():
    with pytest.raises(ValueError):
        jnp.ones((2, 3)) + jnp.ones((3,))


def test_offline_mode():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
