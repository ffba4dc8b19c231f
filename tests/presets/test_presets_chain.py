"""Every shipped preset under ``configs/`` runs as a user runs it, chained by the presets' own paths.

The commands are those of README's preset section, run from a user's working directory (``preset_world``):
the tiny offline stand-in for the Qwen2.5 hub checkpoints answers the presets' own hub ids (no
``model.path`` override), the data sit in the real datasets' column layouts, and the chained presets find
each other's outputs where they write them (``runs/reward_qwen2.5-*/hf`` read by the GRPO / PPO / online
DPO presets, ``runs/goqa_sft_qwen2.5-*/hf`` by the IPO / GR-IPO presets). The only overrides are the
data paths, the sizes (steps, warmup, lengths), and ``compilation_cache_dir`` (the test session's XLA
cache instead of ``~/.cache``). Meshes are the presets' own, on the 8 fake CPU devices of tests/conftest.py.

The commands run in two subprocesses side by side (``run_presets.py``: each script's ``__main__`` in
turn, one interpreter per lane; a lane waits for the other's outputs it reads); the tests below read their
results. ``test_every_config_is_covered`` fails when a YAML under
``configs/`` is neither run here nor excluded with a reason.
"""

import glob
import json
import math
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SIZES = ("0.5b", "7b", "14b")
HUB = {"0.5b": "0.5B", "7b": "7B", "14b": "14B"}

# The YAMLs this module does not run, each with the reason (the guard test checks the list is honest).
EXCLUDED = {
    "configs/demo/": "the built-in demo's own stage configs (tests/demo/test_pipeline.py runs them)",
    "configs/compare/demo": "the demo's comparison (tests/test_compare_methods.py runs it)",
    "configs/tiny_": "tiny CPU configs run as shipped by tests/train/test_runner.py, test_ppo.py, "
                     "test_online_dpo.py, test_sharded_runner.py",
    # ~100 s each: every method again in a subprocess, for runs this module already makes standalone
    "configs/compare/qwen2.5-7b.yaml": "its three bases run standalone here, the spec's code path runs in "
                                       "compare-0.5b (test_compare_specs_differ_only_in_their_bases)",
    "configs/compare/qwen2.5-14b.yaml": "as the 7b spec",
}


def _sizes(kind: str, size: str) -> list[str]:
    """The size overrides of one command (a user's ``key=value`` list; nothing else is changed)."""
    common = ["train.steps=1", "train.warmup_steps=0", f"compilation_cache_dir={_xla_cache()}"]
    rollout = ["data.max_prompt_length=48", "data.max_length=64"]
    return common + {
        "reward": ["data.max_prompt_length=32", "data.max_length=48"],
        # the presets' own batch (8 prompts x 8): the comparison's children then run the very programs
        # the standalone runs compiled (persistent-cache hits)
        "grpo": [*rollout, "grpo.max_completion_length=16"],
        "ppo": [*rollout, "ppo.max_completion_length=16"],
        "online_dpo": [*rollout, "online_dpo.max_completion_length=16"],
        "goqa": ["data.max_prompt_length=48", "data.max_length=52"],
    }[kind]


def _xla_cache() -> str:
    return os.environ.get("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".pytest_cache", "xla"))


def plan(data: dict) -> list[dict]:
    """The commands in chain order: ``{"name", "config" (the YAML it covers), "argv", "lane", "after"}``.

    Two lanes run side by side (one process each, one per core): ``a`` = reward models -> GRPO ->
    evaluate -> comparison, ``b`` = GlobalOpinionQA SFT -> IPO / GR-IPO, then PPO and online DPO, which
    wait (``after``) for lane a's reward model of their size.
    """
    pku = [f"data.path={data['pku_train']}", f"data.eval_path={data['pku_test']}"]
    goqa = [f"data.path={data['goqa']}"]
    out = []

    def add(lane, name, config, script, *args, after=()):
        out.append({"name": name, "config": config, "argv": [f"scripts/{script}", *args], "lane": lane,
                    "after": list(after)})

    for s in SIZES:  # reward model -> GRPO / PPO / online DPO (read runs/reward_qwen2.5-<s>/hf)
        add("a", f"reward-{s}", f"configs/reward_qwen2.5-{s}.yaml", "train_reward.py",
            f"configs/reward_qwen2.5-{s}.yaml", *_sizes("reward", s))
    for s in SIZES:
        add("a", f"grpo-{s}", f"configs/grpo_qwen2.5-{s}.yaml", "train_grpo.py", f"configs/grpo_qwen2.5-{s}.yaml",
            *pku, *_sizes("grpo", s))
    add("a", "grpo_robust-0.5b", "configs/grpo_robust_qwen2.5-0.5b.yaml", "train_grpo.py",  # harm categories
        "configs/grpo_robust_qwen2.5-0.5b.yaml", *pku, *_sizes("grpo", "0.5b"))
    add("a", "evaluate-grpo-0.5b", "configs/grpo_qwen2.5-0.5b.yaml", "evaluate.py",
        "configs/grpo_qwen2.5-0.5b.yaml", *pku, *_sizes("grpo", "0.5b"), "--out", "runs/grpo_qwen2.5-0.5b/eval.json")
    for s in ("0.5b",):  # the method comparison on the reward model of the chain (7b / 14b: EXCLUDED)
        sets = [kv for kv in _sizes("grpo", s) if not kv.startswith(("train.steps", "grpo."))]
        add("a", f"compare-{s}", f"configs/compare/qwen2.5-{s}.yaml", "compare_methods.py", "--out",
            f"runs/compare_{s}", "--preset", f"qwen2.5-{s}", "--policy", f"Qwen/Qwen2.5-{HUB[s]}-Instruct",
            "--reward-model", f"runs/reward_qwen2.5-{s}/hf", "--prompts", data["pku_train"],
            "--eval-prompts", "4", "--eval-samples", "2",
            "--set", *sets, "train.steps=1", "grpo.max_completion_length=16", after=[f"ppo-{s}", f"online_dpo-{s}"])
    for s in SIZES:  # SFT -> IPO / GR-IPO (read runs/goqa_sft_qwen2.5-<s>/hf)
        add("b", f"goqa_sft-{s}", f"configs/goqa_sft_qwen2.5-{s}.yaml", "sft.py",
            f"configs/goqa_sft_qwen2.5-{s}.yaml", *goqa, *_sizes("goqa", s))
    add("b", "goqa_ipo-0.5b", "configs/goqa_ipo_qwen2.5-0.5b.yaml", "train_dpo.py",
        "configs/goqa_ipo_qwen2.5-0.5b.yaml", *goqa, *_sizes("goqa", "0.5b"))
    for s in SIZES:
        add("b", f"goqa_gr_ipo-{s}", f"configs/goqa_gr_ipo_qwen2.5-{s}.yaml", "train_dpo.py",
            f"configs/goqa_gr_ipo_qwen2.5-{s}.yaml", *goqa, *_sizes("goqa", s))
    for s in SIZES:
        add("b", f"ppo-{s}", f"configs/ppo_qwen2.5-{s}.yaml", "train_ppo.py", f"configs/ppo_qwen2.5-{s}.yaml",
            *pku, *_sizes("ppo", s)[1:], "train.steps=8",  # 8 optimizer steps = 1 rollout x 4 epochs x 2
            after=[f"reward-{s}"])
        add("b", f"online_dpo-{s}", f"configs/compare/online_dpo_qwen2.5-{s}.yaml", "train_online_dpo.py",
            f"configs/compare/online_dpo_qwen2.5-{s}.yaml", *pku, *_sizes("online_dpo", s), after=[f"reward-{s}"])
    return out


@pytest.fixture(scope="module")
def chain(preset_world):
    """Runs the whole plan once, its two lanes side by side; ``{"world", "plan", "results"}``."""
    d = preset_world["dir"]
    commands = plan(preset_world["data"])
    procs = []
    for lane in ("a", "b"):
        with open(os.path.join(d, f"plan_{lane}.json"), "w") as f:
            json.dump([c for c in commands if c["lane"] == lane], f, indent=1)
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "run_presets.py"), f"plan_{lane}.json",
                                       f"results_{lane}.json"], cwd=d, env=preset_world["env"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=2400)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    results = {}
    for lane in ("a", "b"):
        with open(os.path.join(d, f"results_{lane}.json")) as f:
            results.update(json.load(f))
    return {"world": preset_world, "plan": {c["name"]: c for c in commands}, "results": results}


def _check_rc(chain, name):
    r = chain["results"].get(name)
    assert r is not None, f"{name} did not run (an earlier command crashed the runner)"
    if r["rc"] != 0:
        with open(r["log"]) as f:
            tail = f.read()[-3000:]
        pytest.fail(f"{' '.join(chain['plan'][name]['argv'])}\nexit {r['rc']}:\n{tail}")


def _metrics(d, run_dir):
    with open(os.path.join(d, run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


NAMES = [c["name"] for c in plan({k: k for k in ("pku_train", "pku_test", "goqa")})]


@pytest.mark.parametrize("name", NAMES)
def test_preset_command_succeeds(chain, name):
    """Each command exits 0; a training run logged finite losses and, where the preset says
    ``export_hf``, wrote a HF directory at the preset's own path."""
    _check_rc(chain, name)
    d = chain["world"]["dir"]
    config = chain["plan"][name]["config"]
    if name.startswith(("evaluate", "compare")):
        return
    import yaml

    with open(os.path.join(ROOT, config)) as f:
        raw = yaml.safe_load(f)
    rows = _metrics(d, raw["run_dir"])
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses and all(math.isfinite(x) for x in losses), rows
    if raw.get("export_hf"):
        assert os.path.isfile(os.path.join(d, raw["export_hf"], "config.json")), os.listdir(d)


def test_evaluate_scores_the_grpo_run(chain):
    """reward model -> GRPO -> evaluate: the held-out evaluation of the trained GRPO policy."""
    _check_rc(chain, "evaluate-grpo-0.5b")
    with open(os.path.join(chain["world"]["dir"], "runs/grpo_qwen2.5-0.5b/eval.json")) as f:
        result = json.load(f)
    assert result["step"] == 1 and result["eval/num_prompts"] == 16
    assert math.isfinite(result["eval/reward"])


def test_group_robust_preset_logs_alpha_over_harm_categories(chain):
    """The group-robust preset's groups are PKU-SafeRLHF's harm categories (the stand-in flags one of 19
    per unsafe response): alpha over them sums to 1 and the step logged the worst group's reward."""
    _check_rc(chain, "grpo_robust-0.5b")
    row = _metrics(chain["world"]["dir"], "runs/grpo_robust_qwen2.5-0.5b")[-1]
    alpha = {k: v for k, v in row.items() if k.startswith("robust/alpha/")}
    assert len(alpha) > 5 and "robust/alpha/none" in alpha and sum(alpha.values()) == pytest.approx(1.0, abs=1e-5)
    assert math.isfinite(row["robust/worst_group_reward"])


def test_compare_writes_its_table(chain):
    _check_rc(chain, "compare-0.5b")
    with open(os.path.join(chain["world"]["dir"], "runs/compare_0.5b/compare.json")) as f:
        result = json.load(f)
    assert result["methods"] == ["grpo", "ppo", "online_dpo"] and set(result["summary"]) == {"sft", *result["methods"]}


@pytest.mark.parametrize("size", ["7b", "14b"])
def test_compare_specs_differ_only_in_their_bases(size):
    """The 7b / 14b comparison specs (not run here) are the 0.5b spec with the bases of their size, each
    of which this module runs standalone."""
    from grpojax.demo.compare import load_spec

    small, spec = (load_spec(os.path.join(ROOT, f"configs/compare/qwen2.5-{s}.yaml")) for s in ("0.5b", size))
    covered = {c["config"] for c in plan({k: k for k in ("pku_train", "pku_test", "goqa")})}
    for m, entry in spec["methods"].items():
        assert os.path.relpath(entry["base"], ROOT) in covered, entry
        assert entry.get("set") == small["methods"][m].get("set")
        assert entry["base"] == small["methods"][m]["base"].replace("0.5b", size)
    assert (spec["evaluation"], spec["completions"]) == (small["evaluation"], small["completions"])


@pytest.mark.parametrize("name", ["goqa_ipo-0.5b", *(f"goqa_gr_ipo-{s}" for s in SIZES)])
def test_goqa_chain_shares_tokenizer(chain, name):
    """An IPO / GR-IPO preset loads the tokenizer its SFT preset trained with: the same ids for a
    GlobalOpinionQA example and the same end token (``<|endoftext|>``, the base model's eos). Each
    preset's own ``tokenizer_path`` is resolved as the script resolves it (a hub id -> the stand-in's
    snapshot, a relative path -> the working directory)."""
    from grpojax.config import load_config
    from grpojax.data import load_tokenizer

    _check_rc(chain, name)
    world = chain["world"]
    size = name.rsplit("-", 1)[1]

    def tokenizer(config):
        cfg = load_config(os.path.join(ROOT, config))
        path = world["repos"].get(cfg.tokenizer_path) or os.path.join(world["dir"], cfg.tokenizer_path)
        return load_tokenizer(path, cfg.tokenizer.chat_template, cfg.tokenizer.system_prompt)

    sft_tok = tokenizer(f"configs/goqa_sft_qwen2.5-{size}.yaml")
    dpo_tok = tokenizer(chain["plan"][name]["config"])
    text = "Opinion of people in Japan on: Question 3?\nPlease select the best response:\nA. Yes\nB. No"
    assert dpo_tok.encode_prompt(text) == sft_tok.encode_prompt(text)
    assert dpo_tok.encode_response("B") == sft_tok.encode_response("B")
    assert dpo_tok.eos_id == sft_tok.eos_id == sft_tok.hf.convert_tokens_to_ids("<|endoftext|>")
    assert dpo_tok.pad_id == sft_tok.pad_id


def test_every_config_is_covered():
    """Every YAML under configs/ is run by this module or excluded above with the test that runs it."""
    covered = {c["config"] for c in plan({k: k for k in ("pku_train", "pku_test", "goqa")})}
    found = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"),
                                                               recursive=True))
    missing = [p for p in found if p not in covered and not p.startswith(tuple(EXCLUDED))]
    assert not missing, f"configs not run by tests/presets/test_presets_chain.py (add them to plan()): {missing}"
    assert all(os.path.isfile(os.path.join(ROOT, c)) for c in covered)
