"""One training run driven from a test, under `torchrun` (N processes) or plain `python` (1).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/distributed/driver.py \
        OUT_JSON [KILL_AFTER_SAVE_AT_STEP] -- key=value ...

Composes conf/config.yaml with the overrides after `--`, runs `kdlite.training.train(cfg)` with two
extra callbacks and writes OUT_JSON (rank 0): the first optimizer step's gradients gathered to full
tensors *before* clipping, and per rank the bytes of the locally held parameters, gradients and
optimizer state (what the memory formula predicts). `KILL_AFTER_SAVE_AT_STEP` ends every process
with `os._exit` right after optimizer step k's `last.ckpt` is written and before that step's
metrics row is logged (the worst moment for the metrics): a kill, not a clean stop.

On ranks other than 0 an audit hook records every file opened for writing, renamed, removed or
created under the run directory, every opening of `best.ckpt`, and any call of the metrics
set-aside/merge, into OUT_JSON.rankN.opens.json: only rank 0 writes the run's files and reads
`best.ckpt` for the export.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from kdlite.config import compose_train  # noqa: E402
from kdlite.training import train  # noqa: E402


def _full(t: torch.Tensor) -> torch.Tensor:
    full = getattr(t, "full_tensor", None)
    return (full() if callable(full) else t).detach().float().cpu()


def _local_bytes(tensors: Any) -> int:
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


class Probe(L.Callback):
    """Records the first step's full gradients (before clipping) and per-rank local bytes."""

    def __init__(self) -> None:
        self.grads: dict[str, list[float]] = {}
        self.bytes: dict[str, int] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step != 0 or self.grads:
            return
        student = pl_module.student
        for name, p in student.named_parameters():
            if p.grad is not None:  # every rank takes part in the gather (a collective)
                self.grads[name] = _full(p.grad).flatten().tolist()
        params = list(student.parameters())
        self.bytes["student_params"] = _local_bytes(params)
        self.bytes["student_grads"] = _local_bytes(p.grad for p in params if p.grad is not None)
        teacher = pl_module.teacher
        self.bytes["teacher_params"] = _local_bytes(teacher.parameters()) if teacher else 0

    def on_validation_batch_end(self, trainer, pl_module, *args: Any, **kwargs: Any) -> None:
        params = pl_module.student.parameters()
        self.bytes.setdefault("student_params_in_val", _local_bytes(params))

    def on_validation_end(self, trainer, pl_module) -> None:
        params = pl_module.student.parameters()
        self.bytes.setdefault("student_params_after_val", _local_bytes(params))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if "optimizer_state" not in self.bytes and trainer.global_step >= 1:
            state = trainer.optimizers[0].state
            tensors = [v for s in state.values() for v in s.values() if torch.is_tensor(v)]
            self.bytes["optimizer_state"] = _local_bytes(t for t in tensors if t.ndim > 0)


def kill_after_save_at(step: int) -> None:
    """Exit in the module's on_train_batch_end, which Lightning calls after the checkpoint
    callbacks have saved and before the logger writes the step's row."""
    from kdlite.module import DistillModule

    original = DistillModule.on_train_batch_end

    def hook(self, outputs, batch, batch_idx):
        if self.trainer.global_step >= step:
            sys.stdout.flush()
            os._exit(17)
        return original(self, outputs, batch, batch_idx)

    DistillModule.on_train_batch_end = hook  # type: ignore[method-assign]


def audit_opens(run_dir: str, record: list[str]) -> None:
    root = str(Path(run_dir).resolve()) + os.sep

    def inside(path: object) -> str | None:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return None
        resolved = str(Path(os.fsdecode(path)).resolve())
        return resolved if resolved.startswith(root) else None

    def hook(event: str, args: tuple) -> None:
        if event == "open" and (path := inside(args[0])):
            mode = str(args[1] or "r")
            if any(c in mode for c in "wax+") or path.endswith("best.ckpt"):
                record.append(f"open {mode} {path}")
        elif event in ("os.rename", "os.remove", "os.mkdir") and (path := inside(args[0])):
            record.append(f"{event} {path}")

    sys.addaudithook(hook)
    # The metrics set-aside/merge of a resume is rank 0's alone: record any call elsewhere, also
    # one that found nothing to move (a lost race on a shared file system is timing-dependent).
    import kdlite.run_files as run_files

    for name in ("set_aside_metrics", "merge_metrics"):
        original = getattr(run_files, name)

        def recorder(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            record.append(f"called {_name}")
            return _original(*args, **kw)

        setattr(run_files, name, recorder)


def main() -> None:
    args = sys.argv[1:]
    split = args.index("--")
    head, overrides = args[:split], args[split + 1 :]
    out = Path(head[0])
    if len(head) > 1:
        kill_after_save_at(int(head[1]))
    rank = int(os.environ.get("RANK", "0"))
    cfg = compose_train(overrides)
    opens: list[str] = []
    if rank != 0:
        audit_opens(cfg.run_dir, opens)
    result = train(cfg, callbacks=[probe := Probe()])
    Path(f"{out}.rank{rank}.bytes.json").write_text(json.dumps(probe.bytes))
    Path(f"{out}.rank{rank}.opens.json").write_text(json.dumps(opens))
    if rank == 0:
        out.write_text(
            json.dumps(
                {
                    "grads": probe.grads,
                    "global_step": result.global_step,
                    "best_val_loss": result.best_val_loss,
                }
            )
        )


if __name__ == "__main__":
    main()
