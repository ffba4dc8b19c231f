"""grpojax.cli: user errors are one line on stderr + exit 2 (no traceback); bugs keep their traceback."""

import os
import subprocess
import sys
import textwrap

import pytest

from grpojax import cli
from grpojax.cli import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


SFT_YAML = """kind: sft
model: {path: models/tiny}           # a path (not a preset) keeps the child free of jax imports
data: {path: configs/data/tiny_sft.jsonl}
"""


def run_script(tmp_path, body: str, *args: str):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=ROOT)


MAIN = """
import sys
from grpojax import cli
from grpojax.cli import UserError

def run(argv):
    what = argv[0]
    if what == "user":
        raise UserError("data.jsonl: row 3: column 'prompt'\\nmust be   non-empty text")
    if what == "bug":
        raise RuntimeError("a genuine bug")
    if what == "interrupt":
        raise KeyboardInterrupt
    if what == "status":
        print("partial output")
        return 3
    print("ok", argv[1:])

cli.main(run)
"""


def test_user_error_is_one_line_exit_2(tmp_path):
    r = run_script(tmp_path, MAIN, "user")
    assert r.returncode == 2
    assert r.stderr == "error: data.jsonl: row 3: column 'prompt' must be non-empty text\n"
    assert "Traceback" not in r.stderr + r.stdout


def test_other_exceptions_propagate_with_traceback(tmp_path):
    r = run_script(tmp_path, MAIN, "bug")
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "RuntimeError: a genuine bug" in r.stderr


def test_exit_status_and_interrupt(tmp_path):
    r = run_script(tmp_path, MAIN, "status")
    assert (r.returncode, r.stdout) == (3, "partial output\n")
    r = run_script(tmp_path, MAIN, "fine", "a=1")
    assert (r.returncode, r.stdout, r.stderr) == (0, "ok ['a=1']\n", "")
    r = run_script(tmp_path, MAIN, "interrupt")
    assert (r.returncode, r.stderr) == (130, "error: interrupted\n")


TRAIN_LIKE = """
from grpojax import cli
from grpojax.config import load_config, dump_config

def run(argv):
    path, overrides = cli.parse_config_argv(argv, usage="train.py CONFIG.yaml [key=value ...]")
    cfg = load_config(path, overrides, kind="sft")
    print(dump_config(cfg).splitlines()[0])

cli.main(run)
"""


@pytest.mark.parametrize("args, needle", [
    ((), "error: missing config file; usage: train.py CONFIG.yaml [key=value ...]"),
    (("train.steps=3",), "error: the first argument must be a config file, got 'train.steps=3'"),
    (("configs/tiny_sft.yaml", "--steps", "3"), "error: unknown option '--steps'; overrides are written key=value"),
    (("configs/tiny_sft.yaml", "steps"), "error: bad override 'steps': expected key=value (e.g. train.steps=10)"),
    (("configs/tiny_sft.yaml", "=3"), "error: bad override '=3'"),
    (("configs/missing.yaml",), "error: config file not found: configs/missing.yaml"),
    (("configs/tiny_sft.yaml", "train.stepz=3"),
     "error: override 'train.stepz=3': unknown key 'train.stepz'; valid keys in section 'train': steps, batch_size"),
    (("SFT", "train.steps=-1"), "error: SFT: train.steps: must be > 0, got -1"),
    (("configs/tiny_grpo.yaml",),
     "error: configs/tiny_grpo.yaml: this is a kind='grpo' config but this script needs kind='sft'"),
])
def test_script_argument_and_config_errors(tmp_path, args, needle):
    (tmp_path / "sft.yaml").write_text(SFT_YAML)
    args = [str(tmp_path / "sft.yaml") if a == "SFT" else a for a in args]
    needle = needle.replace("SFT", str(tmp_path / "sft.yaml"))
    r = run_script(tmp_path, TRAIN_LIKE, *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(needle), r.stderr
    assert "Traceback" not in r.stderr


def test_script_success_and_help(tmp_path):
    (tmp_path / "sft.yaml").write_text(SFT_YAML)
    r = run_script(tmp_path, TRAIN_LIKE, str(tmp_path / "sft.yaml"), "train.steps=3")
    assert (r.returncode, r.stdout, r.stderr) == (0, "kind: sft\n", "")
    r = run_script(tmp_path, TRAIN_LIKE, "--help")
    assert (r.returncode, r.stdout) == (0, "usage: train.py CONFIG.yaml [key=value ...]\n")


def test_parse_config_argv_in_process():
    assert cli.parse_config_argv(["c.yaml", "a.b=1", "x=[1, 2]", "s=a=b"], "u") == \
        ("c.yaml", ["a.b=1", "x=[1, 2]", "s=a=b"])
    with pytest.raises(UserError, match="missing config file"):
        cli.parse_config_argv([], "u")
    assert cli.one_line("a\n  b\tc ") == "a b c"
