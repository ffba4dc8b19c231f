"""The frozen reference policy of the KL / preference terms: ``model.ref_path`` when set, else a copy of
the initial policy (under LoRA the initial adapters are zero, so that is the base model)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from grpojax.train.build import build_model
from grpojax.train.steps.state import split_model


class Reference(NamedTuple):
    """The reference's ``graphdef`` and arrays. ``frozen`` None: its frozen part (the LoRA base) IS the
    train state's, read from the current state at every call (:meth:`arrays`) -- the jitted step donates
    the state, so a captured handle to those buffers would point at deleted memory after the first step
    (and a copy would double the base's memory)."""

    graphdef: Any
    params: Any
    frozen: Any

    def arrays(self, state_frozen) -> tuple:
        """``(params, frozen)`` to call the reference with; ``state_frozen``: the current state's."""
        return self.params, (state_frozen if self.frozen is None else self.frozen)


def frozen_reference(model_cfg, placement, graphdef, state) -> Reference:
    """The reference of a run: ``model_cfg.ref_path`` loaded and placed on ``placement``'s mesh, else the
    policy ``graphdef`` with a copy of ``state.params`` and ``frozen = None``."""
    if model_cfg.ref_path:
        def build():
            ref_graphdef, params, frozen = split_model(build_model(model_cfg, path=model_cfg.ref_path))
            return (params, frozen), ref_graphdef

        (params, frozen), ref_graphdef, _ = placement.place(build, on_disk=True)
        return Reference(ref_graphdef, params, frozen)
    return Reference(graphdef, jax.tree.map(jnp.copy, state.params), None)
