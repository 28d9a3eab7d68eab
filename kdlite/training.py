"""`train(cfg)`: one distillation run, from a composed config to an exported student.

Order matters for failing early: validate the config, resolve the tokenizer and both models'
sources (a typo or an offline Hub fails here, before any data or weights are loaded), then data,
then models. Every run directory describes itself (config, overrides, git revision, data
manifest, metrics, checkpoints, export) so a sweep can be compared or resumed without asking
anyone: rerunning the same command finds `checkpoints/last.ckpt` and continues from it.
"""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from kdlite import run_state
from kdlite.checkpoint import AtomicCheckpointIO, ensure_writable, resume_checkpoint
from kdlite.config import (
    ConfigError,
    accumulation,
    check_vocab_rows,
    data_spec,
    model_spec,
    validate,
    world_size,
)
from kdlite.models import DTYPES, ModelLoadError, ModelSpec
from kdlite.parallel import apply_hardware, launch_rank

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    export_dir: Path | None
    best_val_loss: float | None
    global_step: int


# ---- run directory ---------------------------------------------------------------------------
def git_revision() -> str:
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


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not running under @hydra.main (tests, library use)
        return []


def _is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return (
            hc.mode == RunMode.MULTIRUN and "basic" in str(hc.launcher.get("_target_", "")).lower()
        )
    except ValueError:
        return False


def write_run_files(run_dir: Path, cfg: DictConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (run_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(_overrides())))
    (run_dir / "git.txt").write_text(git_revision() + "\n")


# ---- sources ---------------------------------------------------------------------------------
def teacher_location(spec: ModelSpec) -> str:
    """What `evaluate.py model=...` loads for this teacher: a name, a folder, or a bare shape."""
    return str(spec.asset() or spec.name or spec.shape)


def check_tokenizers(pair: Any, tokenizer: Any, teacher: ModelSpec | None) -> None:
    """Refuse a teacher and student whose tokenizers differ, before any compute."""
    from kdlite.data.tokenizer import load_tokenizer, vocab_fingerprint

    # The id -> token map must match; EOS may differ (Qwen3-*-Base ends with <|endoftext|>).
    want = vocab_fingerprint(tokenizer)
    for role, spec in (("student", model_spec(pair.student)), ("teacher", teacher)):
        if spec is None or spec.shape is not None or not spec.name:
            continue  # random-init shapes take the pair's tokenizer
        try:
            theirs = load_tokenizer(spec.name, spec.revision)
        except Exception as err:  # noqa: BLE001 - any failure here is a resolution failure
            raise ModelLoadError(
                f"cannot load the {role}'s tokenizer {spec.name!r}: {err}"
            ) from err
        if vocab_fingerprint(theirs) != want:
            raise ConfigError(
                f"the {role} {spec.name!r} uses a different tokenizer than the pair's "
                f"({pair.tokenizer!r}); logit distillation needs one shared vocabulary"
            )


def bootstrap_teacher(cfg: DictConfig, tokenizer: Any) -> Path:
    """Train the tiny teacher on the data with the hard loss alone, once; return its export."""
    from kdlite.teacher_cache import bootstrap_home

    pair = cfg.pair
    home = bootstrap_home(cfg, tokenizer)
    export = home / "run" / "export"
    if (export / "config.json").exists():
        return export
    log.info("bootstrapping the %s teacher (hard loss only, cached at %s)", pair.name, home)
    sub = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(sub, dict)
    b = pair.bootstrap
    sub.update(lam=0.0, lsp=1.0, crop="left", supervise="p_cot_a", experiment=None, export=True)
    sub["run_dir"] = str(home / "run")
    sub["pair"]["student"] = dict(sub["pair"]["teacher"], bootstrap=False)
    sub["pair"]["teacher"]["bootstrap"] = False
    sub["optim"].update(lr=b.lr, epochs=b.epochs, max_steps=-1)
    sub["batch"].update(examples_per_step=b.examples_per_step, micro_examples=b.micro_examples)
    sub["logger"]["wandb"] = False
    from kdlite.config import TrainConfig

    sub_cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), sub)
    assert isinstance(sub_cfg, DictConfig)
    train(sub_cfg)
    return export


# ---- trainer ---------------------------------------------------------------------------------
def _strategy(cfg: DictConfig) -> Any:
    name = _enum(cfg.trainer.strategy)
    if name == "fsdp":
        from kdlite.parallel import FSDP2Strategy

        # FSDP2 (per-parameter sharding) over every rank: student and teacher are sharded
        # separately by decoder layer in DistillModule.configure_model; one consolidated
        # checkpoint file written by rank 0.
        return FSDP2Strategy()
    return name


def _loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    from lightning.pytorch.loggers import CSVLogger

    # Flushed every step: rows still in memory at a kill would be lost for good (the resumed run
    # starts after them).
    csv_logger = CSVLogger(save_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=1)
    loggers: list[Any] = [csv_logger]
    if cfg.logger.wandb:  # one W&B run per run directory, resumed by the id stored in it
        from kdlite.wandb_run import training_logger

        loggers.append(training_logger(cfg, run_dir))
    return loggers


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


def _enum(value: Any) -> str:
    return str(value.value if hasattr(value, "value") else value)


def train(cfg: DictConfig, *, callbacks: Sequence[Any] = ()) -> RunResult:
    """Build -> fit -> export. `callbacks` are added to the Trainer's (probes, tests)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from kdlite.callbacks import callbacks as run_callbacks
    from kdlite.callbacks import epochs_done, val_check_interval
    from kdlite.data.datamodule import DistillDataModule, Knobs
    from kdlite.data.packing import resolve_attention
    from kdlite.data.tokenizer import load_tokenizer
    from kdlite.module import DistillModule, LossSettings, ModelSettings, OptimSettings

    hardware = apply_hardware(cfg)
    validate(cfg)
    if hardware.message and launch_rank() == 0:
        print(hardware.message)
    if cfg.resume and (
        done := run_state.already_done(Path(cfg.run_dir), cfg.optim.max_steps, cfg.optim.epochs)
    ):
        export = Path(cfg.run_dir) / "export"
        best = done.record.get("best_val_loss")
        return RunResult(
            Path(cfg.run_dir), export if export.is_dir() else None, best, int(done.record["step"])
        )
    _check_resources_and_device(cfg)
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
    world = world_size(cfg.trainer)
    accum = accumulation(cfg.batch, world)
    if world > 1 and _is_multirun():
        raise ConfigError(
            "multirun with several devices on Hydra's basic launcher is refused: Lightning would "
            "relaunch the whole sweep once per rank. Use the Slurm launcher "
            "(`hydra/launcher=slurm`) or run the jobs one at a time."
        )
    if cfg.trainer.num_threads:
        torch.set_num_threads(int(cfg.trainer.num_threads))
    run_dir = Path(cfg.run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    tokenizer = load_tokenizer(cfg.pair.tokenizer)
    teacher: ModelSpec | None = None
    if cfg.lam > 0:
        if cfg.pair.teacher.bootstrap:
            teacher = ModelSpec(name=str(bootstrap_teacher(cfg, tokenizer)))
        else:
            teacher = model_spec(cfg.pair.teacher)
    check_tokenizers(cfg.pair, tokenizer, teacher)
    check_vocab_rows(cfg.pair, len(tokenizer), ("student", "teacher") if teacher else ("student",))

    accelerator = cfg.trainer.accelerator
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    attention = resolve_attention(_enum(cfg.batch.attention), "cuda" if gpu else "cpu")
    spec = data_spec(cfg.data)
    knobs = Knobs(
        lsp=float(cfg.lsp),
        crop=_enum(cfg.crop),
        supervise=_enum(cfg.supervise),
        examples_per_step=cfg.batch.examples_per_step,
        micro_examples=cfg.batch.micro_examples,
        pack=cfg.batch.pack if cfg.batch.pack is not None else attention == "flex_attention",
        seed=cfg.seed,
    )
    datamodule = DistillDataModule(spec, tokenizer, knobs, num_workers=cfg.trainer.num_workers)
    teacher_cache = None  # teacher=cache|auto: top-k log-probs read from disk, teacher never loaded
    if cfg.lam > 0 and _enum(cfg.teacher) != "online":
        from kdlite.teacher_cache import select_for_run

        teacher_cache = select_for_run(cfg, tokenizer, datamodule)  # None: the online teacher
    module = DistillModule(
        ModelSettings(
            student=model_spec(cfg.pair.student),
            teacher=None if teacher_cache is not None else teacher,
            teacher_cache=teacher_cache,
            teacher_dtype=DTYPES[cfg.trainer.teacher_dtype],
            attention=attention,
            activation_checkpointing=cfg.trainer.activation_checkpointing,
            compile=cfg.trainer.compile,
            teacher_sharding=_enum(cfg.trainer.teacher_sharding),
            seed=cfg.seed,
        ),
        LossSettings(
            lam=float(cfg.lam),
            temperature=float(cfg.temperature),
            loss_norm=_enum(cfg.loss_norm),
            vocab_size=len(tokenizer),
            chunk_size=cfg.trainer.chunk_size,
            divergence=_enum(cfg.loss.divergence),
            jsd_beta=float(cfg.loss.jsd_beta),
        ),
        OptimSettings(
            lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay,
            betas=tuple(cfg.optim.betas),
            warmup_ratio=cfg.optim.warmup_ratio,
            fused=cfg.optim.fused,
        ),
    )

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
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy=_strategy(cfg),
        precision=cfg.trainer.precision,
        max_epochs=cfg.optim.epochs,
        max_steps=cfg.optim.max_steps,
        accumulate_grad_batches=accum,
        gradient_clip_val=cfg.optim.grad_clip or None,
        logger=_loggers(cfg, run_dir),
        callbacks=[best, last, *run_callbacks(cfg.trainer.progress_bar, last), *callbacks],
        val_check_interval=val_check_interval(cfg.trainer.val_check_interval, accum),
        check_val_every_n_epoch=1,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        use_distributed_sampler=False,
        enable_progress_bar=cfg.trainer.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=cfg.trainer.deterministic,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
    )
    rank0 = trainer.is_global_zero  # known once the Trainer exists; files are rank 0's job
    if rank0:
        write_run_files(run_dir, cfg)
        ensure_writable(ckpt_dir)  # a multi-day run must not end with nothing saved
        if teacher is not None:  # which teacher taught (a bootstrapped one lives in the cache)
            (run_dir / "teacher.txt").write_text(f"{teacher_location(teacher)}\n")
    ckpt_path = resume_checkpoint(ckpt_dir / "last.ckpt", cfg.resume)  # vetted, weights-only
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
        if rank0:
            set_aside_metrics(run_dir)
    if rank0:
        run_state.mark_running(run_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if rank0:
        merge_metrics(run_dir, restored=[module.restored_row] if ckpt_path else [])

    best_score = best.best_model_score
    result = RunResult(
        run_dir, None, float(best_score) if best_score is not None else None, trainer.global_step
    )
    if rank0:
        manifest = dict(datamodule.manifest, world_size=world, accumulation=accum)
        (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    weights = None
    if cfg.export:
        result.export_dir, weights = _export(
            module, trainer, tokenizer, run_dir, best.best_model_path, cfg
        )
    if rank0:
        run_state.mark_done(
            run_dir,
            step=trainer.global_step,
            epochs_done=epochs_done(trainer),
            max_steps=cfg.optim.max_steps,
            epochs=cfg.optim.epochs,
            best_val_loss=result.best_val_loss,
            weights=weights,
        )
    _cleanup(trainer, module)
    return result


# Lightning's CSV logger deletes metrics.csv when it starts. On resume the curve so far is moved to
# metrics.prev.csv first and merged back after the run (also after a second interruption: the
# next resume merges whatever is there), keeping old rows only for steps before the resumed ones.
PREV_METRICS = "metrics.prev.csv"


def set_aside_metrics(run_dir: Path) -> None:
    current, prev = run_dir / "metrics.csv", run_dir / PREV_METRICS
    if current.exists():
        if prev.exists():
            merge_metrics(run_dir)
        current.replace(prev)


def merge_metrics(run_dir: Path, restored: Sequence[dict[str, float]] = ()) -> None:
    """Merge metrics.prev.csv back under metrics.csv (rank 0 only; see above).

    `restored` are step rows carried by the checkpoint a run resumed from (`DistillModule` puts
    the row of the step it saved into it): Lightning writes `last.ckpt` before that step's log
    line, so a kill in between leaves the row in neither file; it is put back from here.
    """
    import csv

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


def _student_state(module: Any, trainer: Any, best_path: str) -> dict[str, torch.Tensor]:
    """The best checkpoint's student weights (or the current ones), keyed like the HF model."""
    prefix = "student.lm."
    if best_path and Path(best_path).exists():
        if not trainer.is_global_zero:  # only rank 0 writes the export
            return {}
        # Memory-mapped: an 8B student's fp32 checkpoint is ~33 GB; only the pages used are read.
        ckpt = torch.load(best_path, map_location="cpu", weights_only=True, mmap=True)
        state = ckpt["state_dict"]
    elif trainer.world_size > 1:  # a collective: every rank takes part
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(
            module, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    else:
        state = module.state_dict()
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _export(
    module: Any, trainer: Any, tokenizer: Any, run_dir: Path, best_path: str, cfg: DictConfig
) -> tuple[Path | None, str | None]:
    """The export folder and which weights it holds (the best checkpoint, or the final weights
    and why: no validation ran, so there is no best.ckpt)."""
    from kdlite.export import export_student

    state = _student_state(module, trainer, best_path)
    if not trainer.is_global_zero:
        return None, None
    if best_path and Path(best_path).exists():
        weights = "checkpoints/best.ckpt (lowest val/loss)"
    else:
        weights = f"final weights at step {trainer.global_step} (no validation ran: no best.ckpt)"
    lm = module.student.lm
    out = export_student(
        lm,
        tokenizer,
        run_dir / "export",
        state_dict=state,
        info={"run_dir": str(run_dir), "checkpoint": weights, "git": git_revision()},
    )
    print(f"kdlite: exported the student to {out} from the {weights}")
    return out, weights


def _cleanup(trainer: Any, module: Any) -> None:
    """Free memory and finish loggers so the next job of a sweep starts clean."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish()
    del trainer, module
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
