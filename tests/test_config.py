"""grpojax.config: every shipped YAML loads; unknown keys, types, overrides and value rules fail clearly."""

import dataclasses
import glob
import json
import os

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from grpojax import config as C
from grpojax.cli import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
TINY = os.path.join(ROOT, "configs", "tiny_grpo.yaml")


def write(tmp_path, d, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d))
    return str(p)


def base(kind="sft", **sections):
    d = {"kind": kind, "model": {"preset": "qwen2.5-0.5b"}, "tokenizer": {"path": "tok"},
         "data": {"path": "d.jsonl"}}
    if kind == "grpo":
        d["grpo"] = {"reward_funcs": ["length"], "num_generations": 4}
    if kind == "reward":
        d["reward"] = {"aspects": ["a", "b"]}
        d["data"]["label_columns"] = ["a", "b"]
    d.update(sections)
    return d


def test_shipped_configs_all_load_and_round_trip():
    assert len(CONFIGS) >= 15, CONFIGS
    kinds = set()
    for path in CONFIGS:
        cfg = C.load_config(path)
        kinds.add(cfg.kind)
        # dump -> YAML -> load gives the same resolved config; JSON too.
        again = C.config_from_dict(yaml.safe_load(C.dump_config(cfg)))
        assert again == cfg, path
        assert C.config_from_dict(json.loads(C.dump_config(cfg, "json"))) == cfg
    assert kinds == set(C.SCHEMAS), (kinds, set(C.SCHEMAS))
    for name in ("tiny_grpo", "tiny_reward", "tiny_dpo", "tiny_sft"):
        cfg = C.load_config(os.path.join(ROOT, "configs", f"{name}.yaml"))
        # Tiny presets are runnable offline: every referenced local file exists.
        assert os.path.isdir(os.path.join(ROOT, cfg.tokenizer.path))
        assert os.path.isfile(os.path.join(ROOT, cfg.data.path))


def test_paper_presets_hold_the_paper_values():
    g = C.load_config(os.path.join(ROOT, "configs", "grpo_qwen2.5-7b.yaml"))
    assert (g.grpo.num_generations, g.grpo.epsilon, g.grpo.beta, g.grpo.num_iterations, g.grpo.kl_estimator) \
        == (8, 0.2, 0.04, 1, "k3")
    assert g.train.learning_rate == 1e-5 and g.model.lora.rank > 0
    assert g.grpo.aspects == ("politeness", "meaningfulness", "actionability", "safety")
    r = C.load_config(os.path.join(ROOT, "configs", "goqa_gr_ipo_qwen2.5-0.5b.yaml"))
    p = r.preference
    assert (p.loss, p.beta, p.eta_alpha, r.train.learning_rate, r.train.batch_size) == ("gr_ipo", 0.01, 5e-7, 6e-5, 16)
    assert (r.model.lora.rank, r.model.lora.alpha, len(r.model.lora.targets)) == (8, 32.0, 7)
    assert r.train.plateau.enabled and r.train.plateau.factor == 0.1 and r.data.format == "global_opinions"
    ipo = C.load_config(os.path.join(ROOT, "configs", "goqa_ipo_qwen2.5-0.5b.yaml"))
    assert (ipo.preference.loss, ipo.train.learning_rate) == ("ipo", 3e-5)


def test_overrides_are_typed_and_coerced():
    cfg = C.load_config(TINY, ["train.steps=7", "train.learning_rate=1e-4", "run_dir=/tmp/x",
                               "grpo.mask_truncated_completions=true", "grpo.top_k=5", "grpo.top_k=null",
                               "grpo.reward_funcs=[length, keyword]", "model.lora.rank=4",
                               "model.lora.targets=q_proj,v_proj", "export_hf=out/hf", "train.steps=1e1"])
    assert cfg.train.steps == 10 and isinstance(cfg.train.steps, int)
    assert cfg.train.learning_rate == 1e-4 and cfg.run_dir == "/tmp/x" and cfg.export_hf == "out/hf"
    assert cfg.grpo.mask_truncated_completions is True and cfg.grpo.top_k is None
    assert cfg.grpo.reward_funcs == ("length", "keyword")
    assert cfg.model.lora == C.LoraConfig(rank=4, alpha=16.0, targets=("q_proj", "v_proj"))
    assert dataclasses.is_dataclass(cfg) and cfg.train.grad_accum == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.steps = 3  # type: ignore[misc]


def test_pyyaml_string_floats_are_numbers(tmp_path):
    # PyYAML reads `1e-5` (no dot) as a string; float fields must still accept it.
    p = tmp_path / "c.yaml"
    p.write_text("kind: sft\nmodel: {preset: qwen2.5-0.5b}\ntokenizer: {path: t}\ndata: {path: d.jsonl}\n"
                 "train: {learning_rate: 1e-5, adam_eps: 1e-8}\n")
    cfg = C.load_config(str(p))
    assert cfg.train.learning_rate == 1e-5 and cfg.train.adam_eps == 1e-8


@pytest.mark.parametrize("sections, needle", [
    ({"trian": {}}, "unknown key 'trian'; valid keys at the top level: model, tokenizer, data, train, mesh"),
    ({"train": {"stepz": 3}}, "unknown key 'train.stepz'; valid keys in section 'train': steps, batch_size"),
    ({"model": {"preset": "qwen2.5-0.5b", "lora": {"rnk": 2}}}, "unknown key 'model.lora.rnk'; valid keys in section 'model.lora': rank, alpha, targets"),
    ({"train": {"steps": "ten"}}, "train.steps: expected an integer, got 'ten'"),
    ({"train": {"steps": 2.5}}, "train.steps: expected an integer, got 2.5"),
    ({"train": {"steps": True}}, "train.steps: expected an integer, got True"),
    ({"train": {"steps": 0}}, "train.steps: must be > 0, got 0"),
    ({"train": {"schedule": "exp"}}, "train.schedule: must be one of constant, linear, cosine; got 'exp'"),
    ({"train": {"batch_size": 8, "micro_batch_size": 3}}, "train.micro_batch_size: must divide batch_size=8, got 3"),
    ({"train": {"adam_b2": 1.0}}, "train.adam_b2: must be in [0, 1), got 1.0"),
    ({"train": {"plateau": {"enabled": True}}}, "train.plateau.enabled: LR-on-plateau needs evaluations"),
    ({"train": {"plateau": "yes"}}, "'train.plateau' must be a mapping of keys"),
    ({"model": {"preset": "qwen9-1b"}}, "model.preset: unknown preset 'qwen9-1b'; valid presets: qwen2.5-0.5b"),
    ({"model": {"preset": "qwen2.5-0.5b", "path": "x"}}, "model.path: set exactly one of model.path"),
    ({"model": {"path": "x", "shape": {"hidden_size": 8}}}, "model.shape: shape overrides apply to model.preset only"),
    ({"model": {"preset": "qwen2.5-0.5b", "shape": {"num_heads": 4, "num_kv_heads": 3}}}, "model.shape.num_kv_heads: must divide num_heads=4"),
    ({"model": {"preset": "qwen2.5-0.5b", "dtype": "fp8"}}, "model.dtype: must be one of float32, bfloat16, float16; got 'fp8'"),
    ({"model": {"preset": "qwen2.5-0.5b", "remat": True}}, "model.remat: must be one of none, block, full; got True"),
    ({"model": {"preset": "qwen2.5-0.5b", "scan_layers": "maybe"}}, "model.scan_layers: expected"),
    ({"tokenizer": {}}, "tokenizer.path: model.preset has no tokenizer"),
    ({"data": {"max_prompt_length": 64, "max_length": 64, "path": "d"}}, "data.max_length: must exceed max_prompt_length=64"),
    ({"data": {}}, "data.path: data.path is required with format=columns"),
    ({"model": {"preset": "qwen2.5-0.5b", "lora": {"rank": 2, "targets": "q_proj,v_proj"}}}, None),  # a list
    ({"mesh": {"data": -1, "fsdp": -1}}, "mesh.data: at most one mesh axis may be -1"),
    ({"mesh": {"tensor": 0}}, "mesh.tensor: must be -1 or >= 1, got 0"),
    ({"run_dir": " "}, "run_dir: must be a non-empty directory path"),
])
def test_sft_config_errors_name_file_and_key(tmp_path, sections, needle):
    path = write(tmp_path, base("sft", **sections))
    if needle is None:
        assert C.load_config(path).model.lora.targets == ("q_proj", "v_proj")
        return
    with pytest.raises(UserError) as e:
        C.load_config(path)
    assert str(e.value).startswith(path + ": ") or needle.startswith("'")
    assert needle in str(e.value), str(e.value)


@pytest.mark.parametrize("kind, sections, needle", [
    ("grpo", {"grpo": {"num_generations": 1, "reward_funcs": ["x"]}}, "grpo.num_generations: must be >= 2"),
    ("grpo", {"grpo": {"num_generations": 4, "reward_funcs": ["x"]}, "train": {"batch_size": 6}},
     "train.batch_size: must be a multiple of grpo.num_generations=4"),
    ("grpo", {"grpo": {"num_generations": 4, "reward_funcs": ["x"]}, "train": {"batch_size": 8, "micro_batch_size": 2}},
     "train.micro_batch_size: must be a multiple of grpo.num_generations=4"),
    ("grpo", {"grpo": {"loss_type": "ppo", "reward_funcs": ["x"]}}, "grpo.loss_type: must be one of grpo, bnpo, dr_grpo, dapo"),
    ("grpo", {"grpo": {"kl_estimator": "k4", "reward_funcs": ["x"]}}, "grpo.kl_estimator: must be one of k1, k2, k3"),
    ("grpo", {"grpo": {"reward_funcs": []}}, "grpo.reward_model: GRPO needs a reward"),
    ("grpo", {"grpo": {"reward_model": "rm", "reward_funcs": []}}, "grpo.aspects: name the reward model's aspects"),
    ("grpo", {"grpo": {"reward_funcs": ["x"], "top_p": 0}}, "grpo.top_p: must be in (0, 1], got 0.0"),
    ("grpo", {"grpo": {"reward_funcs": ["x"], "delta": 0.5}}, "grpo.delta: must be > 1"),
    ("grpo", {"grpo": {"reward_funcs": ["x"], "aspects": ["a"], "reward_model": "rm", "reward_weights": [1.0]}},
     "grpo.reward_weights: needs one weight per aspect (1) plus one per reward_func (1), got 1"),
    ("grpo", {"grpo": {"reward_funcs": ["x"], "max_completion_length": 0}}, "grpo.max_completion_length: must be > 0"),
    ("dpo", {"preference": {"loss": "gr_dpo"}}, "data.group_column: preference.loss=gr_dpo needs groups"),
    ("dpo", {"preference": {"loss": "kto"}}, "preference.loss: must be one of dpo, ipo, hinge, gr_dpo, gr_ipo, is_dpo"),
    ("dpo", {"preference": {"chi": 1.5}}, "preference.chi: must be in [0, 1], got 1.5"),
    ("dpo", {"preference": {"label_smoothing": 0.5}}, "preference.label_smoothing: must be in [0, 0.5)"),
    ("dpo", {"preference": {"beta": -1}}, "preference.beta: must be > 0"),
    ("reward", {"reward": {"aspects": ["a", "a"]}}, "reward.aspects: has duplicates"),
    ("reward", {"reward": {"aspects": ["a", "b"], "aspect_weights": [1.0]}}, "reward.aspect_weights: needs one weight per aspect (2), got 1"),
    ("reward", {"reward": {"aspects": ["a", "b"], "label_affine": [1.0]}}, "reward.label_affine: expected a list of 2 values, got [1.0] (needs exactly 2 values)"),
    ("reward", {"reward": {"aspects": ["a", "b", "c"]}}, "data.label_columns: needs one column per reward.aspects entry (3), got 2"),
    ("reward", {"reward": {"aspects": ["a", "b"], "loss": "bradley_terry"}}, "reward.aspects: bradley_terry trains one score"),
])
def test_kind_specific_errors(tmp_path, kind, sections, needle):
    d = base(kind)
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    path = write(tmp_path, d)
    with pytest.raises(UserError) as e:
        C.load_config(path)
    assert needle in str(e.value), str(e.value)
    assert path in str(e.value)


@pytest.mark.parametrize("override, needle", [
    ("train.stepz=3", "override 'train.stepz=3': unknown key 'train.stepz'; valid keys in section 'train': steps"),
    ("trian.steps=3", "override 'trian.steps=3': unknown key 'trian'; valid keys: model, tokenizer, data, train, mesh, run_dir, export_hf, compilation_cache_dir, logging, kind, grpo"),
    ("train=3", "override 'train=3': 'train' is a section; set one of its keys: train.steps"),
    ("train.steps.x=3", "'train.steps' is a value, not a section"),
    ("train.steps", "bad override 'train.steps': expected key=value"),
    ("train.steps=abc", "train.steps: expected an integer, got 'abc'"),
    ("train.learning_rate=fast", "train.learning_rate: expected a number, got 'fast'"),
    ("grpo.mask_truncated_completions=maybe", "grpo.mask_truncated_completions: expected true/false, got 'maybe'"),
    ("train.steps=null", "train.steps: expected an integer, got 'null'"),
    ("grpo.reward_weights=[1, x]", "grpo.reward_weights[1]: expected a number, got 'x'"),
    ("grpo.num_generations=3", "train.batch_size: must be a multiple of grpo.num_generations=3"),
])
def test_override_errors(override, needle):
    with pytest.raises(UserError) as e:
        C.load_config(TINY, [override])
    assert needle in str(e.value), str(e.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(UserError, match="config file not found: .*nope.yaml"):
        C.load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: sft\nmodel: [unclosed\n")
    with pytest.raises(UserError, match=r"bad.yaml: invalid YAML"):
        C.load_config(str(bad))
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="top level must be a mapping"):
        C.load_config(str(lst))
    nokind = write(tmp_path, {k: v for k, v in base().items() if k != "kind"}, "nokind.yaml")
    with pytest.raises(UserError, match="no 'kind' key"):
        C.load_config(nokind)
    assert C.load_config(nokind, kind="sft").kind == "sft"
    with pytest.raises(UserError, match="this is a kind='grpo' config but this script needs kind='sft'"):
        C.load_config(TINY, kind="sft")
    with pytest.raises(UserError, match="unknown config kind 'rlhf'"):
        C.load_config(TINY, kind="rlhf")
    badkind = write(tmp_path, base() | {"kind": "rlhf"}, "badkind.yaml")
    with pytest.raises(UserError, match="kind: 'rlhf' is not one of grpo, reward, dpo, sft, ppo"):
        C.load_config(badkind)


def test_dump_config_yaml_is_complete_and_ordered():
    cfg = C.load_config(TINY, ["train.steps=3"])
    text = C.dump_config(cfg)
    assert text.startswith("kind: grpo\n")
    d = yaml.safe_load(text)
    assert list(d) == ["kind", "model", "tokenizer", "data", "train", "mesh", "run_dir", "export_hf", "compilation_cache_dir", "logging",
                       "grpo"]
    assert d["train"]["steps"] == 3 and d["grpo"]["epsilon_high"] is None
    with pytest.raises(ValueError):
        C.dump_config(cfg, "toml")


def test_tokenizer_path_and_pku_reward_without_label_columns(tmp_path):
    assert C.load_config(TINY).tokenizer_path == "configs/data/tiny_tokenizer"
    d = base("reward", data={"format": "pku_saferlhf"}, model={"path": "Qwen/Qwen2.5-0.5B-Instruct"}, tokenizer={})
    cfg = C.load_config(write(tmp_path, d))
    assert cfg.tokenizer_path == "Qwen/Qwen2.5-0.5B-Instruct" and cfg.data.label_columns == ()


def test_write_config_round_trips(tmp_path):
    cfg = C.load_config(TINY, ["train.steps=4"])
    path = C.write_config(cfg, str(tmp_path / "run"))
    assert path == str(tmp_path / "run" / "config.yaml") and C.load_config(path) == cfg


@settings(max_examples=30, deadline=None)
@given(steps=st.integers(1, 10**9), lr=st.floats(1e-12, 10.0), seed=st.integers(0, 2**31 - 1),
       aspects=st.lists(st.text("abcdefgh_", min_size=1, max_size=6), max_size=4, unique=True))
def test_override_values_survive_dump_and_reload(steps, lr, seed, aspects):
    over = [f"train.steps={steps}", f"train.learning_rate={lr!r}", f"train.seed={seed}",
            f"grpo.aspects=[{', '.join(aspects)}]"]
    cfg = C.load_config(TINY, over)
    assert (cfg.train.steps, cfg.train.learning_rate, cfg.train.seed, cfg.grpo.aspects) == (steps, lr, seed, tuple(aspects))
    assert C.config_from_dict(yaml.safe_load(C.dump_config(cfg))) == cfg


def test_diff_configs_lists_changed_keys():
    a = C.config_to_dict(C.load_config(TINY))
    b = C.config_to_dict(C.load_config(TINY, ["train.learning_rate=0.5", "train.steps=99", "grpo.beta=0.1"]))
    assert C.diff_configs(a, b) == ["grpo.beta: 0.0 -> 0.1", "train.learning_rate: 0.01 -> 0.5",
                                    "train.steps: 20 -> 99"]
    assert C.diff_configs(a, b, ignore=("train.steps", "grpo")) == ["train.learning_rate: 0.01 -> 0.5"]


@pytest.mark.parametrize("remat, scan", [("full", True), ("block", False)])
def test_model_remat_and_scan_layers_reach_the_built_model(tmp_path, remat, scan):
    """``model.remat`` / ``model.scan_layers`` of a run config are what the runner builds (the policy, and
    the reward task's backbone)."""
    from grpojax.train.build import build_model, build_reward_model

    shape = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_layers": 3, "num_heads": 2,
             "num_kv_heads": 1, "head_dim": 8}
    model_sec = {"preset": "qwen2.5-0.5b", "shape": shape, "remat": remat, "scan_layers": scan}
    policy = build_model(C.load_config(write(tmp_path, base("sft", model=model_sec))).model)
    rm = build_reward_model(C.load_config(write(tmp_path, base("reward", model=model_sec), "r.yaml")))
    for m in (policy, rm.backbone):
        assert m.remat == remat and m.config.scan_layers is scan
        assert m.layers.attn.q.w[...].shape[0] == 3 if scan else len(m.layers) == 3
