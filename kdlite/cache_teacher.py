"""`python -m kdlite.cache_teacher [train overrides ...] k=64`: build the teacher logit cache.

Composes `conf/config.yaml` with the same overrides a training run takes (`pair=...`, `data=...`,
`temperature=...`, `trainer=gpu`), renders the data through `DistillDataModule` (same cache of
rendered rows, same train/val selection), runs the teacher once over every full-length row and
writes the top-k cache (`kdlite.teacher_cache`). Own options (key=value, not part of the train
config): `k=64`, `logprob_dtype=float16`, `batch_tokens=16384`, `device=auto`.
For `pair=tiny` the teacher is the bootstrapped one (`kdlite.training.bootstrap_teacher`, trained
once and cached). One forward per row instead of one per row per run: a sweep of n runs over the
same (teacher, data) saves n − 1 teacher forwards per token, at 6·k + 8 bytes per token of disk.

Example: `python -m kdlite.cache_teacher pair=8b_4b data=bespoke trainer=gpu k=64`
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from kdlite.cache import cache_root
from kdlite.config import compose_train
from kdlite.teacher_cache import CacheError, CacheSpec, TeacherCache, teacher_fingerprint

OWN_DEFAULTS: dict[str, Any] = {
    "k": 64,
    "logprob_dtype": "float16",
    "batch_tokens": 16_384,
    "device": "auto",
}


def split_args(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Own `key=value` options vs Hydra overrides for the train config."""
    own = dict(OWN_DEFAULTS)
    rest = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in OWN_DEFAULTS:
            own[key] = type(OWN_DEFAULTS[key])(value)
        else:
            rest.append(arg)
    return own, rest


def full_row_datamodule(cfg: DictConfig, tokenizer: Any):
    """The run's data module with lsp = 1 and a left crop: every example's full rendered row."""
    from kdlite.data.datamodule import DistillDataModule, Knobs
    from kdlite.training import data_spec

    spec = data_spec(cfg.data)
    dm = DistillDataModule(spec, tokenizer, Knobs(lsp=1.0, crop="left", examples_per_step=1))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def teacher_path(cfg: DictConfig, tokenizer: Any) -> tuple[str, str | None]:
    """(name or folder, revision) of the teacher; refuses random-weight teachers."""
    from kdlite.training import bootstrap_teacher, model_spec

    t = cfg.pair.teacher
    if t.bootstrap:
        return str(bootstrap_teacher(cfg, tokenizer)), None
    if t.shape is not None and t.init == "random":
        raise CacheError(
            f"pair.teacher.shape={t.shape} is a random-weight teacher: nothing stable to cache"
        )
    if (folder := model_spec(t).asset()) is not None:
        return str(folder), None
    return str(t.name), t.revision


def cache_spec(
    cfg: DictConfig, tokenizer: Any, datamodule: Any, k: int, logprob_dtype: str = "float16"
) -> CacheSpec:
    name, revision = teacher_path(cfg, tokenizer)
    return CacheSpec(
        teacher=teacher_fingerprint(name, revision),
        data=Path(datamodule.cache_path).stem,
        k=int(k),
        temperature=float(cfg.temperature),
        vocab_size=len(tokenizer),
        logprob_dtype=logprob_dtype,
        teacher_dtype=str(cfg.trainer.teacher_dtype),
    )


def cache_folder(spec: CacheSpec, pair_name: str) -> Path:
    return cache_root() / "teacher_logits" / f"{pair_name}-{spec.key}"


def open_for_run(
    cfg: DictConfig, tokenizer: Any, datamodule: Any, k: int, logprob_dtype: str = "float16"
) -> TeacherCache:
    """The cache a training run reads, checked against the run's crop and temperature."""
    spec = cache_spec(cfg, tokenizer, datamodule, k, logprob_dtype)
    folder = cache_folder(spec, cfg.pair.name)
    if not (folder / "index.json").exists():
        raise CacheError(
            f"no teacher cache for this (teacher, data, k={k}, temperature={cfg.temperature}) at "
            f"{folder}; build it once with `python -m kdlite.cache_teacher <the run's overrides> "
            f"k={k}`"
        )
    cache = TeacherCache(folder)
    cache.check_run(
        lsp=float(cfg.lsp), crop=str(getattr(cfg.crop, "value", cfg.crop)),
        temperature=float(cfg.temperature), spec=spec,
    )  # fmt: skip
    return cache


def load_teacher(name: str, revision: str | None, vocab_size: int, dtype: torch.dtype):
    from kdlite.models import HiddenLM, ModelSpec, load_model

    lm = load_model(ModelSpec(name=name, revision=revision), vocab_size=vocab_size, dtype=dtype)
    return HiddenLM(lm.eval().requires_grad_(False))


def build(cfg: DictConfig, own: dict[str, Any]) -> Path:
    from kdlite.data.tokenizer import load_tokenizer
    from kdlite.models import DTYPES
    from kdlite.teacher_cache import build_cache

    tokenizer = load_tokenizer(cfg.pair.tokenizer)
    dm = full_row_datamodule(cfg, tokenizer)
    spec = cache_spec(cfg, tokenizer, dm, own["k"], own["logprob_dtype"])
    folder = cache_folder(spec, cfg.pair.name)
    if (folder / "index.json").exists():
        print(f"kdlite: teacher cache already built at {folder}")
        return folder
    device = own["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    name, revision = teacher_path(cfg, tokenizer)
    dtype = DTYPES[cfg.trainer.teacher_dtype]
    teacher = load_teacher(name, revision, len(tokenizer), dtype).to(device)
    items = [*dm.train_items, *dm.val_items]
    rows = [(it.source_id, it.input_ids) for it in items]
    build_cache(
        teacher, rows, folder, spec, batch_tokens=own["batch_tokens"],
        chunk_size=int(cfg.trainer.chunk_size), device=device,
    )  # fmt: skip
    n_tokens = sum(len(r) for _, r in rows)
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(
        f"kdlite: cached {len(rows)} rows / {n_tokens:,} tokens of {name} (k={spec.k}) at "
        f"{folder}: {size / 2**20:,.1f} MiB, {size / max(1, n_tokens):.0f} B/token"
    )
    return folder


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        sys.exit(0)
    own, overrides = split_args(argv)
    return build(compose_train(overrides), own)


if __name__ == "__main__":
    main()
