"""Faults: planted and truncated checkpoints, kills during a save, unwritable paths, file modes.
Each is a named error before any model loads, or the previous good state left whole."""

from __future__ import annotations

import os
import pickle
import pickletools
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch
from reliability_helpers import compose_eval, make_cfg, small
from torch._weights_only_unpickler import _get_allowed_globals

import kdlite.training as training_mod
from kdlite.checkpoint import (
    AtomicCheckpointIO,
    CheckpointError,
    ensure_writable,
    resume_checkpoint,
    safe_load,
)

STEPS = ("optim.max_steps=2", "export=false", "trainer.val_check_interval=2")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 2-step run: checkpoints/last.ckpt and best.ckpt as train() writes them."""
    run_dir = tmp_path_factory.mktemp("run") / "r"
    training_mod.train(make_cfg(run_dir, *STEPS))
    return run_dir


def _copy_run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of a finished run, made resumable again (as if killed before its end): a run whose
    status.json says done is not resumed, so its last.ckpt would never be opened."""
    run = tmp_path / "r"
    shutil.copytree(tiny_run, run)
    (run / "status.json").unlink(missing_ok=True)
    return run


class _Planted:
    """Unpickling this object runs a shell command that writes `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path, kind: str) -> None:
    if kind == "raw pickle":
        path.write_bytes(pickle.dumps({"state_dict": _Planted(marker)}))
    else:  # a torch zip checkpoint whose data.pkl carries the payload next to real tensors
        torch.save({"state_dict": {"w": torch.zeros(2)}, "loops": _Planted(marker)}, path)


# ---- planted checkpoint -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["raw pickle", "torch zip"])
def test_planted_checkpoint_is_refused_and_runs_nothing(tmp_path, kind):
    """Before: resume loaded last.ckpt with weights_only=False, so the payload ran."""
    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "last.ckpt"
    _plant(ckpt, marker, kind)
    with pytest.raises(CheckpointError, match=r"last\.ckpt was refused.*cannot run code") as err:
        resume_checkpoint(ckpt, resume=True)
    assert "unsupported" in str(err.value).lower()  # names what it refused
    assert "weights_only` set to `False`" not in str(err.value)  # and never advises the unsafe load
    with pytest.raises(CheckpointError, match="was refused"):
        AtomicCheckpointIO().load_checkpoint(ckpt)
    assert not marker.exists()


def test_planted_checkpoint_in_a_run_directory_stops_train_before_models(
    tiny_run, tmp_path, no_model_load
):
    run = _copy_run(tiny_run, tmp_path)
    marker = tmp_path / "PWNED"
    _plant(run / "checkpoints" / "last.ckpt", marker, "torch zip")
    with pytest.raises(CheckpointError, match=r"last\.ckpt was refused"):
        training_mod.train(make_cfg(run, *STEPS))
    assert not marker.exists()


def test_a_real_checkpoint_needs_no_unsafe_type(tiny_run):
    """The allow-list is complete: every global a real last.ckpt's pickle names is one torch's
    weights-only unpickler builds (so SAFE_GLOBALS can stay empty), and it loads that way."""
    with zipfile.ZipFile(tiny_run / "checkpoints" / "last.ckpt") as z:
        (name,) = [n for n in z.namelist() if n.endswith("data.pkl")]
        ops = list(pickletools.genops(z.read(name)))
    named = {str(arg).replace(" ", ".") for op, arg, _ in ops if op.name == "GLOBAL"}
    assert named and not any(op.name == "STACK_GLOBAL" for op, _, _ in ops)  # torch: protocol 2
    assert named <= set(_get_allowed_globals()), named - set(_get_allowed_globals())
    state = safe_load(tiny_run / "checkpoints" / "last.ckpt")
    assert {"state_dict", "optimizer_states", "loops", "callbacks"} <= set(state)


# ---- truncated checkpoint ---------------------------------------------------------------------
def test_truncated_last_ckpt_names_the_file_and_how_to_start_over(
    tiny_run, tmp_path, no_model_load
):
    """Before: a raw zip-reader error after both models loaded."""
    run = _copy_run(tiny_run, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        training_mod.train(make_cfg(run, *STEPS))
    msg = str(err.value)
    assert str(last) in msg and "not a complete checkpoint" in msg and "resume=false" in msg


def test_resume_false_starts_over_past_a_truncated_checkpoint(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(b"PK\x03\x04 cut")
    result = training_mod.train(make_cfg(run, *STEPS, "resume=false"))
    assert result.global_step == 2
    assert "optimizer_states" in safe_load(last)  # rewritten whole


def test_weights_only_checkpoint_is_not_a_resume_point(tiny_run, tmp_path):
    best = tiny_run / "checkpoints" / "best.ckpt"
    with pytest.raises(CheckpointError, match=r"not a resumable training checkpoint"):
        resume_checkpoint(best, resume=True)
    assert resume_checkpoint(best, resume=False) is None
    assert resume_checkpoint(tmp_path / "none.ckpt", resume=True) is None


# ---- kill or failure during a save ------------------------------------------------------------
def test_kill_between_write_and_rename_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    before = path.read_bytes()

    def killed(*a, **k):
        raise KeyboardInterrupt  # what SIGINT does between the write and the rename

    monkeypatch.setattr("kdlite.checkpoint.os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    assert path.read_bytes() == before and int(safe_load(path)["step"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_disk_full_during_a_save_names_the_file_and_keeps_the_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    def full_disk(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("kdlite.checkpoint.torch.save", full_disk)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*last\.ckpt.*No space"):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    assert int(safe_load(path)["step"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_sigkill_during_saves_never_leaves_a_truncated_checkpoint(tmp_path):
    """A real kill -9 at several moments of a loop of ~16 MB saves: last.ckpt always loads."""
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from kdlite.checkpoint import atomic_save
        big = torch.zeros(4_000_000)
        step = 0
        while True:
            step += 1
            atomic_save({{"step": step, "w": big + step}}, {str(tmp_path / "last.ckpt")!r})
            print(step, flush=True)
        """
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for delay in (0.6, 0.9, 1.3):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one save completed
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = safe_load(tmp_path / "last.ckpt")
        assert float(state["w"][0]) == state["step"]


# ---- unwritable paths, file modes -------------------------------------------------------------
def test_unwritable_checkpoints_folder_fails_before_training(tmp_path, no_model_load):
    """Before: exit 0, zero checkpoint files, no message."""
    run = tmp_path / "r"
    run.mkdir()
    (run / "checkpoints").write_text("a file where the folder should be")
    with pytest.raises(
        CheckpointError, match=r"checkpoints folder .*r/checkpoints is not writable"
    ):
        training_mod.train(make_cfg(run, *STEPS))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any mode bits")
def test_read_only_checkpoints_folder_is_named(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(CheckpointError, match="not writable"):
            ensure_writable(folder)
    finally:
        folder.chmod(0o755)


def test_exported_weights_have_the_mode_of_the_other_files(tmp_path, embedded_tokenizer):
    """Before: model.safetensors was 0600 while config and tokenizer were 0644."""
    from kdlite.export import export_student
    from kdlite.models import random_model

    lm = random_model("tiny-student", vocab_size=len(embedded_tokenizer))
    old = os.umask(0o022)
    try:
        out = export_student(lm, embedded_tokenizer, tmp_path / "export")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == 0o644
    assert set(modes.values()) == {0o644}, modes


# ---- kill during generation -------------------------------------------------------------------
def test_kill_during_generation_resumes_each_sample_exactly_once(tmp_path, tiny_model, monkeypatch):
    """A kill after the first batch (and mid-write of the next line): the rerun keeps the stored
    samples byte for byte, drops the cut line, generates only the rest, and grades all 6."""
    import json

    from kdlite.eval.run import evaluate
    from kdlite.eval.store import GenerationStore

    cfg = compose_eval(*small(f"model={tiny_model}", f"out_dir={tmp_path / 'ev'}"))
    real_append = GenerationStore.append

    def killed_after_first_batch(self, records):
        real_append(self, records)
        with self.path.open("a") as f:
            f.write('{"id": "p2", "sample": 1, "te')  # the next line, cut by the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(GenerationStore, "append", killed_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(cfg)
    (gens,) = (tmp_path / "ev").glob("*/eval/jsonl/generations.jsonl")
    kept = gens.read_text().splitlines()[:-1]  # the complete lines written before the kill
    assert len(kept) == 4  # batch_size=4
    monkeypatch.setattr(GenerationStore, "append", real_append)
    (res,) = evaluate(cfg)
    lines = gens.read_text().splitlines()
    assert lines[:4] == kept
    keys = sorted((json.loads(x)["id"], json.loads(x)["sample"]) for x in lines)
    assert keys == [(p, s) for p in ("p1", "p2", "p3") for s in (0, 1)]
    assert res["generation"]["this_call"]["samples"] == 2 and res["grading"]["ok"] == 6
