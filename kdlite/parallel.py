"""Devices: which hardware a run uses, and the FSDP2 strategy that spreads it over several.

`resolve_hardware(trainer_cfg, pair_cfg)` turns the `auto` trainer preset into a concrete one from
what the machine has (no GPU: the CPU preset; one GPU: bf16 on it; several: FSDP2 over all of
them), says so in one line, and refuses a study-size pair on a CPU unless told otherwise. Explicit
presets (`trainer=cpu|gpu|fsdp`) are kept as they are.

`FSDP2Strategy` is Lightning's `ModelParallelStrategy` with a pure data-parallel mesh: every rank
of every node is one shard of the data-parallel dimension (tensor parallel size 1). Lightning's
own `"auto"` sets the data-parallel size to the number of *nodes*, so on one 8-GPU node it asks for
1 x 1 = 1 rank out of 8 and stops before a model loads. The memory arithmetic of this layout is in
docs/memory.md.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy

from kdlite.errors import ConfigError

log = logging.getLogger(__name__)


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 (`fully_shard`) over all ranks: data-parallel size = world size, no tensor parallel.

    One consolidated checkpoint file written by rank 0 (`save_distributed_checkpoint=False`), so a
    run resumes on any number of devices and exports without a conversion step. The module decides
    what is sharded (`DistillModule.configure_model`); the frozen teacher is not a submodule, so
    checkpoints never gather it.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=False,
            **kwargs,
        )

    def setup_environment(self) -> None:
        # num_processes is this node's device count; the mesh spans every node.
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()


# ---- hardware --------------------------------------------------------------------------------
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "accelerator": "cpu",
        "devices": 1,
        "strategy": "auto",
        "precision": "32-true",
        "teacher_dtype": "float32",
        "val_check_interval": 1.0,
    },
    "gpu": {
        "accelerator": "gpu",
        "devices": 1,
        "strategy": "auto",
        "precision": "bf16-mixed",
        "teacher_dtype": "bfloat16",
        "val_check_interval": 0.25,
    },
    "fsdp": {
        "accelerator": "gpu",
        "devices": None,  # all visible GPUs
        "strategy": "fsdp",
        "precision": "bf16-mixed",
        "teacher_dtype": "bfloat16",
        "val_check_interval": 0.25,
    },
}

# A model at or above this many parameters is "study size": hours per step on a CPU.
CPU_PARAM_LIMIT = 300_000_000


@dataclass(frozen=True)
class Hardware:
    preset: str  # cpu | gpu | fsdp
    settings: dict[str, Any]  # the trainer keys that were `auto`, with their values
    message: str  # the line printed when the machine chose (accelerator=auto); else empty


def _plain(value: Any) -> str:
    return str(getattr(value, "value", value))  # Enum members (the schema's) by their value


def launch_rank() -> int:
    """This process's global rank before a Trainer exists (the launchers' environment variables)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def choose_preset(n_gpus: int) -> str:
    return "cpu" if n_gpus == 0 else "gpu" if n_gpus == 1 else "fsdp"


def resolve_hardware(trainer: Any, n_gpus: int | None = None) -> Hardware:
    """The trainer settings that the keys still at `auto` stand for on this machine.

    `accelerator=auto` picks the preset from the GPU count; an explicit accelerator picks its own
    (cpu; gpu, or fsdp when `strategy=fsdp`). Only keys still at `auto` are set, so
    `trainer.precision=32-true` with the auto preset keeps fp32.
    """
    accelerator = str(trainer.accelerator)
    n = gpu_count() if n_gpus is None else n_gpus
    if accelerator == "auto":
        preset = choose_preset(n)
    elif accelerator == "cpu":
        preset = "cpu"
    else:
        preset = (
            "fsdp" if str(getattr(trainer.strategy, "value", trainer.strategy)) == "fsdp" else "gpu"
        )
    settings = {
        key: (max(1, n) if value is None else value)
        for key, value in PRESETS[preset].items()
        if _plain(trainer.get(key, "auto")) == "auto"
    }
    if accelerator != "auto":
        return Hardware(preset, settings, "")
    what = {
        "cpu": "no CUDA GPU found: CPU, fp32 (trainer=cpu)",
        "gpu": "1 CUDA GPU: bf16 mixed precision on it (trainer=gpu)",
        "fsdp": f"{n} CUDA GPUs: FSDP2 over all of them, bf16 mixed precision (trainer=fsdp)",
    }[preset]
    return Hardware(preset, settings, f"kdlite: hardware: {what}; choose with trainer=cpu|gpu|fsdp")


def apply_hardware(cfg: Any, n_gpus: int | None = None) -> Hardware:
    """Fill the `auto` trainer keys in place (see `resolve_hardware`). Whether the result may
    train the pair is `refuse_study_pair_on_cpu`'s call (`train()` asks it)."""
    from omegaconf import open_dict

    hw = resolve_hardware(cfg.trainer, n_gpus)
    with open_dict(cfg):
        for key, value in hw.settings.items():
            cfg.trainer[key] = value
    return hw


def refuse_study_pair_on_cpu(cfg: Any) -> None:
    """ConfigError when the run would train a study-size pair on a CPU without
    `trainer.allow_cpu=true`."""
    if str(cfg.trainer.accelerator) != "cpu" or cfg.trainer.allow_cpu:
        return
    big = study_size_models(cfg.pair)
    if big:
        raise ConfigError(
            f"pair={cfg.pair.name} is study-sized ({'; '.join(big)}) and would train on a "
            "CPU (no CUDA GPU was found, or trainer=cpu was chosen): run it on GPUs, or set "
            "trainer.allow_cpu=true to try anyway"
        )


def strategy(name: str) -> Any:
    """`trainer.strategy` -> Lightning's `strategy` argument. `fsdp` is FSDP2 (per-parameter
    sharding) over every rank: student and teacher are sharded separately by decoder layer in
    DistillModule.configure_model; one consolidated checkpoint file written by rank 0."""
    return FSDP2Strategy() if name == "fsdp" else name


def _is_basic_multirun() -> bool:
    """Running under `--multirun` with Hydra's basic (in-process) launcher."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return (
            hc.mode == RunMode.MULTIRUN and "basic" in str(hc.launcher.get("_target_", "")).lower()
        )
    except ValueError:  # not running under @hydra.main (tests, library use)
        return False


def refuse_multirun_on_devices(world: int) -> None:
    """ConfigError for a multi-device run inside a basic-launcher sweep."""
    if world > 1 and _is_basic_multirun():
        raise ConfigError(
            "multirun with several devices on Hydra's basic launcher is refused: Lightning would "
            "relaunch the whole sweep once per rank. Use the Slurm launcher "
            "(`hydra/launcher=slurm`) or run the jobs one at a time."
        )


_SIZE_IN_NAME = re.compile(r"(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])")


def model_parameters(model: Any) -> int | None:
    """Parameter count of a model config entry (shape, local folder or a Hub name), if knowable."""
    from kdlite.models import QWEN3_SHAPES

    if model.shape is not None:
        if str(model.shape).startswith("tiny"):
            return 0
        return approx_parameters(QWEN3_SHAPES.get(str(model.shape), {}))
    if not model.name:
        return None
    config = Path(str(model.name)).expanduser() / "config.json"
    if config.is_file():
        try:
            return approx_parameters(json.loads(config.read_text()))
        except (OSError, ValueError):
            return None
    match = _SIZE_IN_NAME.search(str(model.name).rsplit("/", 1)[-1])
    return int(float(match.group(1)) * 1e9) if match else None


def approx_parameters(c: dict[str, Any]) -> int | None:
    """Decoder-only transformer parameters from an HF config dict (Qwen3/Llama layout)."""
    try:
        h, n_layers, v = int(c["hidden_size"]), int(c["num_hidden_layers"]), int(c["vocab_size"])
        inter = int(c["intermediate_size"])
        heads, kv = int(c["num_attention_heads"]), int(c.get("num_key_value_heads", 0) or 0)
    except (KeyError, TypeError, ValueError):
        return None
    d = int(c.get("head_dim") or h // heads)
    kv = kv or heads
    attn = h * d * heads * 2 + h * d * kv * 2
    per_layer = attn + 3 * h * inter + 2 * h + 2 * d
    head = 0 if c.get("tie_word_embeddings", False) else v * h
    return n_layers * per_layer + v * h + head + h


def study_size_models(pair: Any) -> list[str]:
    out = []
    for role in ("teacher", "student"):
        m = getattr(pair, role)
        n = model_parameters(m)
        if n is not None and n >= CPU_PARAM_LIMIT:
            out.append(f"{role} {m.name or m.shape} ~{n / 1e9:.1f}B parameters")
    return out
