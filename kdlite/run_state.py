"""What state a run directory is in, written by `train()` and read by `python -m kdlite.cli.sweep`.

`<run>/status.json` records one of `running` (with host and pid), `done` (with the step and epoch
reached, the stop condition it was trained to, and the weights it exported) or `failed` (with the
error's last line). Reading it gives the run's state:

- `done`: training finished (a run from before status.json: `export/config.json` exists);
- `running`: started and alive (same host: the pid exists; another host: `metrics.csv` or a
  checkpoint changed in the last `STALE_S` seconds);
- `interrupted`: started, neither finished nor failed, and not alive; `resumable` when
  `checkpoints/last.ckpt` exists (rerunning the same command continues from it);
- `failed`: the training raised (recorded by train.py's entry point);
- `never`: no run directory (only a sweep's expected job can be in this state).

A finished run is done for a new config when that config's stop condition is already met
(`finished_for`): rerunning the same command says so and exits 0; raising `optim.max_steps` or
`optim.epochs` trains on from `last.ckpt`. Pure file I/O: no Lightning, no Hydra.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
STALE_S = 15 * 60  # another host's run that wrote nothing for this long is taken as interrupted
STATES = ("done", "running", "interrupted", "failed", "never")


@dataclass
class RunStatus:
    path: Path
    state: str  # one of STATES
    step: int | None = (
        None  # optimizer steps reached (done) or last checkpoint step (unknown: None)
    )
    resumable: bool = False  # checkpoints/last.ckpt exists
    error: str | None = None  # failed: the error's last line
    evaluated: list[str] = field(default_factory=list)  # benchmarks with eval/<bench>/results.json
    detail: str = ""
    record: dict[str, Any] = field(default_factory=dict)  # status.json as written


def _write(run_dir: Path, record: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(run_dir / STATUS_FILE)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def mark_running(run_dir: Path) -> None:
    _write(
        Path(run_dir),
        {"state": "running", "host": socket.gethostname(), "pid": os.getpid(), "started": _now()},
    )


def mark_done(
    run_dir: Path,
    *,
    step: int,
    epochs_done: int,
    max_steps: int,
    epochs: int,
    best_val_loss: float | None,
    weights: str | None,
) -> None:
    """`weights`: which checkpoint the export holds (best.ckpt, or the final weights and why)."""
    _write(
        Path(run_dir),
        {
            "state": "done",
            "step": int(step),
            "epochs_done": int(epochs_done),
            "max_steps": int(max_steps),
            "epochs": int(epochs),
            "best_val_loss": best_val_loss,
            "weights": weights,
            "finished": _now(),
            "host": socket.gethostname(),
        },
    )


def last_line(err: BaseException) -> str:
    """The error as its traceback's last line would show it (`Type: first line of message`)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}".rstrip(": ")


def mark_failed(run_dir: Path, err: BaseException) -> None:
    """Record a failure, only in a run directory that training already created."""
    run_dir = Path(run_dir)
    if not (run_dir / STATUS_FILE).is_file():
        return
    _write(
        run_dir,
        {
            "state": "failed",
            "error": last_line(err),
            "failed": _now(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        },
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _last_write(run_dir: Path) -> float:
    paths = [run_dir / "metrics.csv", run_dir / "checkpoints" / "last.ckpt", run_dir / STATUS_FILE]
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def read_status(run_dir: str | Path) -> RunStatus:
    """The state of one run directory (see the module docstring); never raises on a bad file."""
    run_dir = Path(run_dir)

    def status(state: str, **kw: Any) -> RunStatus:
        evaluated = sorted(p.parent.name for p in run_dir.glob("eval/*/results.json"))
        resumable = (run_dir / "checkpoints" / "last.ckpt").is_file()
        return RunStatus(run_dir, state, evaluated=evaluated, resumable=resumable, **kw)

    if not run_dir.is_dir():
        return status("never")
    try:
        record: dict[str, Any] = json.loads((run_dir / STATUS_FILE).read_text())
    except FileNotFoundError:
        record = {}
    except (OSError, ValueError) as err:
        return status("interrupted", detail=f"unreadable {STATUS_FILE} ({err})")
    state = record.get("state")
    if state == "done":
        return status("done", step=record.get("step"), record=record)
    if state == "failed":
        return status("failed", error=record.get("error"), record=record)
    if state == "running":
        if record.get("host") == socket.gethostname():
            alive = _pid_alive(int(record.get("pid", -1)))
            detail = f"pid {record.get('pid')}"
        else:
            idle = time.time() - _last_write(run_dir)
            alive = idle < STALE_S
            detail = f"on {record.get('host')}, last write {idle:.0f}s ago"
        return status("running" if alive else "interrupted", detail=detail, record=record)
    # A run from before status.json existed: judge by what it wrote.
    if (run_dir / "export" / "config.json").is_file():
        return status("done", detail="no status.json (older run)")
    if (run_dir / "config.yaml").is_file():
        return status("interrupted", detail="no status.json")
    return status("never", detail="no config.yaml")


def finished_for(status: RunStatus, max_steps: int, epochs: int) -> bool:
    """True when a done run already meets the stop condition `max_steps` / `epochs` (so a rerun has
    nothing to train); False for any other state, or when the new condition asks for more."""
    if status.state != "done" or "step" not in status.record:
        return False  # an older run without a record: let Lightning decide from last.ckpt
    step, epochs_done = int(status.record["step"]), int(status.record.get("epochs_done", 0))
    return (max_steps > 0 and step >= max_steps) or epochs_done >= epochs


def already_done(run_dir: Path, max_steps: int, epochs: int) -> RunStatus | None:
    """The run's status when it is done for this stop condition (and says so), else None."""
    status = read_status(run_dir)
    if not finished_for(status, max_steps, epochs):
        return None
    r = status.record
    print(
        f"kdlite: {run_dir} is done (step {r['step']}, {r.get('epochs_done')} epochs; "
        f"export: {r.get('weights') or 'none'}). Nothing to train: raise optim.max_steps or "
        "optim.epochs to train on from its last checkpoint, or pass resume=false to start over."
    )
    return status
