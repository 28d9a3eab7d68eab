"""The files a run directory holds so that it describes itself (rank 0 writes them all).

    config.yaml     the resolved config          overrides.yaml  the command line's overrides
    git.txt         the code's git revision      teacher.txt     which teacher taught (lam > 0)
    manifest.json   the data that was read       metrics.csv     one row per optimizer step

`status.json` is kdlite/run_state.py's, `checkpoints/` kdlite/checkpoint.py's, `export/`
kdlite/export.py's. metrics.csv is written by Lightning's CSV logger, which deletes the file when it
starts: on resume the curve so far is set aside (`set_aside_metrics`) and merged back after the run
(`merge_metrics`), so a resumed run keeps one curve.
"""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

PREV_METRICS = "metrics.prev.csv"


def git_revision() -> str:
    """`<commit>` of the kdlite checkout, `<commit> (dirty)` with uncommitted changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if rev.returncode:
        return "unknown (not a git checkout)"
    return rev.stdout.strip() + (" (dirty)" if dirty.stdout.strip() else "")


def hydra_overrides() -> list[str]:
    """The command line's overrides (`lsp=0.5 crop=right`); [] outside `@hydra.main`."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not running under @hydra.main (tests, library use)
        return []


def write_run_files(run_dir: Path, cfg: DictConfig, teacher: str | None = None) -> None:
    """config.yaml, overrides.yaml, git.txt, and teacher.txt when a teacher teaches."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (run_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(hydra_overrides())))
    (run_dir / "git.txt").write_text(git_revision() + "\n")
    if teacher is not None:  # a bootstrapped teacher lives in the cache: say where
        (run_dir / "teacher.txt").write_text(f"{teacher}\n")


def write_manifest(run_dir: Path, manifest: Mapping[str, Any]) -> None:
    """manifest.json: the data module's record of what was read, plus the run's batch layout."""
    (run_dir / "manifest.json").write_text(json.dumps(dict(manifest), indent=1, default=str))


def loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    """The CSV logger (metrics.csv) and, with `logger.wandb`, the run directory's W&B run."""
    from lightning.pytorch.loggers import CSVLogger

    # Flushed every step: rows still in memory at a kill would be lost for good (the resumed run
    # starts after them).
    csv_logger = CSVLogger(save_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=1)
    found: list[Any] = [csv_logger]
    if cfg.logger.wandb:  # one W&B run per run directory, resumed by the id stored in it
        from kdlite.wandb_run import training_logger

        found.append(training_logger(cfg, run_dir))
    return found


def set_aside_metrics(run_dir: Path) -> None:
    """Move metrics.csv to metrics.prev.csv before a resumed run's CSV logger deletes it (a
    metrics.prev.csv left by a second interruption is merged into it first)."""
    current, prev = run_dir / "metrics.csv", run_dir / PREV_METRICS
    if current.exists():
        if prev.exists():
            merge_metrics(run_dir)
        current.replace(prev)


def merge_metrics(run_dir: Path, restored: Sequence[dict[str, float]] = ()) -> None:
    """Merge metrics.prev.csv back under metrics.csv, keeping old rows only for steps before the
    resumed ones (rank 0 only).

    `restored` are step rows carried by the checkpoint a run resumed from (`DistillModule` puts
    the row of the step it saved into it): Lightning writes `last.ckpt` before that step's log
    line, so a kill in between leaves the row in neither file; it is put back from here.
    """
    current, prev = run_dir / "metrics.csv", run_dir / PREV_METRICS
    if not prev.exists() and not restored:
        return
    old: list[dict[str, str]] = []
    if prev.exists():
        with prev.open(newline="") as f:
            old = list(csv.DictReader(f))
    new: list[dict[str, str]] = []
    if current.exists():
        with current.open(newline="") as f:
            new = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in new if r.get("step")]
    first_new = min(steps) if steps else None
    rows = [r for r in old if r.get("step") and (first_new is None or int(r["step"]) < first_new)]
    rows += new
    logged = {int(r["step"]) for r in rows if r.get("step") and r.get("train/loss")}
    for row in restored:
        if row and int(row["step"]) not in logged:
            rows.append({k: str(int(v)) if k == "step" else repr(v) for k, v in row.items()})
    rows.sort(key=lambda r: int(r["step"]) if r.get("step") else -1)
    fields = sorted({k for r in rows for k in r})
    tmp = current.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(current)
    prev.unlink(missing_ok=True)
