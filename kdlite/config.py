"""The typed schema behind every YAML file in `conf/`, and the one place that maps config to
constructor arguments.

Hydra merges the YAML onto these dataclasses at compose time, so an unknown key
(`lssp=0.5`) or a value outside a choice (`supervise=foo`, `crop=middle`) fails before anything is
loaded, with the key in the message. Numeric ranges OmegaConf cannot express (`lsp` in (0, 1],
`lam` in [0, 1], batch divisibility) are checked by `validate()`, the first thing `train()` does.
"""

import hashlib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional  # noqa: UP035 - OmegaConf 2.3 needs Optional, not `X | None`

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class Crop(str, Enum):
    left = "left"
    right = "right"


class Supervise(str, Enum):
    p_cot_a = "p_cot_a"
    cot_a = "cot_a"
    p_cot = "p_cot"
    cot = "cot"
    p_a = "p_a"
    a = "a"


class LossNorm(str, Enum):
    sequence = "sequence"
    token = "token"


class Attention(str, Enum):
    auto = "auto"
    sdpa = "sdpa"
    flex_attention = "flex_attention"
    eager = "eager"


class Strategy(str, Enum):
    auto = "auto"
    ddp = "ddp"
    fsdp = "fsdp"


class TeacherSource(str, Enum):
    online = "online"  # run the teacher forward every step
    cache = "cache"  # read top-k log-probs built by `python -m kdlite.cache_teacher` (left crops)
    auto = "auto"  # the cache where it exists and serves the run exactly, else online (sweeps)


class TeacherSharding(str, Enum):
    shard = "shard"
    replicate = "replicate"


@dataclass
class ModelConfig:
    name: Optional[str] = None  # Hub id or local folder (None when `shape` builds random weights)
    revision: Optional[str] = None
    shape: Optional[str] = None  # a key of kdlite.models.QWEN3_SHAPES
    init: str = "random"  # a shape's weights: random, or shipped (tiny): base | reasoning (teacher)
    bootstrap: bool = False  # tiny teacher: train it on the data with the hard loss first (cached)


@dataclass
class BootstrapConfig:
    """How the tiny teacher is trained before it teaches (the `lam=0` path, no teacher)."""

    epochs: int = 3
    lr: float = 3e-3
    examples_per_step: int = 16
    micro_examples: int = 16


@dataclass
class PairConfig:
    name: str = MISSING
    tokenizer: str = MISSING  # "embedded", a Hub id or a local folder
    teacher: ModelConfig = field(default_factory=ModelConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)


@dataclass
class DataConfig:
    name: str = (
        MISSING  # openthoughts | bespoke | synthetic1 | nemotron | skyt1 | jsonl | synthetic
    )
    path: Optional[str] = None  # Hub id or local file/folder; None = the dataset's Hub id
    revision: Optional[str] = None
    hf_config: Optional[str] = None
    split: str = "train"
    task_types: Optional[list[str]] = None
    train_size: int = 8000
    val_size: int = 1000
    max_tokens: int = 4096
    limit: Optional[int] = None
    synthetic_size: Optional[int] = 3000
    seed: int = 0


@dataclass
class OptimConfig:
    lr: float = 4e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    epochs: int = 2
    max_steps: int = -1  # > 0 stops early (smoke tests, benchmarks)
    fused: bool = False  # torch's fused AdamW (CUDA)


@dataclass
class BatchConfig:
    examples_per_step: int = 8  # the study's effective batch: 8 examples per optimizer step
    micro_examples: int = 1  # examples per micro-batch on one device
    # Concatenate a micro-batch into one row with isolated attention (true) or pad it (false).
    # null = auto: packed with flex_attention (GPU: block-sparse, as fast per token as full rows),
    # padded otherwise (CPU: a dense T x T mask made packed rows 2.5-4x slower than padding).
    pack: Optional[bool] = None
    attention: Attention = Attention.auto


@dataclass
class TrainerConfig:
    # "auto" (conf/trainer/auto.yaml, the default): kdlite.parallel picks cpu / gpu / fsdp from the
    # machine and fills every key below that is still "auto"; an explicit preset sets them all.
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: Strategy = Strategy.auto
    precision: str = "32-true"  # "bf16-mixed" on GPUs: fp32 master weights, bf16 compute
    teacher_dtype: str = "float32"  # "bfloat16" on GPUs: the frozen teacher needs no master copy
    allow_cpu: bool = False  # let a study-size pair (>= 0.3B parameters) run on a CPU
    teacher_sharding: TeacherSharding = TeacherSharding.shard
    activation_checkpointing: bool = False
    # torch.compile each decoder layer of both models (the lever the issue measured at 1.58x on an
    # H200 with a chunked loss); off by default: compile time dominates short CPU runs.
    compile: bool = False
    chunk_size: int = 1024  # positions per chunk of the vocabulary projection in the loss
    val_check_interval: Any = 1.0  # float = fraction of an epoch, int = optimizer steps
    log_every_n_steps: int = 1
    num_workers: int = 0
    checkpoint_every: int = 50  # optimizer steps between `last.ckpt` saves (resume points)
    num_threads: Optional[int] = None  # torch CPU threads (None = torch's default)
    progress_bar: bool = True
    deterministic: bool = False


@dataclass
class LoggerConfig:
    wandb: bool = False
    project: str = "kdlite"
    group: Optional[str] = None  # defaults to the sweep's experiment name
    mode: str = "offline"  # offline works with no network; `online` syncs live


@dataclass
class TrainConfig:
    pair: PairConfig = field(default_factory=PairConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    lsp: float = 1.0
    crop: Crop = Crop.left
    supervise: Supervise = Supervise.p_cot_a
    lam: float = 0.5
    temperature: float = 1.0
    loss_norm: LossNorm = LossNorm.sequence
    teacher: TeacherSource = TeacherSource.online
    teacher_cache_k: int = 64  # top-k log-probs per position in the cache (teacher=cache)
    seed: int = 0
    experiment: Optional[str] = (
        None  # name of the grid this run belongs to (set by conf/experiment/*)
    )
    run_dir: str = "runs/default"
    export: bool = True
    resume: bool = True  # rerunning the same command continues from checkpoints/last.ckpt


def compose_train(overrides: list[str]) -> DictConfig:
    """conf/config.yaml composed outside `@hydra.main` (the other CLIs, tests), same schema."""
    from hydra import compose, initialize_config_dir

    register_configs()
    if not any(o.startswith("run_dir=") for o in overrides):
        overrides = [*overrides, "run_dir=unused"]  # ${hydra:...} is unset outside @hydra.main
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    from kdlite.parallel import apply_hardware

    apply_hardware(cfg, refuse_cpu=False)  # `auto` trainer keys -> this machine's values
    return cfg


RUN_NAME_MAX = 120  # file systems refuse names over 255 bytes; leave room for Hydra's suffixes


def run_name(override_dirname: str) -> str:
    """Deterministic run directory name from the override set (`default` when there is none).

    A long override set (model folders, many keys) keeps its first characters and gains a hash of
    the whole, so the name stays unique, readable and under the file system's 255-byte limit.
    """
    name = override_dirname.replace("/", "_") or "default"
    if len(name.encode()) <= RUN_NAME_MAX:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    head = name.encode()[: RUN_NAME_MAX - 11].decode(errors="ignore")
    return f"{head}-{digest}"


def register_configs() -> None:
    """Register the schema and the `kdlite_run_name` resolver (idempotent)."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    if not OmegaConf.has_resolver("kdlite_run_name"):
        OmegaConf.register_new_resolver("kdlite_run_name", run_name)


class ConfigError(ValueError):
    """A config value out of range; raised before any model or data is loaded."""


def _unknown_keys(cfg: DictConfig, schema: DictConfig, prefix: str = "") -> list[str]:
    """Keys in `cfg` that the schema lacks (Hydra's `+key=` adds them past struct mode)."""
    unknown = []
    for key in cfg:
        if key not in schema.keys():  # noqa: SIM118 - `in` is False for MISSING (???) values
            unknown.append(f"{prefix}{key!s}")
        elif OmegaConf.is_dict(cfg[key]) and OmegaConf.is_dict(schema[key]):
            unknown += _unknown_keys(cfg[key], schema[key], f"{prefix}{key!s}.")
    return unknown


def validate(cfg: DictConfig | TrainConfig) -> None:
    """Range and consistency checks that the schema's types cannot express."""
    problems = []
    if isinstance(cfg, DictConfig):
        for key in _unknown_keys(cfg, OmegaConf.structured(TrainConfig)):
            problems.append(f"{key}: unknown key (not in kdlite.config.TrainConfig)")
    if not 0.0 < float(cfg.lsp) <= 1.0:
        problems.append(f"lsp={cfg.lsp}: must be in (0, 1]")
    if not 0.0 <= float(cfg.lam) <= 1.0:
        problems.append(f"lam={cfg.lam}: must be in [0, 1]")
    if float(cfg.temperature) <= 0:
        problems.append(f"temperature={cfg.temperature}: must be > 0")
    b = cfg.batch
    if b.examples_per_step < 1 or b.micro_examples < 1:
        problems.append("batch.examples_per_step and batch.micro_examples must be >= 1")
    if cfg.optim.lr <= 0:
        problems.append(f"optim.lr={cfg.optim.lr}: must be > 0")
    if not 0 <= cfg.optim.warmup_ratio < 1:
        problems.append(f"optim.warmup_ratio={cfg.optim.warmup_ratio}: must be in [0, 1)")
    if cfg.data.max_tokens < 2:
        problems.append(f"data.max_tokens={cfg.data.max_tokens}: must be >= 2")
    from kdlite.models import INITS

    for role in ("teacher", "student"):
        m = getattr(cfg.pair, role)
        if m.name is None and m.shape is None:
            problems.append(
                f"pair.{role}: set `name` (Hub id or folder) or `shape` (random weights)"
            )
        if m.init not in INITS:
            problems.append(f"pair.{role}.init={m.init}: must be one of {list(INITS)}")
        elif m.init != "random" and m.shape is not None and not str(m.shape).startswith("tiny"):
            problems.append(
                f"pair.{role}.init={m.init}: shipped weights exist for the tiny shapes only "
                f"(shape={m.shape}); load a real model with `name`"
            )
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def world_size(trainer: TrainerConfig | DictConfig) -> int:
    devices = trainer.devices
    if isinstance(devices, int):
        n = devices
    elif isinstance(devices, str) and devices.isdigit():
        n = int(devices)
    elif isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        n = len(devices)
    else:  # "auto" / -1: resolved by Lightning; counted at runtime
        import torch

        n = max(1, torch.cuda.device_count()) if trainer.accelerator != "cpu" else 1
    return n * int(trainer.num_nodes)


def accumulation(batch: BatchConfig | DictConfig, world: int) -> int:
    """Micro-batches per device per optimizer step; refuses batch sizes that do not divide."""
    per_step = batch.examples_per_step
    per_micro = batch.micro_examples * world
    if per_step % per_micro:
        raise ConfigError(
            f"batch.examples_per_step={per_step} is not a multiple of batch.micro_examples "
            f"({batch.micro_examples}) x devices ({world}); the effective batch must be exact"
        )
    return per_step // per_micro
