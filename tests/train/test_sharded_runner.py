"""``run(cfg, task)`` on device meshes (``cfg.mesh``): sharded == single device, end to end.

In-process on the 8 fake CPU devices of conftest. For GRPO (beta > 0: frozen reference, sampler with the
sharded KV cache), GR-IPO (robust weights, frozen reference) and the multi-label reward model, a short run on
a 2x2x2 (data x fsdp x tensor) mesh and on 8x1x1 / 1x8x1 meshes logs the same losses (metrics.jsonl) and
ends with the same parameters as the run on one device (``mesh: {data: 1}``), to float32 tolerance; the
train state the loop steps is really split the way the rules say (params, Adam moments, the reference);
a run saved on an 8x1x1 mesh resumes on 1x8x1 (Orbax re-shards onto the new layout) and continues the
single-device trajectory. A batch the batch axes do not divide is a UserError naming the keys (exit 2 from
the scripts). Multi-host is not available here: the per-host row slicing and the process-0-only writers
are tested with a faked process index / count.
"""

import io
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from grpojax import sharding as shd
from grpojax.checkpoint import Checkpointer
from grpojax.cli import UserError
from grpojax.config import load_config
from grpojax.sampling import ShardedCache
from grpojax.train.runner import run
from grpojax.train.tasks.grpo import GRPOTask
from grpojax.train.tasks.preference import PreferenceTask
from grpojax.train.tasks.reward import RewardTask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = {  # tiny_<kind>.yaml, task, overrides (small shapes: each run compiles its steps once)
    "grpo": (GRPOTask, ["grpo.beta=0.04", "train.batch_size=8", "grpo.max_completion_length=6"]),
    "dpo": (PreferenceTask, []),  # gr_ipo over two groups
    "reward": (RewardTask, []),
}
# Adam's first steps are lr * sign(g) where |g| >> eps: a gradient entry whose float32 sum is ~0 may flip
# sign between reduction orders. A larger eps makes the update a continuous function of g, so the
# comparison measures the sharding, not that amplification.
COMMON = ["train.save_every=2", "train.keep_checkpoints=4", "train.adam_eps=1e-4", "train.log_every=100",
          "model.shape.num_layers=1"]
LOSS_TOL = dict(rtol=1e-4, atol=1e-5)
PARAM_TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the tiny configs use repo-relative paths


def _cfg(kind, run_dir, mesh, steps, extra=()):
    d, f, t = mesh
    return load_config(f"configs/tiny_{kind}.yaml", [
        f"run_dir={run_dir}", f"train.steps={steps}", f"mesh.data={d}", f"mesh.fsdp={f}", f"mesh.tensor={t}",
        *COMMON, *KINDS[kind][1], *extra])


def _layout(state, kind):
    """Step, embedding and Adam-moment layouts of a train state (recorded before the step donates it)."""
    emb = (state.params["backbone"]["embed"] if kind == "reward" else state.params["embed"])[...]
    return {"step": int(state.step), "embed": emb.sharding.spec,
            "embed_shard": emb.addressable_shards[0].data.shape,
            "moments": [x.sharding.spec for x in jax.tree.leaves(state.opt_state) if x.shape == emb.shape]}


def _run(kind, run_dir, mesh, steps, extra=()):
    """Runs ``steps``; returns (metric rows, the task, the layout of the state each train_steps call got)."""
    cfg = _cfg(kind, run_dir, mesh, steps, extra)
    task = KINDS[kind][0](cfg)
    seen, train_steps, sampling_inputs = [], task.train_steps, task.placement.sampling_inputs
    task.caches, task.sampled_embeds = [], []

    def spy(state, step, rngs):
        seen.append(_layout(state, kind))
        return train_steps(state, step, rngs)

    def sampling_spy(model, ids, mask):
        out = sampling_inputs(model, ids, mask)
        task.caches.append(out[3])
        task.sampled_embeds.append(out[0].embed[...].sharding)  # the layout the sampler got
        return out

    task.train_steps, task.placement.sampling_inputs = spy, sampling_spy
    run(cfg, task, stream=io.StringIO())
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f], task, seen


def _params(run_dir, step):
    with Checkpointer(run_dir, save_every=1, keep=10) as ck:
        state = ck.restore(step).state  # no target: nested dicts, as saved
    return [np.asarray(x) for x in jax.tree.leaves(state["params"])]


def _close(rows, ref_rows, key="loss"):
    got, want = [r[key] for r in rows], [r[key] for r in ref_rows]
    np.testing.assert_allclose(got, want, **LOSS_TOL)
    return float(np.max(np.abs(np.subtract(got, want))))


def _params_close(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, **PARAM_TOL)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One-device runs (``mesh: {data: 1, fsdp: 1, tensor: 1}``: the first of the 8 devices): GRPO for 4
    steps (the resume test continues it), the others for 2."""
    out = {}
    for kind, steps in (("grpo", 4), ("dpo", 2), ("reward", 2)):
        d = str(tmp_path_factory.mktemp(f"single_{kind}"))
        rows, task, _ = _run(kind, d, (1, 1, 1), steps)
        assert task.mesh.size == 1 and task.caches == ([None, None, None, None] if kind == "grpo" else [])
        init = [np.asarray(x) for x in jax.tree.leaves(task.init_state().params)]
        out[kind] = (d, rows, init)
    return out


def _spec(x):
    return x.sharding.spec


# 2x2x2 uses every axis; the 8x1x1 / 1x8x1 / 2x4x1 layouts of the steps are covered in tests/test_sharding.py
@pytest.mark.parametrize("kind,mesh", [("grpo", (2, 2, 2)), ("dpo", (2, 2, 2)), ("reward", (2, 2, 2))],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v)
def test_sharded_run_matches_one_device(tmp_path, single, kind, mesh):
    ref_dir, ref_rows, init = single[kind]
    rows, task, seen = _run(kind, str(tmp_path), mesh, 2)
    assert [r["step"] for r in rows] == [1, 2]
    loss_diff = _close(rows, ref_rows[:2])
    param_diff = _params_close(_params(str(tmp_path), 2), _params(ref_dir, 2))
    print(f"{kind} {mesh}: max |loss diff| {loss_diff:.3g}, max |param diff| {param_diff:.3g}")
    # the params moved (else the equality would be vacuous)
    assert max(float(np.max(np.abs(x - y))) for x, y in zip(_params(ref_dir, 2), init)) > 1e-3
    # the state the loop stepped is laid out by the rules: embedding [V, D] = (vocab->tensor, embed->fsdp)
    data, fsdp, tensor = mesh
    want = PartitionSpec("tensor" if tensor > 1 else None, "fsdp" if fsdp > 1 else None)
    assert [x["embed"] for x in seen] == [want, want]  # the layout survives the step (out_shardings)
    assert seen[-1]["embed_shard"] == (384 // tensor, 32 // fsdp)
    assert len(seen[-1]["moments"]) == 2 and all(m == want for m in seen[-1]["moments"])  # Adam mu, nu
    assert task.mesh.size == 8 and dict(task.mesh.shape) == dict(zip(shd.AXES, mesh))
    if kind == "grpo":  # the sampler gets the sharded KV cache; the frozen reference is sharded too
        assert len(task.caches) == 2 and all(isinstance(c, ShardedCache) and c.mesh is task.mesh
                                             for c in task.caches)
        assert _spec(task._ref[1]["embed"][...]) == want
        assert rows[0]["sampler/logp_max_abs_diff"] < 1e-4


@pytest.mark.parametrize("rollout_tensor", [-1, 2, 1])
def test_rollout_layout_matches_one_device(tmp_path, single, rollout_tensor):
    """GRPO trained on fsdp=8 whose rollouts sample on ``mesh.rollout_tensor``'s layout (the policy copied
    onto (data = 8 / k, 1, tensor = k) per rollout) logs the same losses and ends with the same parameters
    as the one-device run; the sampler got the model and the KV cache on the rollout mesh (embedding rows
    over tensor, D whole), while the train state kept its FSDP layout."""
    ref_dir, ref_rows, _ = single["grpo"]
    rows, task, seen = _run("grpo", str(tmp_path), (1, 8, 1), 2, [f"mesh.rollout_tensor={rollout_tensor}"])
    k = 8 if rollout_tensor == -1 else rollout_tensor
    loss_diff = _close(rows, ref_rows[:2])
    param_diff = _params_close(_params(str(tmp_path), 2), _params(ref_dir, 2))
    print(f"grpo fsdp=8, rollout tensor={k}: max |loss diff| {loss_diff:.3g}, max |param diff| {param_diff:.3g}")
    assert dict(task.rollout_mesh.shape) == {"data": 8 // k, "fsdp": 1, "tensor": k}
    assert len(task.caches) == 2 and all(c.mesh is task.rollout_mesh for c in task.caches)
    for sh in task.sampled_embeds:
        assert sh.mesh is task.rollout_mesh and sh.shard_shape((384, 32)) == (384 // k, 32)
    assert [x["embed"] for x in seen] == [PartitionSpec(None, "fsdp")] * 2
    assert rows[0]["sampler/logp_max_abs_diff"] < 1e-4


def test_grpo_evaluation_copies_the_policy_to_the_rollout_mesh_once(monkeypatch):
    """``evaluate`` samples chunk by chunk; the policy is copied onto the rollout mesh for the first chunk
    and that copy is reused for the others."""
    import grpojax.train.tasks.base as base

    cfg = _cfg("grpo", "/nonexistent/never", (1, 8, 1), 1, ["mesh.rollout_tensor=2"])
    task = GRPOTask(cfg)
    state = task.init_state()
    models, real = [], base.sample_and_score

    def spy(model, *args, **kwargs):
        models.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(base, "sample_and_score", spy)
    out = task.evaluate(state, ["ab", "cd", "ef"], batch_prompts=1)
    assert len(models) == 3 and all(m is models[0] for m in models) and np.isfinite(out["eval/reward"])
    assert models[0].embed[...].sharding.mesh is task.rollout_mesh


@pytest.mark.parametrize("kind", ["ppo", "online_dpo"])
def test_ppo_and_online_dpo_sample_on_the_rollout_mesh(tmp_path, kind):
    """PPO and online DPO on fsdp=8: sampling on the rollout mesh (tensor=2) logs the same losses as
    sampling in the training layout (their host-side glue takes samples from either mesh)."""
    from grpojax.train.tasks.online_dpo import OnlineDPOTask
    from grpojax.train.tasks.ppo import PPOTask

    task_cls = {"ppo": PPOTask, "online_dpo": OnlineDPOTask}[kind]
    rows = {}
    for rt in ("null", "2"):
        cfg = load_config(f"configs/tiny_{kind}.yaml", [
            f"run_dir={tmp_path}/{rt}", "train.steps=2", f"{kind}.max_completion_length=4",
            "mesh.data=1", "mesh.fsdp=8", f"mesh.rollout_tensor={rt}", "train.adam_eps=1e-4",
            "model.shape.num_layers=1",
            *({"ppo": ["train.batch_size=8", "ppo.ppo_epochs=1", "ppo.num_mini_batches=1"],
               "online_dpo": ["train.batch_size=16", "online_dpo.num_generations=2"]}[kind])])
        task = task_cls(cfg)
        assert (task.rollout_mesh is task.mesh) == (rt == "null")
        run(cfg, task, stream=io.StringIO())
        with open(f"{tmp_path}/{rt}/metrics.jsonl") as f:
            rows[rt] = [json.loads(line) for line in f]
    assert [r["step"] for r in rows["2"]] == [1, 2]
    print(f"{kind}: max |loss diff| {_close(rows['2'], rows['null']):.3g}")


def test_resume_on_another_mesh_continues_the_one_device_run(tmp_path, single):
    """GRPO saved at step 2 on data=8, resumed to step 4 on fsdp=8: the restored state comes back laid
    out for fsdp (params and Adam moments) and the losses / params follow the one-device run."""
    ref_dir, ref_rows, _ = single["grpo"]
    d = str(tmp_path)
    first, _, _ = _run("grpo", d, (8, 1, 1), 2)
    rows, task, seen = _run("grpo", d, (1, 8, 1), 4)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[:2] == first
    print(f"grpo 8x1x1 -> 1x8x1: max |loss diff| {_close(rows, ref_rows):.3g}, max |param diff| "
          f"{_params_close(_params(d, 4), _params(ref_dir, 4)):.3g}")
    restored = seen[0]  # the state train_steps got first in the resumed run is the restored one
    assert restored["step"] == 2
    assert restored["embed"] == PartitionSpec(None, "fsdp") and restored["embed_shard"] == (384, 4)
    assert len(restored["moments"]) == 2 and all(m == PartitionSpec(None, "fsdp") for m in restored["moments"])


@pytest.mark.parametrize("overrides,needle", [
    (["train.batch_size=6", "mesh.data=4", "mesh.fsdp=1", "mesh.tensor=2"],
     "train.batch_size=6 is not divisible by mesh data*fsdp=4"),
    (["mesh.data=-1", "mesh.fsdp=3"], r"mesh=\{'data': -1, 'fsdp': 3, 'tensor': 1\}: mesh: 8 devices"),
    (["mesh.data=16"], "multiply to 16, but there are 8 devices"),
    (["mesh.rollout_tensor=3"], "mesh.rollout_tensor: rollout tensor=3 must be -1 or divide the 8 devices"),
])
def test_bad_mesh_is_a_user_error(overrides, needle):
    rollout = any(o.startswith("mesh.rollout_tensor") for o in overrides)  # a dpo run refuses the key itself
    cfg = load_config(f"configs/tiny_{'grpo' if rollout else 'dpo'}.yaml", ["run_dir=/nonexistent/never", *overrides])
    with pytest.raises(UserError, match=needle.replace("*", r"\*") if "data*" in needle else needle):
        (GRPOTask if rollout else PreferenceTask)(cfg)


def test_script_exits_2_on_an_indivisible_batch(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, "scripts/train_dpo.py", "configs/tiny_dpo.yaml", f"run_dir={tmp_path}/r",
                           "train.batch_size=6", "mesh.data=4", "mesh.tensor=2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.batch_size=6 is not divisible by mesh data*fsdp=4" in lines[0], lines
    assert not os.path.exists(f"{tmp_path}/r")


def test_each_process_loads_its_rows_and_only_process_0_writes(tmp_path, monkeypatch):
    """Faked 2-process run (process 1): the loader yields rows [4, 8) of every global batch of 8 (what
    ``host_batch_slice`` says), in the same global order as process 0; the metrics writer is inert."""
    from grpojax.metrics import MetricsWriter

    cfg = load_config("configs/tiny_dpo.yaml", [f"run_dir={tmp_path}"])  # data=-1: all 8 devices
    whole = PreferenceTask(cfg).loader
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert shd.host_batch_slice(8) == slice(4, 8) and not shd.is_main_process()
    mine = PreferenceTask(cfg).loader
    for _ in range(3):
        full, part = next(whole), next(mine)
        for k in full:
            np.testing.assert_array_equal(part[k], full[k][shd.host_batch_slice(8)], err_msg=k)
    with MetricsWriter(str(tmp_path / "m")) as log:
        log.write(1, {"loss": 1.0})
    assert not os.path.exists(tmp_path / "m" / "metrics.jsonl")


def test_a_checkpoint_from_disk_is_placed_slice_by_slice(tmp_path):
    """The eager path of ``BaseTask.place`` (HF checkpoints): built in host memory, then each of the 8
    devices holds only its slice, with exactly the built values and the rules' layout."""
    from grpojax.train.steps.state import split_model

    cfg = load_config("configs/tiny_dpo.yaml", [f"run_dir={tmp_path}", "mesh.data=2", "mesh.fsdp=2",
                                                "mesh.tensor=2", "model.shape.num_layers=1"])
    task = PreferenceTask(cfg)
    tree, graphdef, shardings = task.placement.place(lambda: (split_model(task.new_model())[1:], "static"),
                                                     on_disk=True)
    params, _ = tree
    want, _ = split_model(task.new_model())[1:]
    assert graphdef == "static"
    emb = params["embed"][...]
    assert emb.sharding.spec == PartitionSpec("tensor", "fsdp") and len(emb.sharding.device_set) == 8
    assert emb.addressable_shards[0].data.shape == (384 // 2, 32 // 2)
    for got, ref in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
