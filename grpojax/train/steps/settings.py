"""The one map from a config section to a step's static options (and so to its loss's keywords).

Every step's options (:class:`grpojax.train.steps.grpo.GRPOSettings`, ``PPOSettings``,
``PreferenceSettings``) are named as the YAML keys of their section, which are also the keywords of the
loss they reach (``epsilon``, ``cliprange``, ``kl_coef``, ``beta``, ``eta_alpha``, ...): one name per knob
from YAML to loss. :func:`from_section` copies the fields the section and the options share, by name,
and takes the few options that are not config keys (derived ones, e.g. GRPO's ``emit_logp``) as
keywords; nothing is renamed on the way.
"""

from __future__ import annotations

import dataclasses


def from_section(cls, section, **derived):
    """``cls(**shared, **derived)``: ``shared`` are the fields of the frozen dataclass ``cls`` that the config
    section ``section`` also has (same name, value as it is); ``derived`` sets the others (it may not
    override a shared field)."""
    names = {f.name for f in dataclasses.fields(cls)}
    shared = {n: getattr(section, n) for n in names if hasattr(section, n)}
    clash = sorted(set(shared) & set(derived))
    if clash:
        raise ValueError(f"{cls.__name__}: {clash} come from the config section; do not pass them again")
    return cls(**shared, **derived)
