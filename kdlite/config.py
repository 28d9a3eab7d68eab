"""The typed schema behind every YAML file in `conf/`, and the one place that maps config to
constructor arguments.

Hydra merges the YAML onto these dataclasses at compose time, so an unknown key
(`lssp=0.5`) or a value outside a choice (`supervise=foo`, `crop=middle`) fails before anything is
loaded, with the key in the message. Numeric ranges OmegaConf cannot express (`lsp` in (0, 1],
`lam` in [0, 1], batch divisibility) are checked by `validate()`, the first thing `train()` does.
"""

import hashlib
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional  # noqa: UP035 - OmegaConf 2.3 needs Optional, not `X | None`

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from kdlite.data.spec import DataSpec

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


class Divergence(str, Enum):
    """`loss.divergence`: D(teacher, student) of the KD term (docs/divergences.md)."""

    forward_kl = "forward_kl"  # KL(teacher ‖ student): the study's
    reverse_kl = "reverse_kl"  # KL(student ‖ teacher)
    jsd = "jsd"  # TRL GKD's generalized JSD with β = loss.jsd_beta (0: forward KL, 1: reverse)
    tv = "tv"  # total variation ½·Σ|p − q|


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
    cache = "cache"  # read top-k log-probs built by `kdlite.cli.cache_teacher` (left crops)
    auto = "auto"  # the cache where it exists and serves the run exactly, else online (sweeps)


class TeacherSharding(str, Enum):
    shard = "shard"
    replicate = "replicate"


@dataclass
class ModelConfig:
    name: Optional[str] = None  # Hub id or local folder (None when `shape` builds random weights)
    revision: Optional[str] = None
    shape: Optional[str] = None  # a key of kdlite.models.QWEN3_SHAPES
    # a shape's weights: random, or shipped (tiny): base | reasoning (teacher), or the restate
    # pair's base-restate | reasoning-restate (experiment=replication)
    init: str = "random"
    bootstrap: bool = False  # tiny teacher: train it on the data with the hard loss first (cached)


@dataclass
class BootstrapConfig:
    """How the tiny teacher is trained before it teaches (the `lam=0` path, no teacher)."""

    epochs: int = 3
    lr: float = 3e-3
    examples_per_step: int = 16
    micro_examples: int = 16


@dataclass
class RehearsalConfig:
    """Tiny pair only: the student also reads its base's pre-training corpus while it is
    distilled (kdlite/rehearsal.py, docs/mini-replication.md §5). rows=0: off."""

    rows: int = 0  # packed rows of base documents per optimizer step (all ranks together)
    seq_len: int = 256  # tokens per row
    weight: float = 1.0  # of their mean cross-entropy, next to the distillation loss


@dataclass
class PairConfig:
    name: str = MISSING
    tokenizer: str = MISSING  # "embedded", a Hub id or a local folder
    teacher: ModelConfig = field(default_factory=ModelConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    rehearsal: RehearsalConfig = field(default_factory=RehearsalConfig)


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
class LossConfig:
    """What the KD term measures; lam, temperature and loss_norm stay top-level keys (the study's
    grids and run names use them)."""

    divergence: Divergence = Divergence.forward_kl
    jsd_beta: float = 0.5  # read with divergence=jsd only


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
    """W&B besides the CSV curve: one W&B run per run directory (kdlite/wandb_run.py)."""

    wandb: bool = False
    project: str = "kdlite"
    entity: Optional[str] = None  # a W&B team or user; None = the account's default
    group: Optional[str] = None  # defaults to the sweep's experiment name
    tags: list[str] = field(default_factory=list)
    mode: str = "offline"  # offline works with no network; `online` syncs live


@dataclass
class TrainConfig:
    pair: PairConfig = field(default_factory=PairConfig)
    data: DataSpec = field(default_factory=lambda: DataSpec(name=MISSING))  # conf/data/*.yaml
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
    loss: LossConfig = field(default_factory=LossConfig)
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

    apply_hardware(cfg)  # `auto` trainer keys -> this machine's values
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


def _or(value: Any, default: str) -> Any:
    """`${kdlite_or:${experiment},sweep}`: `oc.select` keeps a null value; this replaces it."""
    return default if value in (None, "", "None") else value


def register_configs() -> None:
    """Register the schema and the `kdlite_run_name` / `kdlite_or` resolvers (idempotent)."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    if not OmegaConf.has_resolver("kdlite_run_name"):
        OmegaConf.register_new_resolver("kdlite_run_name", run_name)
    if not OmegaConf.has_resolver("kdlite_or"):
        OmegaConf.register_new_resolver("kdlite_or", _or)


from kdlite.errors import ConfigError  # noqa: E402 - re-exported: `kdlite.config.ConfigError`


def _unknown_keys(cfg: DictConfig, schema: DictConfig, prefix: str = "") -> list[str]:
    """Keys in `cfg` that the schema lacks (Hydra's `+key=` adds them past struct mode)."""
    unknown = []
    for key in cfg:
        if key not in schema.keys():  # noqa: SIM118 - `in` is False for MISSING (???) values
            unknown.append(f"{prefix}{key!s}")
        elif OmegaConf.is_dict(cfg[key]) and OmegaConf.is_dict(schema[key]):
            unknown += _unknown_keys(cfg[key], schema[key], f"{prefix}{key!s}.")
    return unknown


SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _numbers(cfg: DictConfig | TrainConfig) -> list[str]:
    """Every number the run divides by, multiplies with or seeds from, in its allowed range.

    NaN fails every comparison, so each float is first checked to be finite: `temperature=nan`
    would otherwise pass `> 0`-style checks and train on NaN losses to the end, exit 0.
    """
    problems = []
    floats = {
        "lsp": cfg.lsp,
        "lam": cfg.lam,
        "temperature": cfg.temperature,
        "loss.jsd_beta": cfg.loss.jsd_beta,
        "optim.lr": cfg.optim.lr,
        "optim.weight_decay": cfg.optim.weight_decay,
        "optim.warmup_ratio": cfg.optim.warmup_ratio,
        "optim.grad_clip": cfg.optim.grad_clip,
        "pair.bootstrap.lr": cfg.pair.bootstrap.lr,
        "pair.rehearsal.weight": cfg.pair.rehearsal.weight,
    }
    for i, beta in enumerate(cfg.optim.betas):
        floats[f"optim.betas[{i}]"] = beta
    bad = {key for key, value in floats.items() if not _finite(value)}
    problems += [f"{key}={floats[key]}: must be a finite number" for key in sorted(bad)]
    o = cfg.optim
    ranges = [
        ("lsp", 0.0 < float(cfg.lsp) <= 1.0, "must be in (0, 1]"),
        ("lam", 0.0 <= float(cfg.lam) <= 1.0, "must be in [0, 1]"),
        ("temperature", float(cfg.temperature) > 0, "must be > 0"),
        ("loss.jsd_beta", 0.0 <= float(cfg.loss.jsd_beta) <= 1.0, "must be in [0, 1]"),
        ("optim.lr", float(o.lr) > 0, "must be > 0"),
        ("pair.bootstrap.lr", float(cfg.pair.bootstrap.lr) > 0, "must be > 0"),
        ("pair.rehearsal.weight", float(cfg.pair.rehearsal.weight) >= 0, "must be >= 0"),
        ("optim.weight_decay", float(o.weight_decay) >= 0, "must be >= 0"),
        ("optim.warmup_ratio", 0 <= float(o.warmup_ratio) < 1, "must be in [0, 1)"),
        ("optim.grad_clip", float(o.grad_clip) >= 0, "must be >= 0 (0 = no clipping)"),
    ]
    ranges += [
        (f"optim.betas[{i}]", 0 <= float(beta) < 1, "must be in [0, 1)")
        for i, beta in enumerate(o.betas)
    ]
    problems += [
        f"{key}={floats[key]}: {rule}" for key, ok, rule in ranges if key not in bad and not ok
    ]

    ints = [
        ("batch.examples_per_step", cfg.batch.examples_per_step, 1),
        ("batch.micro_examples", cfg.batch.micro_examples, 1),
        ("data.max_tokens", cfg.data.max_tokens, 2),
        ("data.train_size", cfg.data.train_size, 1),
        ("data.val_size", cfg.data.val_size, 0),
        ("trainer.chunk_size", cfg.trainer.chunk_size, 1),
        ("trainer.num_nodes", cfg.trainer.num_nodes, 1),
        ("trainer.checkpoint_every", cfg.trainer.checkpoint_every, 1),
        ("trainer.log_every_n_steps", cfg.trainer.log_every_n_steps, 1),
        ("trainer.num_workers", cfg.trainer.num_workers, 0),
        ("teacher_cache_k", cfg.teacher_cache_k, 1),
        ("pair.bootstrap.epochs", cfg.pair.bootstrap.epochs, 1),
        ("pair.bootstrap.examples_per_step", cfg.pair.bootstrap.examples_per_step, 1),
        ("pair.bootstrap.micro_examples", cfg.pair.bootstrap.micro_examples, 1),
        ("pair.rehearsal.rows", cfg.pair.rehearsal.rows, 0),
        ("pair.rehearsal.seq_len", cfg.pair.rehearsal.seq_len, 2),
    ]
    if cfg.data.limit is not None:
        ints.append(("data.limit", cfg.data.limit, 1))
    if cfg.data.synthetic_size is not None:
        ints.append(("data.synthetic_size", cfg.data.synthetic_size, 1))
    from kdlite.data.synthetic import ANSWER_FORMS

    if cfg.data.synthetic_answer_form not in ANSWER_FORMS:
        problems.append(
            f"data.synthetic_answer_form={cfg.data.synthetic_answer_form}: must be one of "
            f"{list(ANSWER_FORMS)}"
        )
    if cfg.trainer.num_threads is not None:
        ints.append(("trainer.num_threads", cfg.trainer.num_threads, 1))
    problems += [f"{key}={value}: must be >= {low}" for key, value, low in ints if value < low]
    if o.epochs < 0 or (o.epochs == 0 and o.max_steps <= 0):
        problems.append(
            f"optim.epochs={o.epochs}: must be >= 1 (or 0 with optim.max_steps > 0); "
            "no training would export the untrained student as the run's result"
        )
    if o.max_steps == 0 or o.max_steps < -1:
        problems.append(f"optim.max_steps={o.max_steps}: must be -1 (no limit) or >= 1")
    for key, seed in (("seed", cfg.seed), ("data.seed", cfg.data.seed)):
        if not 0 <= seed <= SEED_MAX:
            problems.append(f"{key}={seed}: must be in [0, 2**32 - 1] (numpy's seed range)")
    problems += _devices(cfg.trainer.devices)
    from kdlite.models import DTYPES

    if cfg.trainer.teacher_dtype not in (*DTYPES, "auto"):  # auto: kdlite.parallel resolves it
        problems.append(
            f"trainer.teacher_dtype={cfg.trainer.teacher_dtype}: must be one of {list(DTYPES)}"
        )
    return problems


def _devices(devices: Any) -> list[str]:
    """`trainer.devices`: a count >= 1, -1 / "auto" (all visible), or a non-empty list of ids
    (a list, or a string like "0,1" as Lightning takes it)."""
    bad = [f"trainer.devices={devices}: must be >= 1, -1 (all visible), auto or a list of ids"]
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        return [] if len(devices) else bad
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return []
        if "," in text:
            ids = [part.strip() for part in text.split(",") if part.strip()]
            return [] if ids and all(i.isdigit() for i in ids) else bad
        if not text.lstrip("-").isdigit():
            return bad
    n = int(devices)
    return bad if n == 0 or n < -1 else []


def validate(cfg: DictConfig | TrainConfig) -> None:
    """Range and consistency checks that the schema's types cannot express.

    Every problem found is reported at once, each naming its key, before anything is loaded.
    """
    problems = []
    if isinstance(cfg, DictConfig):
        for key in _unknown_keys(cfg, OmegaConf.structured(TrainConfig)):
            problems.append(f"{key}: unknown key (not in kdlite.config.TrainConfig)")
    problems += _numbers(cfg)
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


def check_vocab_rows(
    pair: Any, n_tokens: int, roles: tuple[str, ...] = ("teacher", "student")
) -> None:
    """Refuse a model whose output head has fewer rows than the tokenizer has ids, before weights load.

    Known without loading: a named model's `config.json` (transformers' AutoConfig: one small file
    from the folder or the Hub cache) and the study's Qwen3 shapes (151,936 rows); the tiny shapes
    and shipped tiny weights are sized to the tokenizer. A model whose config cannot be read here is
    left to the check after loading (kdlite/module.py).
    """
    from kdlite.models import QWEN3_SHAPES

    problems = []
    for role in roles:
        m = getattr(pair, role)
        rows: int | None = None
        if m.shape is not None:
            if not str(m.shape).startswith("tiny") and m.shape in QWEN3_SHAPES:
                rows = int(QWEN3_SHAPES[m.shape]["vocab_size"])
        elif m.name:
            rows = _config_vocab_size(str(m.name), m.revision)
        if rows is not None and rows < n_tokens:
            problems.append(
                f"pair.{role} ({m.name or m.shape}): its output head has {rows} rows but the "
                f"tokenizer ({pair.tokenizer}) has {n_tokens} ids; the model cannot score every "
                "token of the data. Use a model of this tokenizer's family"
            )
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def _config_vocab_size(name: str, revision: str | None) -> int | None:
    """`vocab_size` from a model's config.json, or None when it cannot be read cheaply."""
    from transformers import AutoConfig

    try:
        local = Path(name).expanduser()
        config = AutoConfig.from_pretrained(
            str(local) if local.exists() else name, revision=revision
        )
    except Exception:  # noqa: BLE001 - unreadable here: the load itself reports it with a hint
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    rows = getattr(text, "vocab_size", None)
    return int(rows) if isinstance(rows, int) else None


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


# ---- config -> constructor arguments -------------------------------------------------------
def data_spec(d: Any) -> DataSpec:
    """The `data` node of a composed config (or a conf/data/*.yaml loaded alone) -> DataSpec.

    A node composed through the schema already is a DataSpec underneath (OmegaConf builds it
    back); a plain node is checked here, so an unknown or missing key is named either way.
    """
    if isinstance(d, DataSpec):
        return d
    node = OmegaConf.merge(OmegaConf.structured(DataSpec), d)  # unknown keys / types fail here
    spec = OmegaConf.to_object(node)
    assert isinstance(spec, DataSpec)
    return spec


def model_spec(m: Any) -> Any:
    """conf/pair/*.yaml teacher/student entry -> kdlite.models.ModelSpec."""
    from kdlite.models import ModelSpec

    return ModelSpec(name=m.name, revision=m.revision, shape=m.shape, init=m.init)


def enum_value(value: Any) -> str:
    """An enum config value (`Crop.left`) or its plain string (`"left"`) -> the string."""
    return str(value.value if hasattr(value, "value") else value)


def attention(cfg: DictConfig) -> str:
    """The attention implementation the run's models use (`batch.attention`, `auto` resolved for
    the accelerator: flex_attention on a GPU, sdpa on a CPU; kdlite.data.packing)."""
    import torch

    from kdlite.data.packing import resolve_attention

    accelerator = cfg.trainer.accelerator
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return resolve_attention(enum_value(cfg.batch.attention), "cuda" if gpu else "cpu")


def knobs(cfg: DictConfig, attention: str) -> Any:
    """The study's knobs and the batch layout -> the data module's Knobs."""
    from kdlite.data.datamodule import Knobs

    return Knobs(
        lsp=float(cfg.lsp),
        crop=enum_value(cfg.crop),
        supervise=enum_value(cfg.supervise),
        examples_per_step=cfg.batch.examples_per_step,
        micro_examples=cfg.batch.micro_examples,
        pack=cfg.batch.pack if cfg.batch.pack is not None else attention == "flex_attention",
        seed=cfg.seed,
    )


def model_settings(cfg: DictConfig, teacher: Any, teacher_cache: Any, attention: str) -> Any:
    """-> DistillModule's ModelSettings. `teacher` is the ModelSpec of the teacher that runs
    online (None: lam = 0, or its targets come from `teacher_cache`)."""
    from kdlite.models import DTYPES
    from kdlite.module import ModelSettings

    return ModelSettings(
        student=model_spec(cfg.pair.student),
        teacher=teacher,
        teacher_cache=teacher_cache,
        teacher_dtype=DTYPES[cfg.trainer.teacher_dtype],
        attention=attention,
        activation_checkpointing=cfg.trainer.activation_checkpointing,
        compile=cfg.trainer.compile,
        teacher_sharding=enum_value(cfg.trainer.teacher_sharding),
        seed=cfg.seed,
    )


def loss_settings(cfg: DictConfig, vocab_size: int) -> Any:
    """-> DistillModule's LossSettings (`vocab_size`: the tokenizer's length)."""
    from kdlite.module import LossSettings

    return LossSettings(
        lam=float(cfg.lam),
        temperature=float(cfg.temperature),
        loss_norm=enum_value(cfg.loss_norm),
        vocab_size=vocab_size,
        chunk_size=cfg.trainer.chunk_size,
        divergence=enum_value(cfg.loss.divergence),
        jsd_beta=float(cfg.loss.jsd_beta),
    )


def optim_settings(cfg: DictConfig) -> Any:
    """`optim` -> DistillModule's OptimSettings (grad_clip and the stop condition go to the Trainer)."""
    from kdlite.module import OptimSettings

    return OptimSettings(
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        betas=tuple(cfg.optim.betas),
        warmup_ratio=cfg.optim.warmup_ratio,
        fused=cfg.optim.fused,
    )


def trainer_arguments(cfg: DictConfig, accumulation: int) -> dict[str, Any]:
    """`trainer`, `optim` -> lightning.Trainer's keyword arguments, all but the run's own objects
    (callbacks, loggers, plugins, root folder; kdlite.training.build_trainer adds those)."""
    from kdlite.callbacks import val_check_interval
    from kdlite.parallel import strategy

    t, o = cfg.trainer, cfg.optim
    return {
        "accelerator": t.accelerator,
        "devices": t.devices,
        "num_nodes": t.num_nodes,
        "strategy": strategy(enum_value(t.strategy)),
        "precision": t.precision,
        "max_epochs": o.epochs,
        "max_steps": o.max_steps,
        "accumulate_grad_batches": accumulation,
        "gradient_clip_val": o.grad_clip or None,
        "val_check_interval": val_check_interval(t.val_check_interval, accumulation),
        "check_val_every_n_epoch": 1,
        "log_every_n_steps": t.log_every_n_steps,
        "use_distributed_sampler": False,  # the data module's StepSampler shards by rank
        "enable_progress_bar": t.progress_bar,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "deterministic": t.deterministic,
    }


def bootstrap_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The run that trains the tiny teacher of `cfg` before it teaches (`pair.teacher.bootstrap`):
    the teacher's spec as the student, the hard loss alone on the full trace, the pair's
    `bootstrap` recipe, in `run_dir`, exported, no W&B, no rehearsal (that is the student's)."""
    sub = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(sub, dict)
    b = cfg.pair.bootstrap
    sub.update(lam=0.0, lsp=1.0, crop="left", supervise="p_cot_a", experiment=None, export=True)
    sub["run_dir"] = str(run_dir)
    sub["pair"]["student"] = dict(sub["pair"]["teacher"], bootstrap=False)
    sub["pair"]["teacher"]["bootstrap"] = False
    sub["pair"]["rehearsal"]["rows"] = 0
    sub["optim"].update(lr=b.lr, epochs=b.epochs, max_steps=-1)
    sub["batch"].update(examples_per_step=b.examples_per_step, micro_examples=b.micro_examples)
    sub["logger"]["wandb"] = False
    merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), sub)
    assert isinstance(merged, DictConfig)
    return merged
