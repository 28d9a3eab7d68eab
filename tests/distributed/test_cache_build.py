"""The teacher-cache build on 2 CPU processes (gloo, 1 thread each), killed midway and resumed.

A reference build runs uninterrupted in this process. The same build then runs as 2 processes under
torchrun and is killed once each rank has written its first shard (tests/distributed/
cache_driver.py); training refuses the partial cache by name (`teacher=cache`) or runs the online
teacher (`teacher=auto`). The same command with `processes=2` resumes it: the two complete shards
are kept as they are, every example ends up written exactly once, and every example's cached ids
and log-probs are bit-for-bit those of the 1-process build.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from kdlite.cli.cache_teacher import main as cache_teacher
from kdlite.config import compose_train
from kdlite.teacher_cache import (
    CacheError,
    TeacherCache,
    full_row_datamodule,
    partial_folder,
    select_for_run,
)

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "tests" / "distributed" / "cache_driver.py"
DATA = ["data.synthetic_size=48", "data.train_size=32", "data.val_size=8"]
# 40 rows, ~17k tokens: 6-7 shards of <= 3,000 tokens (rank 0 builds the even ones, rank 1 the odd);
# the count follows the corpus's length, so the test reads it from the reference build
ARGS = [*DATA, "trainer.num_threads=1", "shard_tokens=3000"]


def launch(cmd: list[str], cache: Path, log: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    env["KDLITE_CACHE"] = str(cache)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    log.write_text(proc.stdout + proc.stderr)
    return proc


def test_two_processes_killed_and_resumed_equal_one_process(
    tmp_path, monkeypatch, caplog, embedded_tokenizer
):
    threads = torch.get_num_threads()
    try:
        reference = TeacherCache(cache_teacher([*ARGS, "progress=false"]))
    finally:
        torch.set_num_threads(threads)
    n_shards = len(json.loads((reference.folder / "manifest.json").read_text())["shards"])
    assert n_shards >= 4  # so that a kill after each rank's first shard leaves work to resume

    shared = tmp_path / "cache"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    killed = launch(
        [*torchrun, "--nproc_per_node=2", str(DRIVER), "1", "--", *ARGS],
        shared,
        tmp_path / "killed.log",
    )
    assert killed.returncode != 0, killed.stdout + killed.stderr
    folder = shared / "teacher_logits" / reference.folder.name  # same teacher, data and k
    partial = partial_folder(folder)
    assert not folder.exists() and partial.is_dir(), killed.stdout + killed.stderr
    assert sorted(p.name for p in partial.glob("shard-*.json")) == [
        "shard-00000.json",
        "shard-00001.json",
    ]
    kept = {p.name: p.stat().st_mtime_ns for p in partial.glob("shard-*.safetensors")}
    assert set(kept) == {"shard-00000.safetensors", "shard-00001.safetensors"}

    # A run refuses the partial cache by name, or runs the online teacher with teacher=auto.
    monkeypatch.setenv("KDLITE_CACHE", str(shared))
    for teacher in ("cache", "auto"):
        cfg = compose_train([*DATA, f"teacher={teacher}", "lsp=0.5"])
        dm = full_row_datamodule(cfg, embedded_tokenizer)
        if teacher == "cache":
            with pytest.raises(
                CacheError, match=rf"partial \(2 of {n_shards} shards complete"
            ) as err:
                select_for_run(cfg, embedded_tokenizer, dm)
            assert str(folder) in str(err.value)
        else:
            with caplog.at_level(logging.INFO, logger="kdlite.teacher_cache"):
                assert select_for_run(cfg, embedded_tokenizer, dm) is None
            assert (
                "online teacher" in caplog.text
                and f"2 of {n_shards} shards complete" in caplog.text
            )

    resumed = launch(
        [sys.executable, "-m", "kdlite.cli.cache_teacher", *ARGS, "processes=2"],
        shared,
        tmp_path / "resumed.log",
    )
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out
    assert "starting 2 processes" in out and f"{n_shards} shards, 2 already complete" in out
    assert "tok/s" in out  # the progress bar's rate
    for name, mtime in kept.items():  # the complete shards were not built again
        assert (folder / name).stat().st_mtime_ns == mtime
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        *(f"shard-{i:05d}.safetensors" for i in range(n_shards)),
    ]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["bytes_per_token"] == 392

    cache = TeacherCache(folder)
    assert cache.spec == reference.spec and set(cache.index) == set(reference.index)
    assert len(cache.index) == 40
    # Every example exactly once: per shard, the rows' ranges tile its tensors with no overlap.
    for i, shard in enumerate(manifest["shards"]):
        ranges = sorted((s, n) for sh, s, n in cache.index.values() if sh == i)
        assert len(ranges) == shard["rows"]
        assert [s for s, _ in ranges] == [0, *(s + n for s, n in ranges)][:-1]
        with safe_open(str(folder / shard["file"]), framework="pt") as f:
            (positions,) = f.get_slice("tokens").get_shape()
        assert sum(n for _, n in ranges) == shard["tokens"] == positions
    for sid, (_, _, n) in reference.index.items():
        want, got = reference.row(sid, n), cache.row(sid, n)
        for name in want:
            assert torch.equal(got[name], want[name]), (sid, name)
