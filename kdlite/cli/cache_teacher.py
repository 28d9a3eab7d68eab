"""`python -m kdlite.cli.cache_teacher [train overrides ...] k=64`: build the teacher logit cache.

Composes `conf/config.yaml` with the same overrides a training run takes (`pair=...`, `data=...`,
`temperature=...`, `trainer=gpu`), renders the data through `DistillDataModule` (same cache of
rendered rows, same train/val selection), runs the teacher once over every full-length row and
writes the top-k cache (`kdlite.teacher_cache`), first printing what it will write (examples,
tokens, bytes). Its own keys (every other key=value is a train.py override):
- `k=64`, `logprob_dtype=float16`: what is stored (6·k + 8 bytes per token at fp16);
- `batch_tokens=16384`: rows × longest row per teacher forward; `shard_tokens=1048576`:
  positions per shard file, the unit of parallel work and of resumption;
- `processes=auto`: one process per visible GPU (1 without CUDA), started through
  `torch.distributed.run`; each holds a whole teacher (`device=auto`: its own GPU) and writes its
  own shards. Under a launcher of your own (`torchrun ... -m kdlite.cli.cache_teacher`, Slurm) the
  launcher's ranks are used;
- `dry_run=true`: print the estimate and the cache folder, load no teacher, write nothing;
- `progress=true`: a tqdm bar on rank 0 (tokens/s, ETA).
An interrupted build resumes at its first missing shard when the same command is run again.
For `pair.teacher.bootstrap=true` (tiny pairs) the teacher is the bootstrapped one
(`kdlite.training.bootstrap_teacher`, trained once and cached, before any process starts). One
forward per row instead of one per row per run: a sweep of n runs over the same (teacher, data)
saves n − 1 teacher forwards per token. Training reads the cache with `teacher=cache` (required)
or `teacher=auto` (used where it exists and is exact, else the online teacher): `select_for_run`.

Example: `python -m kdlite.cli.cache_teacher pair=8b_4b data=bespoke trainer=gpu k=64 dry_run=true`
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from kdlite.cli._args import arg, argv_or_sys, compose_errors, parse
from kdlite.config import compose_train
from kdlite.teacher_cache import (  # the run-side functions live in the library
    MANIFEST,
    SHARD_TOKENS,
    CacheError,
    Estimate,
    cache_folder,
    cache_rows,
    cache_spec,
    estimate,
    full_row_datamodule,
    load_teacher,
    partial_status,
    teacher_path,
)

log = logging.getLogger(__name__)

PROG = "python -m kdlite.cli.cache_teacher"


@dataclass
class Keys:
    k: int = arg(64, "top-k log-probs stored per position")
    logprob_dtype: str = arg("float16", "dtype of the stored log-probs (6·k + 8 B/token at fp16)")
    batch_tokens: int = arg(16_384, "rows × longest row per teacher forward")
    shard_tokens: int = arg(SHARD_TOKENS, "positions per shard file (unit of work and resumption)")
    device: str = arg("auto", "auto: each process's own GPU, else cpu | a torch device")
    processes: str = arg("auto", "auto: one per visible GPU (1 without CUDA) | N")
    dry_run: bool = arg(False, "print the estimate and the cache folder; load and write nothing")
    progress: bool = arg(True, "a tqdm bar on rank 0 (tokens/s, ETA)")


def split_args(argv: list[str]) -> tuple[Keys, list[str]]:
    """This program's keys vs the `train.py` overrides it composes the run config from."""
    return parse(
        Keys, argv, prog=PROG, doc=__doc__, rest=lambda key: True,
        rest_help="Other key=value words are train.py overrides (python train.py --help).",
    )  # fmt: skip


def _estimate(datamodule: Any, own: Keys) -> Estimate:
    lengths = [len(ids) for _, ids in cache_rows(datamodule)]
    return estimate(lengths, own.k, own.logprob_dtype, own.shard_tokens)


def ready_teacher(cfg: DictConfig, tokenizer: Any) -> tuple[str, str | None]:
    """The teacher's (name or folder, revision), training the tiny bootstrapped teacher first when
    the pair asks for one and it is not built yet (the program may train; the library may not)."""
    if cfg.pair.teacher.bootstrap:
        from kdlite.training import bootstrap_teacher

        bootstrap_teacher(cfg, tokenizer)
    return teacher_path(cfg, tokenizer)


def dry_run(cfg: DictConfig, own: Keys) -> Estimate:
    """Print what a build would write and where; no teacher is loaded, nothing is written."""
    from kdlite.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.pair.tokenizer)
    dm = full_row_datamodule(cfg, tokenizer)
    est = _estimate(dm, own)
    if cfg.pair.teacher.bootstrap:  # its fingerprint needs the trained teacher
        where = "its folder is named once the bootstrapped teacher exists"
    else:
        folder = cache_folder(
            cache_spec(cfg, tokenizer, dm, own.k, own.logprob_dtype), cfg.pair.name
        )
        state = "built" if (folder / MANIFEST).exists() else partial_status(folder) or "not built"
        where = f"at {folder} ({state})"
    print(f"kdlite: teacher cache (dry run, k={own.k}): {est.describe()}; {where}")
    return est


def processes(value: str) -> int:
    """`processes=auto|N`: auto = one per visible CUDA device, 1 without CUDA."""
    if value == "auto":
        return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1
    if not value.isdigit() or int(value) < 1:
        raise CacheError(f"processes={value}: must be auto or a positive integer")
    return int(value)


def _launch(argv: list[str], n: int) -> None:
    """Run this command again as n processes under torch.distributed.run (one node)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={n}", "-m", "kdlite.cli.cache_teacher", *argv]
    print(f"kdlite: teacher cache: starting {n} processes", flush=True)
    done = subprocess.run(cmd, check=False)
    if done.returncode:
        raise CacheError(
            f"the {n}-process teacher cache build failed (exit {done.returncode}); the shards "
            "it completed are kept: run the same command again to resume"
        )


def build(cfg: DictConfig, own: Keys) -> Path:
    """Build (or find) the cache; every rank of a torch.distributed launch calls this."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    started = False
    if world > 1 and not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        # Ranks wait for each other only at the start and the end; uneven shares can take hours.
        torch.distributed.init_process_group(backend, timeout=timedelta(hours=12))
        started = True
    try:
        return _build(cfg, own, rank, world, local_rank)
    finally:
        if started:
            torch.distributed.destroy_process_group()


def _build(cfg: DictConfig, own: Keys, rank: int, world: int, local_rank: int) -> Path:
    from kdlite.data.tokenizer import load_tokenizer
    from kdlite.models import DTYPES
    from kdlite.teacher_cache import build_cache

    if cfg.trainer.num_threads:
        torch.set_num_threads(int(cfg.trainer.num_threads))
    tokenizer = load_tokenizer(cfg.pair.tokenizer)
    if world > 1 and rank != 0:
        torch.distributed.barrier()  # rank 0 renders the data (and bootstraps a teacher) first
    if rank == 0:
        ready_teacher(cfg, tokenizer)
    dm = full_row_datamodule(cfg, tokenizer)
    spec = cache_spec(cfg, tokenizer, dm, own.k, own.logprob_dtype)
    if world > 1 and rank == 0:
        torch.distributed.barrier()
    folder = cache_folder(spec, cfg.pair.name)
    if (folder / MANIFEST).exists():
        if rank == 0:
            print(f"kdlite: teacher cache already built at {folder}")
        return folder
    est = _estimate(dm, own)
    name, revision = teacher_path(cfg, tokenizer)
    if rank == 0:
        print(f"kdlite: teacher cache of {name} (k={spec.k}, τ={spec.temperature}) at {folder}: "
              f"{est.describe()}", flush=True)  # fmt: skip
    device = own.device
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    teacher = load_teacher(name, revision, len(tokenizer), DTYPES[cfg.trainer.teacher_dtype])
    teacher = teacher.to(device)
    t0 = time.perf_counter()
    build_cache(
        teacher, cache_rows(dm), folder, spec, batch_tokens=own.batch_tokens,
        chunk_size=int(cfg.trainer.chunk_size), shard_tokens=own.shard_tokens, device=device,
        rank=rank, world=world, progress=own.progress,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if rank == 0:
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(
            f"kdlite: cached {est.examples} rows / {est.tokens:,} tokens of {name} (k={spec.k}) "
            f"at {folder} in {seconds:.1f} s over {world} process(es): {size / 2**20:,.1f} MiB, "
            f"{size / max(1, est.tokens):.0f} B/token"
        )
    return folder


def main(argv: list[str] | None = None) -> Path | Estimate:
    """The CLI: the cache folder (built or found), or the estimate of a dry run."""
    argv = argv_or_sys(argv)
    own, overrides = split_args(argv)
    with compose_errors(PROG):
        cfg = compose_train(overrides)
    if own.dry_run:
        return dry_run(cfg, own)
    n = processes(own.processes)
    if n > 1 and "WORLD_SIZE" not in os.environ:
        from kdlite.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(cfg.pair.tokenizer)  # data and teacher, once, before the ranks
        ready_teacher(cfg, tokenizer)
        full_row_datamodule(cfg, tokenizer)
        _launch(argv, n)
    return build(cfg, own)


if __name__ == "__main__":
    main()
