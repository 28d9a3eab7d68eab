"""`train(cfg)`: one distillation run, from a composed config to an exported student.

`train` is `build` -> `fit` -> `export`. `build` fails early in this order: validate the config,
refuse what cannot run here (missing models, a study-size pair on a CPU, a multi-device sweep on
the basic launcher), resolve the tokenizer and both models' sources (a typo or an offline Hub fails
here, before any data or weights are loaded), then data, then models, then the Trainer; it writes
the run directory's own files (kdlite/run_files.py). `fit` starts or resumes: rerunning the same
command finds `checkpoints/last.ckpt` and continues from it, keeping one metrics curve. `export`
writes the best checkpoint's student as a Hugging Face folder and marks the run done.

This module is the top of the library's import graph (no library module imports it; programs
call `train`): the config mapping lives in kdlite/config.py, the run directory's files in
kdlite/run_files.py and kdlite/run_state.py, the export in kdlite/export.py. The one training run
started from inside is the tiny teacher's bootstrap (`bootstrap_teacher`), a run of its own.
"""

from __future__ import annotations

import gc
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from kdlite import run_files, run_state
from kdlite.checkpoint import AtomicCheckpointIO, ensure_writable, resume_checkpoint
from kdlite.config import (
    ConfigError,
    accumulation,
    attention,
    bootstrap_config,
    check_vocab_rows,
    data_spec,
    enum_value,
    knobs,
    loss_settings,
    model_settings,
    model_spec,
    optim_settings,
    trainer_arguments,
    validate,
    world_size,
)
from kdlite.models import ModelLoadError, ModelSpec, check_tokenizers
from kdlite.parallel import apply_hardware, launch_rank, refuse_multirun_on_devices

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    export_dir: Path | None
    best_val_loss: float | None
    global_step: int


@dataclass
class Run:
    """What `build` makes for `fit` and `export`."""

    cfg: DictConfig
    run_dir: Path
    tokenizer: Any
    datamodule: Any  # kdlite.data.datamodule.DistillDataModule
    module: Any  # kdlite.module.DistillModule
    trainer: Any  # lightning.Trainer
    best: Any  # the ModelCheckpoint that keeps checkpoints/best.ckpt
    world: int  # processes (devices x nodes)
    accumulation: int  # micro-batches per optimizer step on each device


def train(
    cfg: DictConfig,
    *,
    callbacks: Sequence[Any] = (),
    make_trainer: Callable[..., Any] | None = None,
) -> RunResult:
    """Build -> fit -> export.

    `callbacks` are added to the Trainer's (probes, tests). `make_trainer` is called with the
    Trainer's keyword arguments instead of `lightning.Trainer` (tests: inspect or change them).
    """
    hardware = apply_hardware(cfg)
    validate(cfg)
    if hardware.message and launch_rank() == 0:
        print(hardware.message)
    if cfg.resume and (done := _already_done(cfg)) is not None:
        return done
    run = build(cfg, callbacks=callbacks, make_trainer=make_trainer)
    fit(run)
    result = export(run)
    _finish_loggers(run.trainer)
    del run  # free both models before the next job of a sweep
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def _already_done(cfg: DictConfig) -> RunResult | None:
    """The result of a run directory that already reached this config's stop condition."""
    run_dir = Path(cfg.run_dir)
    done = run_state.already_done(run_dir, cfg.optim.max_steps, cfg.optim.epochs)
    if done is None:
        return None
    export_dir = run_dir / "export"
    return RunResult(
        run_dir,
        export_dir if export_dir.is_dir() else None,
        done.record.get("best_val_loss"),
        int(done.record["step"]),
    )


# ---- build -----------------------------------------------------------------------------------
def build(
    cfg: DictConfig,
    *,
    callbacks: Sequence[Any] = (),
    make_trainer: Callable[..., Any] | None = None,
) -> Run:
    """Everything a run needs, checked before anything heavy: data module, module, Trainer, and
    the run directory's config/overrides/git/teacher files (rank 0)."""
    import lightning as L

    from kdlite.data.datamodule import DistillDataModule
    from kdlite.data.tokenizer import load_tokenizer
    from kdlite.module import DistillModule

    _check_resources_and_device(cfg)
    _quiet_expected_warnings()
    world = world_size(cfg.trainer)
    accum = accumulation(cfg.batch, world)
    refuse_multirun_on_devices(world)
    if cfg.trainer.num_threads:
        torch.set_num_threads(int(cfg.trainer.num_threads))
    run_dir = Path(cfg.run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    tokenizer = load_tokenizer(cfg.pair.tokenizer)
    teacher = _teacher(cfg, tokenizer)
    check_tokenizers(
        tokenizer, cfg.pair.tokenizer, {"student": model_spec(cfg.pair.student), "teacher": teacher}
    )
    check_vocab_rows(cfg.pair, len(tokenizer), ("student", "teacher") if teacher else ("student",))

    attn = attention(cfg)
    datamodule = DistillDataModule(
        data_spec(cfg.data), tokenizer, knobs(cfg, attn), num_workers=cfg.trainer.num_workers
    )
    teacher_cache = None  # teacher=cache|auto: top-k log-probs read from disk, teacher never loaded
    if cfg.lam > 0 and enum_value(cfg.teacher) != "online":
        from kdlite.teacher_cache import select_for_run

        teacher_cache = select_for_run(cfg, tokenizer, datamodule)  # None: the online teacher
    module = DistillModule(
        model_settings(
            cfg,
            teacher=None if teacher_cache is not None else teacher,
            teacher_cache=teacher_cache,
            attention=attn,
        ),
        loss_settings(cfg, len(tokenizer)),
        optim_settings(cfg),
        rehearsal=_rehearsal(cfg, tokenizer),
    )
    trainer, best = build_trainer(cfg, accum, callbacks=callbacks, make_trainer=make_trainer)
    if trainer.is_global_zero:  # known once the Trainer exists; files are rank 0's job
        run_files.write_run_files(run_dir, cfg, teacher=teacher.location() if teacher else None)
        ensure_writable(run_dir / "checkpoints")  # a multi-day run must not end with nothing saved
    return Run(cfg, run_dir, tokenizer, datamodule, module, trainer, best, world, accum)


def _rehearsal(cfg: DictConfig, tokenizer: Any) -> Any:
    """The tiny pair's rehearsal (kdlite/rehearsal.py), or None (`pair.rehearsal.rows=0`)."""
    from kdlite.rehearsal import Rehearsal, check_world, settings_for

    settings = settings_for(cfg)
    if settings is None:
        return None
    check_world(settings.rows, world_size(cfg.trainer))  # before any work, not at the first step
    return Rehearsal(settings, tokenizer)


def build_trainer(
    cfg: DictConfig,
    accumulation: int,
    *,
    callbacks: Sequence[Any] = (),
    make_trainer: Callable[..., Any] | None = None,
) -> tuple[Any, Any]:
    """The Trainer of the run (`make_trainer`, default `lightning.Trainer`, gets its keyword
    arguments) and the ModelCheckpoint that keeps `checkpoints/best.ckpt`.

    Two checkpoints: `best.ckpt` (weights only, lowest val/loss: what `export` exports) and
    `last.ckpt` (full state every `trainer.checkpoint_every` steps: what a rerun resumes from).
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from kdlite.callbacks import callbacks as run_callbacks

    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val/loss",
        mode="min",
        save_top_k=1,
        save_weights_only=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="last",
        save_top_k=1,
        monitor="step",
        mode="max",
        every_n_train_steps=max(1, int(cfg.trainer.checkpoint_every)),
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    trainer = (make_trainer or L.Trainer)(
        **trainer_arguments(cfg, accumulation),
        logger=run_files.loggers(cfg, run_dir),
        callbacks=[best, last, *run_callbacks(cfg.trainer.progress_bar, last), *callbacks],
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
    )
    return trainer, best


def _check_resources_and_device(cfg: DictConfig) -> None:
    """Every missing model/tokenizer named at once, and a study-size pair refused on a CPU, before
    anything loads; when both apply, one error says both."""
    from kdlite.parallel import refuse_study_pair_on_cpu
    from kdlite.resources import check as check_resources

    try:
        refuse_study_pair_on_cpu(cfg)
    except ConfigError as device_error:
        try:
            check_resources(cfg)
        except ModelLoadError as missing:
            raise ModelLoadError(f"{missing}\nand: {device_error}") from None
        raise
    check_resources(cfg)


def _quiet_expected_warnings() -> None:
    # Expected here, so not worth a warning: the frozen teacher is in eval mode by design, and the
    # run directory exists before the CSV logger starts (set_aside_metrics keeps the old curve).
    warnings.filterwarnings(
        "ignore", message=r".*module\(s\) in eval mode at the start of training"
    )
    warnings.filterwarnings(
        "ignore", message=r"Experiment logs directory .* exists and is not empty"
    )
    # Validation sums are reduced over ranks by the module itself before they are logged.
    warnings.filterwarnings(
        "ignore", message=r"It is recommended to use `self.log\(.*sync_dist=True"
    )
    # StepSampler skips the micro-batches a mid-epoch checkpoint already consumed (tested).
    warnings.filterwarnings(
        "ignore", message=r"You.re resuming from a checkpoint that ended before"
    )


def _teacher(cfg: DictConfig, tokenizer: Any) -> ModelSpec | None:
    """The teacher that teaches: None with lam = 0; the bootstrapped tiny teacher (trained here
    first if it is not cached yet) when the pair asks for one; else the pair's teacher."""
    if cfg.lam <= 0:
        return None
    if cfg.pair.teacher.bootstrap:
        return ModelSpec(name=str(bootstrap_teacher(cfg, tokenizer)))
    return model_spec(cfg.pair.teacher)


def bootstrap_teacher(cfg: DictConfig, tokenizer: Any) -> Path:
    """Train the tiny teacher on the data with the hard loss alone, once; return its export
    (cached under `kdlite.teacher_cache.bootstrap_home`, keyed by everything that makes it)."""
    from kdlite.teacher_cache import bootstrap_home

    home = bootstrap_home(cfg, tokenizer)
    export_dir = home / "run" / "export"
    if (export_dir / "config.json").exists():
        return export_dir
    log.info("bootstrapping the %s teacher (hard loss only, cached at %s)", cfg.pair.name, home)
    train(bootstrap_config(cfg, home / "run"))
    return export_dir


# ---- fit -------------------------------------------------------------------------------------
def fit(run: Run) -> None:
    """Train from the last checkpoint when there is one (`resume=true`), else from the start; on
    rank 0, keep the metrics curve across the resume and write manifest.json."""
    rank0 = run.trainer.is_global_zero
    ckpt_path = resume_checkpoint(run.run_dir / "checkpoints" / "last.ckpt", run.cfg.resume)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
        if rank0:
            run_files.set_aside_metrics(run.run_dir)
    if rank0:
        run_state.mark_running(run.run_dir)
    run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=ckpt_path, weights_only=True)
    if rank0:
        restored = [run.module.restored_row] if ckpt_path else []
        run_files.merge_metrics(run.run_dir, restored=restored)
        manifest = dict(
            run.datamodule.manifest, world_size=run.world, accumulation=run.accumulation
        )
        run_files.write_manifest(run.run_dir, manifest)


# ---- export ----------------------------------------------------------------------------------
def export(run: Run) -> RunResult:
    """The student of the best checkpoint -> `<run>/export` (with `export=true`); status.json
    says done, with the step reached and the weights exported."""
    from kdlite.callbacks import epochs_done
    from kdlite.export import export_trained_student

    trainer, cfg = run.trainer, run.cfg
    best_score = run.best.best_model_score
    result = RunResult(
        run.run_dir,
        None,
        float(best_score) if best_score is not None else None,
        trainer.global_step,
    )
    weights = None
    if cfg.export:
        result.export_dir, weights = export_trained_student(
            run.module, trainer, run.tokenizer, run.run_dir, run.best.best_model_path
        )
    if trainer.is_global_zero:
        run_state.mark_done(
            run.run_dir,
            step=trainer.global_step,
            epochs_done=epochs_done(trainer),
            max_steps=cfg.optim.max_steps,
            epochs=cfg.optim.epochs,
            best_val_loss=result.best_val_loss,
            weights=weights,
        )
    return result


def _finish_loggers(trainer: Any) -> None:
    """Close the W&B run so the next job of a sweep starts its own."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish()
