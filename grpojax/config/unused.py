"""Keys a run accepts but would never read: each is refused (one line naming the key) when set to anything
but its default, so no setting is silently ignored.

``RULES`` lists ``(key, ignored(cfg), why)``: ``ignored`` says that ``cfg``'s kind / other settings make
``key`` have no effect, ``why`` (a format string over ``cfg``) says why. :func:`refuse_ignored` runs at
the end of every run schema's validation (``grpojax.config.runs``). Keys not listed here are read by every
kind that accepts them (``docs/config_keys.md`` holds the full table, key -> kinds -> where).
Deliberately not refused: ``model.lora.alpha`` / ``targets`` under ``lora.rank: 0`` (``rank=0`` switches a
LoRA preset to full fine-tuning without editing the rest) and ``data.name`` with local files.
"""

from __future__ import annotations

import dataclasses

from grpojax.config.checks import check

ROLLOUT = ("grpo", "ppo", "online_dpo")  # kinds that sample from the policy (prompt data)
_COLUMNS = ("prompt_column", "response_column", "chosen_column", "rejected_column", "label_columns",
            "group_column", "group_names")
_BASE_LOSS = {"dpo": "sigmoid", "gr_dpo": "sigmoid", "is_dpo": "sigmoid", "ipo": "ipo", "gr_ipo": "ipo",
              "hinge": "hinge"}


def _reward_bt(c) -> bool:
    return c.kind == "reward" and c.reward.loss == "bradley_terry"


def _reward_regression(c) -> bool:
    return c.kind == "reward" and c.reward.loss == "regression"


def _ppo_without_kl(c) -> bool:
    return c.kind == "ppo" and c.ppo.kl_coef == 0 and not c.ppo.adaptive_kl


def _reads_pairs(c) -> bool:
    """Kinds whose data are (prompt, chosen, rejected) pairs: preference runs and Bradley-Terry rewards."""
    return c.kind == "dpo" or _reward_bt(c)


RULES = [
    ("model.ref_path", lambda c: c.kind in ("sft", "reward"), "{kind} runs have no reference model"),
    ("model.ref_path", lambda c: c.kind == "grpo" and c.grpo.beta == 0, "grpo.beta=0: no KL term, no reference"),
    ("model.ref_path", _ppo_without_kl, "ppo.kl_coef=0 without ppo.adaptive_kl: no KL, no reference"),
    ("tokenizer.system_prompt", lambda c: not c.tokenizer.chat_template,
     "tokenizer.chat_template=false: prompts are plain text"),
    ("data.eval_split", lambda c: _reward_bt(c), "a Bradley-Terry reward run has no evaluation"),
    ("data.eval_path", lambda c: _reward_bt(c), "a Bradley-Terry reward run has no evaluation"),
    ("data.eval_split", lambda c: _reward_regression(c) and not c.train.eval_every,
     "reward runs evaluate during training only: set train.eval_every > 0"),
    ("data.eval_path", lambda c: _reward_regression(c) and not c.train.eval_every,
     "reward runs evaluate during training only: set train.eval_every > 0"),
    ("data.eval_split", lambda c: c.kind == "sft" and not c.train.eval_every,
     "SFT evaluates during training only: set train.eval_every > 0"),
    ("data.eval_path", lambda c: c.kind == "sft" and not c.train.eval_every,
     "SFT evaluates during training only: set train.eval_every > 0"),
    ("train.eval_every", lambda c: _reward_bt(c), "a Bradley-Terry reward run has no evaluation"),
    *[(f"train.plateau.{k}", lambda c: c.kind != "dpo", "LR-on-plateau is for preference (dpo) runs")
      for k in ("enabled", "factor", "patience", "min_delta")],
    *[(f"train.plateau.{k}", lambda c: c.kind == "dpo" and not c.train.plateau.enabled,
       "train.plateau.enabled=false") for k in ("factor", "patience", "min_delta")],
    *[(f"data.{k}", lambda c: c.data.format != "columns", "data.format={data.format} reads its own columns")
      for k in _COLUMNS],
    ("data.response_column", lambda c: c.kind in ROLLOUT or _reads_pairs(c),
     "{kind} data has no response column (prompts or chosen / rejected pairs)"),
    ("data.chosen_column", lambda c: not _reads_pairs(c), "only preference pairs have a chosen column"),
    ("data.rejected_column", lambda c: not _reads_pairs(c), "only preference pairs have a rejected column"),
    ("data.label_columns", lambda c: not _reward_regression(c), "only regression reward runs read labels"),
    ("data.group_column", lambda c: c.kind != "dpo", "only preference (dpo) runs use groups"),
    ("data.group_names", lambda c: c.kind != "dpo", "only preference (dpo) runs use groups"),
    ("data.pku_preference", lambda c: c.data.format != "pku_saferlhf" or not (c.kind == "sft" or _reads_pairs(c)),
     "it picks the preferred PKU-SafeRLHF response of sft / preference data (data.format=pku_saferlhf)"),
    *[(f"grpo.robust.{k}", lambda c: c.kind == "grpo" and c.grpo.robust.group_column is None,
       "group-robust GRPO is off: set grpo.robust.group_column") for k in ("eta_alpha", "chi", "score")],
    ("mesh.rollout_tensor", lambda c: c.kind not in ROLLOUT, "{kind} runs do not sample"),
    ("data.packing", lambda c: c.kind in ROLLOUT,
     "{kind} runs train on sampled completions; packing is for sft, reward regression and dpo runs"),
    ("data.packing", _reward_bt, "packing is for reward.loss=regression (Bradley-Terry pairs are not packed)"),
    ("mesh.heartbeat_timeout_seconds", lambda c: not c.mesh.multihost,
     "a single-process run has no heartbeat (set mesh.distributed or mesh.coordinator_address)"),
    ("grpo.kl_estimator", lambda c: c.kind == "grpo" and c.grpo.beta == 0, "grpo.beta=0: no KL term"),
    ("grpo.use_bias_correction_kl", lambda c: c.kind == "grpo" and c.grpo.beta == 0, "grpo.beta=0: no KL term"),
    ("ppo.kl_estimator", _ppo_without_kl, "ppo.kl_coef=0 without ppo.adaptive_kl: no KL"),
    ("ppo.kl_target", lambda c: c.kind == "ppo" and not c.ppo.adaptive_kl, "ppo.adaptive_kl=false"),
    ("ppo.kl_horizon", lambda c: c.kind == "ppo" and not c.ppo.adaptive_kl, "ppo.adaptive_kl=false"),
    ("reward.margin", _reward_regression, "reward.loss=regression (the margin is Bradley-Terry's)"),
    ("reward.aspect_weights", _reward_bt, "reward.loss=bradley_terry trains one score"),
    ("reward.label_affine", _reward_bt, "reward.loss=bradley_terry has no labels"),
    *[(f"preference.{k}", lambda c: c.kind in ("dpo", "online_dpo") and not c.preference.loss.startswith("gr_"),
       "only the group-robust losses (gr_dpo, gr_ipo) update group weights") for k in ("eta_alpha", "chi")],
    ("preference.eta_alpha_decay_on_lr_cut",
     lambda c: c.kind in ("dpo", "online_dpo") and not (c.preference.loss.startswith("gr_") and c.kind == "dpo"
                                                        and c.train.plateau.enabled),
     "it decays the group-robust step size at LR-on-plateau cuts (gr_* losses with train.plateau.enabled)"),
    ("preference.label_smoothing",
     lambda c: c.kind in ("dpo", "online_dpo") and _BASE_LOSS[c.preference.loss] != "sigmoid",
     "label smoothing (cDPO) is defined for the sigmoid losses dpo / gr_dpo / is_dpo only"),
]


def default_of(schema, key: str):
    """The default value of dotted ``key`` in the dataclass ``schema``."""
    cls, parts = schema, key.split(".")
    for part in parts[:-1]:  # sections: their classes, never built (a default DataConfig is invalid)
        cls = {f.name: f for f in dataclasses.fields(cls)}[part].default_factory
    f = {f.name: f for f in dataclasses.fields(cls)}[parts[-1]]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def refuse_ignored(cfg) -> None:
    """``Invalid`` (one line naming the key) for the first key of ``RULES`` that ``cfg`` sets away from its
    default although ``cfg`` would never read it."""
    for key, ignored, why in RULES:
        if not hasattr(cfg, key.split(".")[0]) or not ignored(cfg):
            continue
        value = get(cfg, key)
        if _same(value, default_of(type(cfg), key)):
            continue
        check(False, key, f"has no effect in this {cfg.kind} run ({why.format(**_fields(cfg))}); remove it "
              f"(got {value!r})")


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _fields(cfg) -> dict:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
