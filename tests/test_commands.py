"""The ``grpojax`` command (``grpojax.commands``), ``--help`` from the config dataclasses
(``grpojax.config.describe``) and the shipped presets addressable by name (``grpojax.config.presets``)."""

import dataclasses
import os
import typing

import pytest
import yaml

from grpojax import commands
from grpojax.cli import UserError
from grpojax.config import SCHEMAS, load_config
from grpojax.config.describe import describe_keys, field_docs, help_text
from grpojax.config.presets import PRESET_DIR, preset_names, resolve_config_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sections(cls, seen):
    if cls in seen:
        return
    seen.add(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            _sections(hints[f.name], seen)


def test_every_config_field_has_a_description():
    """Each field of every schema and section carries a one-line attribute docstring; this lists the
    fields (``Class.field``) that lack one."""
    classes = set()
    for schema in SCHEMAS.values():
        _sections(schema, classes)
    missing = sorted(f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c)
                     if not field_docs(c).get(f.name))
    assert not missing, f"config fields without a description (a docstring line under the field): {missing}"


def test_field_docs_reads_the_docstring_under_each_field_and_inherits():
    from grpojax.config.methods import PPOConfig

    docs = field_docs(PPOConfig)
    assert docs["ppo_epochs"] == "Passes over each rollout."
    assert docs["top_p"].startswith("Nucleus sampling")  # declared on the shared _RolloutFields base


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_help_lists_every_key_with_its_default(kind):
    text = help_text(kind)
    keys = [k for k in describe_keys(SCHEMAS[kind]) if not k.section and k.name != "kind"]
    lines = text.splitlines()
    for k in keys:
        line = next((x for x in lines if x.strip().startswith(f"{k.name} = ")), None)
        assert line is not None, k.name
        assert line.strip().startswith(f"{k.name} = {k.default} ") and line.rstrip().endswith(k.doc), line
    assert "train.learning_rate = 1.0e-06 " in text and "model.lora.rank = 0 " in text


def test_grpojax_help_of_a_training_command(capsys):
    with pytest.raises(SystemExit) as e:
        commands.main(["train-grpo", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: grpojax train-grpo CONFIG [key=value ...]")
    assert "tiny_grpo" in out and "grpo.num_generations = 8 " in out and "Completions sampled per prompt" in out
    assert "logging.wandb.mode = online " in out


def test_grpojax_command_table_and_errors(capsys):
    with pytest.raises(SystemExit) as e:
        commands.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and all(f"  {name} " in out for name in commands.COMMANDS)
    with pytest.raises(SystemExit) as e:
        commands.main(["train-grpo", "tiny_grpo", "train.stepz=3"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "train.stepz" in err
    with pytest.raises(SystemExit) as e:
        commands.main(["trian-grpo"])
    assert e.value.code == 2 and "unknown command 'trian-grpo'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        commands.main(["evaluate", "tiny_sft"])
    assert e.value.code == 2 and "grpojax evaluate handles kind grpo" in capsys.readouterr().err


def test_presets_are_addressable_by_name_from_any_directory(tmp_path, monkeypatch):
    """A preset loads by name (and by its clone path ``configs/...``) from a directory that has no
    ``configs/``; its ``configs/data/...`` values then name the shipped files."""
    assert os.path.realpath(os.path.join(ROOT, "configs")) == os.path.realpath(PRESET_DIR)  # one copy
    names = preset_names()
    assert {"tiny_grpo", "grpo_qwen2.5-0.5b", "compare/demo", "demo/grpo"} <= set(names)
    monkeypatch.chdir(tmp_path)
    for spelling in ("tiny_grpo", "tiny_grpo.yaml", "configs/tiny_grpo.yaml"):
        cfg = load_config(spelling, ["run_dir=r"])
        assert cfg.tokenizer.path == os.path.join(PRESET_DIR, "data", "tiny_tokenizer")
        assert cfg.data.path == os.path.join(PRESET_DIR, "data", "tiny_prompts.jsonl")
        assert os.path.isdir(cfg.tokenizer.path) and os.path.isfile(cfg.data.path)
    for name in names:  # every run preset loads by name (compare/* are comparison specs, no kind)
        with open(resolve_config_path(name)) as f:
            kind = yaml.safe_load(f).get("kind")
        assert kind is not None or name.startswith("compare/"), name
        assert kind is None or load_config(name).kind == kind
    (tmp_path / "tiny_grpo.yaml").write_text("kind: sft\n")  # a file of that name wins over the preset
    with pytest.raises(UserError, match="tiny_grpo.yaml: model.path: set exactly one"):
        load_config("tiny_grpo.yaml")
    with pytest.raises(UserError, match="config file not found: tiny_grpoo"):
        load_config("tiny_grpoo")
    assert resolve_config_path("../pyproject") == "../pyproject"  # nothing outside the presets directory
