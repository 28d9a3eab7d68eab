"""Lightning callbacks that make short runs and their progress behave (`train()` adds them).

- `ValidateAtEnd`: the last optimizer step of a run always validates (Lightning validates at
  epoch ends or every `val_check_interval` batches, so an `optim.max_steps` run that stops
  mid-epoch never did, and wrote no `best.ckpt`). It asks Lightning to stop after the final step,
  which Lightning answers with a validation pass; nothing else changes. It also saves `last.ckpt`
  at that step when the periodic save (`trainer.checkpoint_every`) missed it, inside the loop so
  the checkpoint is mid-epoch: raising `optim.max_steps` trains on from exactly there.
- `StepProgressBar`: the training bar's total is the micro-batches the run will actually do in this
  epoch (`optim.max_steps` included), so its count and ETA are right.
- `ModelSizes`: the student's and teacher's parameter counts, logged as config once the models exist.

`val_check_interval()` converts the config's integer interval (optimizer steps) into the micro-batches
Lightning counts.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar


def val_check_interval(value: Any, accumulation: int) -> Any:
    """`trainer.val_check_interval`: a float is a fraction of an epoch (unchanged); an int is in
    optimizer steps, and Lightning counts micro-batches, so it is multiplied by `accumulation`."""
    if isinstance(value, bool):
        raise ValueError(f"trainer.val_check_interval={value}: expected a number")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value) * accumulation
    return float(value)


def epochs_done(trainer: L.Trainer) -> int:
    """Whole epochs of optimizer steps done (0 when an epoch's length is unknown)."""
    batches = trainer.num_training_batches
    if batches == float("inf") or not batches:
        return 0
    steps_per_epoch = -(-int(batches) // trainer.accumulate_grad_batches)
    return trainer.global_step // steps_per_epoch


def _last_step(trainer: L.Trainer) -> bool:
    """The optimizer step that just ended is the run's last one."""
    if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    loop = trainer.fit_loop.epoch_loop
    last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
    return last_epoch and loop.batch_progress.is_last_batch


class ValidateAtEnd(L.Callback):
    def __init__(self, last: ModelCheckpoint | None = None) -> None:
        self.last = last  # the periodic `last.ckpt` saver

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        if (trainer.fit_loop.epoch_loop.batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-step: the optimizer has not stepped yet
        if not _last_step(trainer):
            return
        every = self.last._every_n_train_steps if self.last is not None else 0
        if self.last is not None and self.last.dirpath and every and trainer.global_step % every:
            trainer.save_checkpoint(f"{self.last.dirpath}/{self.last.filename}.ckpt")
        if trainer.num_val_batches:
            trainer.should_stop = True  # Lightning validates when asked to stop (min limits met)


class StepProgressBar(TQDMProgressBar):
    @property
    def total_train_batches(self) -> int | float:
        total = super().total_train_batches
        t = self.trainer
        if t.max_steps > 0 and total != float("inf"):
            done = t.fit_loop.epoch_loop.batch_progress.current.ready
            left = (t.max_steps - t.global_step) * t.accumulate_grad_batches
            total = min(total, done + left)
        return total


class ModelSizes(L.Callback):
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from kdlite.models import count_parameters

        sizes = {
            f"model/{role}_params": count_parameters(model)
            for role in ("student", "teacher")
            if (model := getattr(pl_module, role, None)) is not None
        }
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                experiment: Any = getattr(logger, "experiment")  # noqa: B009 - WandbLogger only
                experiment.config.update(sizes, allow_val_change=True)


def callbacks(progress_bar: bool, last: ModelCheckpoint | None = None) -> list[L.Callback]:
    """The callbacks `train()` adds to its checkpoints (`last`: its periodic last.ckpt saver)."""
    extra: list[L.Callback] = [ValidateAtEnd(last), ModelSizes()]
    if progress_bar:
        extra.append(StepProgressBar())
    return extra
