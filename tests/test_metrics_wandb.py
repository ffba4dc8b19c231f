"""``MetricsWriter`` with W&B (offline mode; the run's ``.wandb`` file is read back) and its completions
log (``completions.jsonl``, TensorBoard text, a W&B table)."""

import glob
import io
import json
import os
import struct

import pytest

from grpojax.metrics import MetricsWriter, wandb_init_kwargs

wandb = pytest.importorskip("wandb")


def wandb_history(run_dir: str) -> list[dict]:
    """The history rows of an offline W&B run directory, read from its ``run-*.wandb`` record log (W&B's
    LevelDB-style log: a 7-byte header, then 32 KiB blocks of ``crc32, length, type`` framed protobufs)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, chunks, buf = 7, [], b""
    while pos + 7 <= len(data):
        space = 32768 - pos % 32768
        if space < 7:
            pos += space
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind == 1:
            chunks.append(chunk)
        elif kind in (2, 3):
            buf = chunk if kind == 2 else buf + chunk
        elif kind == 4:
            chunks.append(buf + chunk)
    rows = []
    for c in chunks:
        rec = pb.Record()
        rec.ParseFromString(c)
        if rec.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    return rows


def test_wandb_offline_gets_the_scalars_and_the_completions_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()

    class WandbCfg:
        project, name, mode = "grpojax-test", "tiny", "offline"

    kwargs = wandb_init_kwargs(WandbCfg, {"kind": "grpo"})
    assert kwargs == {"project": "grpojax-test", "name": "tiny", "mode": "offline", "config": {"kind": "grpo"}}
    run_dir = str(tmp_path / "run")
    records = [{"prompt": "a|b", "completion": "x\ny", "rewards/safety": 0.5, "reward": 0.5, "advantage": 1.0},
               {"prompt": "c", "completion": "z", "rewards/safety": -0.5, "reward": -0.5, "advantage": -1.0}]
    with MetricsWriter(run_dir, total_steps=2, wandb=kwargs, stream=io.StringIO()) as w:
        w.write(1, {"loss": 0.5, "reward": 0.25})
        w.write(2, {"loss": 0.25, "reward": 0.5})
        w.write_completions(2, records)
    wandb.teardown()  # the W&B service writes the run file asynchronously; stopping it flushes
    (offline,) = glob.glob(str(tmp_path / "wb" / "wandb" / "offline-run-*"))
    hist = wandb_history(offline)
    scalars = {h["_step"]: h for h in hist if "loss" in h}
    assert scalars[1]["loss"] == 0.5 and scalars[2]["loss"] == 0.25 and scalars[2]["reward"] == 0.5
    table = next(h for h in hist if "completions/_type" in h)
    assert table["_step"] == 2 and table["completions/nrows"] == 2
    with open(os.path.join(offline, "files", table["completions/path"])) as f:
        t = json.load(f)
    assert t["columns"] == ["step", "prompt", "completion", "rewards/safety", "reward", "advantage"]
    assert t["data"][1] == [2, "c", "z", -0.5, -0.5, -1.0]
    with open(os.path.join(run_dir, "completions.jsonl")) as f:
        assert [json.loads(line) for line in f] == [{"step": 2, **r} for r in records]
    (events,) = glob.glob(os.path.join(run_dir, "tb", "events.*"))
    assert b"completions" in open(events, "rb").read() and b"| 2 | a\\|b | x y |" in open(events, "rb").read()


def test_completions_past_the_resumed_checkpoint_are_set_aside(tmp_path):
    run_dir = str(tmp_path)
    with MetricsWriter(run_dir, tensorboard=False, stream=io.StringIO()) as w:
        for s in (1, 2, 3):
            w.write(s, {"loss": 1.0})
            w.write_completions(s, [{"prompt": "p", "completion": str(s)}])
    with MetricsWriter(run_dir, resume_step=2, tensorboard=False, stream=io.StringIO()) as w:
        w.write(3, {"loss": 0.5})
        w.write_completions(3, [{"prompt": "p", "completion": "again"}])
    with open(os.path.join(run_dir, "completions.jsonl")) as f:
        assert [json.loads(line)["completion"] for line in f] == ["1", "2", "again"]
    with open(os.path.join(run_dir, "completions.jsonl.discarded")) as f:
        assert [json.loads(line)["completion"] for line in f] == ["3"]
