"""Find and read run directories: resolved config, CSV loss curves, evaluation results.

A run directory is one that holds `config.yaml` (a training run) or `eval/<bench>/results.json`
without a config (a baseline: an un-distilled model evaluated by `evaluate.py`). Discovery is
recursive so a Hydra multirun tree, a hand-made folder of runs, or a single run all work; Hydra's own
`.hydra/` copies and checkpoint/export folders are skipped. Nothing here raises on a bad run: every
problem (no metrics, no evaluation, unreadable file, partial matrix) is recorded on the `Run` so the
report can list it, because one crashed job must not hide the other 159.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

SKIP_DIRS = {".hydra", "checkpoints", "export", "wandb", "lightning_logs", "__pycache__"}
# Keys that identify a training condition besides the two truncation knobs (lsp, crop).
CONDITION_KEYS = ("supervise", "lam", "temperature", "loss_norm", "seed")


@dataclass
class Run:
    path: Path
    name: str  # path relative to the sweep root
    config: dict[str, Any] | None  # None for a baseline
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # bench -> results.json
    metrics: dict[str, dict[int, float]] = field(default_factory=dict)  # column -> {step: value}
    problems: list[str] = field(default_factory=list)

    @property
    def is_baseline(self) -> bool:
        return self.config is None

    def get(self, key: str, default: Any = None) -> Any:
        return (self.config or {}).get(key, default)

    @property
    def pair(self) -> str | None:
        return _name(self.get("pair"))

    @property
    def data(self) -> str | None:
        return _name(self.get("data"))

    @property
    def lsp(self) -> float:
        return float(self.get("lsp", 1.0))

    @property
    def crop(self) -> str:
        return str(self.get("crop", "left"))

    @property
    def condition(self) -> tuple[Any, ...]:
        """Everything that defines the run except lsp and crop."""
        return (self.pair, self.data) + tuple(self.get(k) for k in CONDITION_KEYS)

    def accuracy(self, bench: str, strict: bool = False) -> float | None:
        res = self.results.get(bench)
        if res is None:
            return None
        value = res.get("avg_at_n_strict" if strict else "avg_at_n")
        return None if value is None else float(value)

    def correct(self, bench: str) -> np.ndarray | None:
        res = self.results.get(bench)
        matrix = None if res is None else res.get("correct")
        if not matrix:
            return None
        return np.asarray(matrix, dtype=float)

    @property
    def model(self) -> str | None:
        for res in self.results.values():
            if res.get("model"):
                return str(res["model"])
        return None


def _name(section: Any) -> str | None:
    if isinstance(section, dict):
        return section.get("name")
    return None if section is None else str(section)


def discover(root: str | Path) -> list[Path]:
    """Run directories under root (root itself included), sorted."""
    root = Path(root)
    found: set[Path] = set()
    if (root / "config.yaml").is_file() or any(root.glob("eval/*/results.json")):
        found.add(root)
    for path in root.rglob("*"):
        if any(part in SKIP_DIRS for part in path.relative_to(root).parts):
            continue
        if path.name == "config.yaml":
            found.add(path.parent)
        elif path.name == "results.json" and path.parent.parent.name == "eval":
            found.add(path.parent.parent.parent)
    return sorted(found)


def read_config(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf  # the run wrote it with OmegaConf; read it the same way

    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} is not a mapping")
    # OmegaConf types DictConfig keys broadly (str | int | Enum | ...); a run's config.yaml is the
    # Hydra config that `kdlite.training` dumped, whose top-level keys are all config-group / field
    # names, i.e. str.
    return cast(dict[str, Any], cfg)


def read_metrics(path: Path) -> dict[str, dict[int, float]]:
    """Lightning CSVLogger file -> column -> {step: value}; empty cells skipped, repeats averaged."""
    sums: dict[str, dict[int, list[float]]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            step_text = row.get("step", "")
            if not step_text:
                continue
            step = int(float(step_text))
            for column, text in row.items():
                if column in (None, "step") or text in (None, ""):
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                if math.isfinite(value):
                    sums.setdefault(column, {}).setdefault(step, []).append(value)
    return {c: {s: sum(v) / len(v) for s, v in sorted(d.items())} for c, d in sums.items()}


def load_run(path: Path, root: Path) -> Run:
    name = str(path.relative_to(root)) if path != root else path.name
    run = Run(path=path, name=name, config=None)
    if (path / "config.yaml").is_file():
        try:
            run.config = read_config(path / "config.yaml")
        except Exception as err:  # a broken config makes the run unusable, not the report
            run.problems.append(f"unreadable config.yaml ({err})")
            run.config = {}
        metrics = path / "metrics.csv"
        if metrics.is_file():
            try:
                run.metrics = read_metrics(metrics)
            except Exception as err:
                run.problems.append(f"unreadable metrics.csv ({err})")
            if not run.metrics.get("train/loss"):
                run.problems.append("metrics.csv has no train/loss values")
        else:
            run.problems.append("no metrics.csv")
    for results in sorted(path.glob("eval/*/results.json")):
        bench = results.parent.name
        try:
            data = json.loads(results.read_text())
        except Exception as err:
            run.problems.append(f"unreadable eval/{bench}/results.json ({err})")
            continue
        if data.get("avg_at_n") is None:
            run.problems.append(f"eval/{bench}/results.json has no avg_at_n")
            continue
        matrix = data.get("correct")
        if not matrix:
            run.problems.append(f"eval/{bench}: no correct matrix (no bootstrap for this point)")
        elif len({len(row) for row in matrix}) != 1:
            run.problems.append(f"eval/{bench}: ragged correct matrix (partial evaluation?)")
            data["correct"] = None
        elif data.get("n_samples") and len(matrix[0]) < int(data["n_samples"]):
            run.problems.append(
                f"eval/{bench}: {len(matrix[0])} of {data['n_samples']} samples (partial)"
            )
        run.results[bench] = data
    if not run.results and run.config is not None:
        run.problems.append("no evaluation results")
    return run


def load_runs(root: str | Path) -> list[Run]:
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such directory: {root}")
    return [load_run(path, root) for path in discover(root)]


def baseline_for(run: Run, baselines: list[Run]) -> Run | None:
    """The baseline whose `model` names this run's student (any string under `pair` that contains
    'student', or the last path component of one)."""
    pair = run.get("pair")
    if not isinstance(pair, dict):
        return None
    names: set[str] = set()

    def walk(node: Any, under_student: bool) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, under_student or "student" in str(key))
        elif isinstance(node, str) and under_student:
            names.update({node, node.rstrip("/").split("/")[-1]})

    walk(pair, False)
    for base in baselines:
        model = base.model
        if model and (model in names or model.rstrip("/").split("/")[-1] in names):
            return base
    return None
