"""The researcher's loop on the tiny pair: short runs validate, reruns say done or train on,
tokens_seen continues across a resume, one W&B run per run directory (offline files read back),
and evaluate.py's scores reach that W&B run."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
from test_training import curve, make_cfg

import kdlite.training as training_mod
from kdlite.callbacks import StepProgressBar, val_check_interval
from kdlite.run_state import read_status


def test_integer_val_check_interval_counts_optimizer_steps(tmp_path):
    # accumulation 4 (8 examples per step as micro-batches of 2), interval 2: validation after
    # optimizer steps 2 and 4 only, not after every 2 micro-batches.
    assert val_check_interval(2, 4) == 8 and val_check_interval(0.5, 4) == 0.5
    seen: list[int] = []

    class Spy(L.Callback):
        def on_validation_start(self, trainer, pl_module):
            seen.append(trainer.global_step)

    run = tmp_path / "r"
    training_mod.train(
        make_cfg(
            run,
            "batch.micro_examples=2",
            "optim.max_steps=5",
            "trainer.val_check_interval=2",
            "export=false",
            "trainer.checkpoint_every=10",
        ),
        callbacks=[Spy()],
    )
    # steps 2 and 4 by the interval, and step 5, the last, because every run ends validated
    assert seen == [2, 4, 5]
    assert sorted(curve(run, "val/loss")) == [1, 3, 4]  # logged at step - 1 (0-based rows)


def test_short_run_validates_writes_best_and_a_rerun_is_done(tmp_path, capsys):
    run = tmp_path / "r"
    cfg = make_cfg(run, "optim.max_steps=3", "trainer.checkpoint_every=2")  # stops mid-epoch
    first = training_mod.train(cfg)
    assert (run / "checkpoints" / "best.ckpt").is_file() and first.best_val_loss is not None
    info = json.loads((run / "export" / "kdlite_export.json").read_text())
    assert "best.ckpt" in json.dumps(info)
    status = read_status(run)
    assert status.state == "done" and status.step == 3
    capsys.readouterr()

    again = training_mod.train(cfg)  # the same command: nothing trained
    assert "is done (step 3" in capsys.readouterr().out
    assert again.global_step == 3 and again.best_val_loss == pytest.approx(first.best_val_loss)
    assert sorted(curve(run, "train/loss")) == [0, 1, 2]


def test_without_validation_the_export_says_which_weights_it_holds(tmp_path, capsys):
    run = tmp_path / "r"
    training_mod.train(make_cfg(run, "data.val_size=0", "optim.max_steps=2"))
    info = json.loads((run / "export" / "kdlite_export.json").read_text())
    assert info["checkpoint"] == "final weights at step 2 (no validation ran: no best.ckpt)"
    assert "from the final weights at step 2" in capsys.readouterr().out
    assert read_status(run).record["weights"] == info["checkpoint"]


def test_training_on_continues_tokens_seen_exactly(tmp_path):
    # a reference 5-step run against 3 steps then "train more" to 5 (resume from the final
    # step's checkpoint, saved even though checkpoint_every=2 does not divide 3)
    ref, run = tmp_path / "ref", tmp_path / "run"
    common = ("export=false", "trainer.checkpoint_every=2")
    training_mod.train(make_cfg(ref, "optim.max_steps=5", *common))
    training_mod.train(make_cfg(run, "optim.max_steps=3", *common))
    assert read_status(run).step == 3
    training_mod.train(make_cfg(run, "optim.max_steps=5", *common))
    assert read_status(run).step == 5
    want, got = curve(ref, "train/tokens_seen"), curve(run, "train/tokens_seen")
    assert sorted(got) == list(range(5)) and got == want
    values = [got[step] for step in range(5)]
    assert all(b > a for a, b in zip(values, values[1:], strict=False))


def test_progress_bar_total_counts_the_micro_batches_max_steps_will_do(tmp_path):
    totals: list[tuple[float, int]] = []

    class Spy(L.Callback):
        def on_train_end(self, trainer, pl_module):
            bar = next(c for c in trainer.callbacks if isinstance(c, StepProgressBar))
            totals.append((bar.train_progress_bar.total, bar.train_progress_bar.n))

    training_mod.train(
        make_cfg(tmp_path / "r", "optim.max_steps=3", "export=false", "trainer.progress_bar=true"),
        callbacks=[Spy()],
    )
    # 48 examples = 6 steps x 2 micro-batches per epoch; max_steps=3 stops at 6 micro-batches
    assert totals == [(6, 6)]


# ---- W&B offline files ---------------------------------------------------------------------------
def wandb_records(
    run_dir: Path, wait_s: float = 30.0, ready: Callable[[list], bool] | None = None
) -> list[tuple[str, object]]:
    """(kind, record) of every offline W&B file under run_dir, in file order (leveldb log format:
    a 7-byte file header, then 32 KiB blocks of <crc, length, type> chunks). W&B's writer is
    another process and may still be flushing when the caller returns: read again until `ready`
    holds (default: a file holds its run record), for up to `wait_s` seconds."""
    import time

    ready = ready or (lambda recs: any(kind == "run" for kind, _ in recs))
    deadline = time.monotonic() + wait_s
    while True:
        out = _read_wandb_records(run_dir)
        if ready(out) or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def _summary_keys(recs) -> set[str]:
    return set().union(*(_keys(r.summary.update) for kind, r in recs if kind == "summary"))


def _read_wandb_records(run_dir: Path) -> list[tuple[str, object]]:
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, buf = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
            if left < 7 or (n == 0 and kind == 0):
                pos += left
                continue
            buf += data[pos + 7 : pos + 7 + n]
            pos += 7 + n
            if kind in (1, 4):  # a full record, or the last chunk of one
                rec = pb.Record()
                rec.ParseFromString(buf)
                buf = b""
                out.append((rec.WhichOneof("record_type"), rec))
    return out


def _keys(items) -> set[str]:
    return {i.key or "/".join(i.nested_key) for i in items}


def test_one_wandb_run_per_run_directory_across_resumes_and_eval_scores(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "r"
    wb = ("logger=wandb", "logger.entity=me", "logger.tags=[a,b]", "experiment=demo")
    training_mod.train(make_cfg(run, *wb, "optim.max_steps=2"))
    training_mod.train(make_cfg(run, *wb, "optim.max_steps=3"))  # trains on: a resume
    stored = json.loads((run / "wandb.json").read_text())
    recs = wandb_records(run)
    runs = [r.run for kind, r in recs if kind == "run"]
    assert len(runs) == 2 and {r.run_id for r in runs} == {stored["id"]}
    assert {r.run_group for r in runs} == {"demo"} and runs[0].entity == "me"
    assert list(runs[0].tags) == ["a", "b"]
    config = _keys(runs[0].config.update) | {
        k for kind, r in recs if kind == "config" for k in _keys(r.config.update)
    }
    assert {"lsp", "pair", "optim", "model/student_params", "model/teacher_params"} <= config
    history = set().union(*(_keys(r.history.item) for kind, r in recs if kind == "history"))
    assert {"train/loss", "train/tokens_seen", "val/loss"} <= history

    # evaluate.py logs the scores into the same W&B run (resumed by id)
    from hydra import compose, initialize_config_dir

    import kdlite.eval.config  # noqa: F401
    from kdlite.eval.run import evaluate

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        ecfg = compose(
            "eval",
            overrides=[f"model={run}", "n_samples=2", "max_new_tokens=8", "grade_workers=1",
                       "benches.synthetic.size=3"],
        )  # fmt: skip
    evaluate(ecfg)
    recs = wandb_records(run, ready=lambda recs: "eval/synthetic/avg_at_n" in _summary_keys(recs))
    assert {r.run.run_id for kind, r in recs if kind == "run"} == {stored["id"]}
    summary = _summary_keys(recs)
    for key in ("avg_at_n", "avg_at_n_strict", "pass@1", "pass@2", "ci95_low", "ci95_high"):
        assert f"eval/synthetic/{key}" in summary, key


# ---- messages ------------------------------------------------------------------------------------
def test_offline_missing_models_are_named_together_in_a_few_lines(tmp_path):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, str(repo / "train.py"), "pair=32b_8b", f"run_dir={tmp_path / 'r'}",
         "pair.student.name=/nonexistent/Qwen3-8B-Base"],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 1
    err = out.stderr.strip().splitlines()
    assert len(err) <= 5 and "Traceback" not in out.stderr, out.stderr
    text = out.stderr
    assert "3 of the run's models/tokenizers cannot be found" in text
    assert "`hf download Qwen/Qwen3-32B`" in text and "pair.teacher.name=<a local folder>" in text
    assert "pair.tokenizer=" in text and "/nonexistent/Qwen3-8B-Base" in text
    assert not (tmp_path / "r").exists()  # nothing was created


def test_range_errors_fail_under_cfg_job_and_dry():
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = subprocess.run(
        [sys.executable, str(repo / "train.py"), "lsp=1.5", "--cfg", "job"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1 and "lsp=1.5: must be in (0, 1]" in out.stderr
    assert "lsp: 1.5" not in out.stdout


def test_report_figures_are_logged_to_wandb_as_images(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    import shutil

    from kdlite.cli.report import main as report_main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    root = tmp_path / "demo"
    shutil.copytree(Path(__file__).parent / "fixtures" / "sweep" / "runs", root)
    report_main([f"runs={root}", "n_boot=5", "wandb=true"])
    recs = wandb_records(root / "report")
    (run,) = [r.run for kind, r in recs if kind == "run"]
    assert run.run_group == "demo" and run.job_type == "report"
    history = set().union(*(_keys(r.history.item) for kind, r in recs if kind == "history"))
    for name in ("fig3_accuracy_vs_lsp", "fig_loss_gap"):  # an image logs as <key>/{path,...}
        assert f"report/{name}/path" in history, sorted(history)


def test_a_failing_run_records_its_error_and_exits_with_the_message(tmp_path, monkeypatch):
    import sys

    from kdlite.data.datamodule import DistillDataModule
    from kdlite.data.example import DataError

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import train as train_py

    def broken(self):
        raise DataError("data source x: 97% of rows rejected\nfirst bad rows: 3, 8")

    monkeypatch.setattr(DistillDataModule, "prepare_data", broken)
    run = tmp_path / "r"
    fast = ["pair.teacher.bootstrap=false", "data.synthetic_size=60", "data.train_size=48",
            "data.val_size=8", "trainer.progress_bar=false"]  # fmt: skip
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    argv = ["train.py", "--config-path", conf, *fast, f"run_dir={run}", f"hydra.run.dir={tmp_path}"]
    monkeypatch.setattr(sys, "argv", argv)
    from hydra.core.global_hydra import GlobalHydra

    try:
        with pytest.raises(SystemExit) as exit_:
            train_py.main()
    finally:
        GlobalHydra.instance().clear()  # @hydra.main in-process: leave no global state behind
    assert "train.py: error: data source x: 97% of rows rejected" in str(exit_.value.code)
    status = read_status(run)
    assert status.state == "failed" and status.error == "DataError: first bad rows: 3, 8"
