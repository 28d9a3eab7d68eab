"""W&B as the study's dashboard: one W&B run per run directory, accuracy logged into it.

- Training (`logger=wandb`): the W&B run id lives in `<run>/wandb.json` (with project, entity,
  group), created on the first start and reused on every resume, so a run directory is one W&B
  run however often it restarts. Group = `logger.group`, else the experiment (a sweep is one
  group); the resolved config and the models' parameter counts are its config.
- Evaluation: `evaluate.py` logs each benchmark's avg@n, strict avg@n, pass@k, standard error and
  95% interval (`eval/<bench>/...`) into the training run's W&B run, resumed by its stored id. A
  model without one (a baseline, or a run trained without W&B) gets its own `eval` run in the
  same project, when `logger.wandb=true`, its id stored beside its results.
- The report (`python -m kdlite.cli.report runs=<sweep> wandb=true`) logs its figures as images to a `report`
  run in the sweep's group.

Offline mode (the default) writes `wandb/offline-run-*` under the directory; `wandb sync` uploads
it later.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

WANDB_FILE = "wandb.json"


def _settings(log_cfg: Any) -> dict[str, Any]:
    tags = log_cfg.get("tags") if hasattr(log_cfg, "get") else None
    return {
        "project": log_cfg.project,
        "entity": log_cfg.get("entity"),
        "tags": [str(t) for t in tags] if tags else None,
        "mode": log_cfg.get("mode"),  # evaluate: null = the training run's mode
    }


def stored_run(directory: Path) -> dict[str, Any] | None:
    """The W&B run recorded for this directory (`wandb.json`), or None."""
    try:
        record = json.loads((Path(directory) / WANDB_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("id") else None


def run_record(
    directory: Path, *, project: str, entity: str | None, group: str | None, mode: str = "offline"
) -> dict:
    """The directory's W&B run (id reused when recorded; created and recorded otherwise)."""
    record = stored_run(directory)
    if record is None:
        record = {
            "id": uuid.uuid4().hex[:8],
            "project": project,
            "entity": entity,
            "group": group,
            "mode": mode,
        }
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        if getattr(rank_zero_only, "rank", 0) == 0:  # the other ranks never log
            Path(directory).mkdir(parents=True, exist_ok=True)
            (Path(directory) / WANDB_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return record


def training_logger(cfg: Any, run_dir: Path) -> Any:
    """Lightning's WandbLogger for a training run, resuming the run directory's W&B run."""
    from lightning.pytorch.loggers import WandbLogger
    from omegaconf import OmegaConf

    s = _settings(cfg.logger)
    os.environ.setdefault("WANDB_MODE", s["mode"])
    group = cfg.logger.group or cfg.experiment or None
    record = run_record(
        run_dir, project=s["project"], entity=s["entity"], group=group, mode=s["mode"]
    )
    return WandbLogger(
        project=record["project"],
        entity=record.get("entity"),
        group=record.get("group"),
        tags=s["tags"],
        name=str(run_dir.name),
        id=record["id"],
        resume="allow",
        save_dir=str(run_dir),
        offline=s["mode"] == "offline",
        job_type="train",
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def eval_summary(results: list[dict]) -> dict[str, float]:
    """The scores of `results.json` dicts, keyed `eval/<bench>/<score>` (flat, W&B summary keys)."""
    out: dict[str, float] = {}
    for r in results:
        p = f"eval/{r['bench']}/"
        out[p + "avg_at_n"] = float(r["avg_at_n"])
        out[p + "avg_at_n_strict"] = float(r["avg_at_n_strict"])
        out[p + "stderr"] = float(r["stderr"])
        out[p + "ci95_low"], out[p + "ci95_high"] = (float(x) for x in r["ci95"])
        out[p + "n_samples"] = float(r["n_samples"])
        for k, v in r["pass_at_k"].items():
            out[f"{p}pass@{k}"] = float(v)
        if r.get("derived_before_reflection") is not None:
            out[p + "derived_before_reflection"] = float(r["derived_before_reflection"])
    return out


def _init(directory: Path, record: dict, mode: Any, job_type: str, name: str, tags=None) -> Any:
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    return wandb.init(
        id=record["id"],
        resume="allow",
        project=record["project"],
        entity=record.get("entity"),
        group=record.get("group"),
        name=name,
        dir=str(directory),
        mode=mode,
        job_type=job_type,
        tags=tags,
    )


def log_eval(log_cfg: Any, results_by_dir: dict[Path, tuple[Path | None, list[dict]]]) -> list[str]:
    """Log each model's scores; `results_by_dir`: results root -> (its run directory, results).

    `log_cfg.wandb`: null = only models whose training run used W&B; true = every model (the
    others get an `eval` run); false = none. Returns the W&B run ids written to.
    """
    enabled = log_cfg.wandb
    if enabled is False:
        return []
    s = _settings(log_cfg)
    ids = []
    for root, (run_dir, results) in results_by_dir.items():
        record = stored_run(run_dir) if run_dir is not None else None
        if record is not None:  # the training run's own W&B run
            assert run_dir is not None
            home, name, job = run_dir, run_dir.name, "train"
        elif enabled:
            home, job = root, "eval"
            name = f"eval:{(run_dir or root.parent).name}"
            group = log_cfg.get("group")
            record = run_record(home, project=s["project"], entity=s["entity"], group=group)
        else:
            continue
        mode = s["mode"] or record.get("mode", "offline")
        run = _init(home, record, mode, job, name, s["tags"])
        summary = eval_summary(results)
        run.log(summary)
        for key, value in summary.items():
            run.summary[key] = value
        run.finish()
        ids.append(str(record["id"]))
    return ids


def log_figures(paths: list[Path], sweep_dir: Path, log_cfg: Any) -> str:
    """Log the report's figures as images to a `report` run in the sweep's group; its id."""
    import wandb

    s = _settings(log_cfg)
    record = run_record(
        sweep_dir / "report",
        project=s["project"],
        entity=s["entity"],
        group=log_cfg.get("group") or sweep_dir.resolve().name,
    )
    mode = s["mode"] or "offline"
    run = _init(sweep_dir / "report", record, mode, "report", f"report:{sweep_dir.name}")
    run.log({f"report/{p.stem}": wandb.Image(str(p)) for p in paths})
    run.finish()
    return str(record["id"])
