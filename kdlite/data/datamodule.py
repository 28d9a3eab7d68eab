"""`DistillDataModule`: the Lightning adapter that serves crops, labels and packed micro-batches.

Work split: `prepare_data` (once per node) loads the source, renders every example with the
tokenizer, applies the length filter and the seeded train/val selection, and caches the token ids
and section ids as one `.npz` keyed by the data config, the tokenizer fingerprint and the content
read (file hashes or the Hub commit: `sources.source_content`, recorded in the manifest): 40k
OpenThoughts examples are rendered once, not once per rank or per run of a sweep. `setup` applies
the run's own knobs (`lsp`, `crop`, `supervise`), which are cheap.

`StepSampler` decides which examples share an optimizer step (seeded shuffle per epoch), splits the
step into `world x accumulation` micro-batches and gives every rank the same number of batches
(FSDP's collectives need it). Each micro-batch carries its step's global counts (`step_examples`,
`step_tokens`) so the loss can be normalised exactly however the step is split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from kdlite.data.example import DataError
from kdlite.data.packing import pack, pad_collate
from kdlite.data.spec import DataSpec
from kdlite.data.supervision import IGNORE_INDEX, Supervised, supervise
from kdlite.paths import cache_root

log = logging.getLogger(__name__)

CACHE_VERSION = "1"


@dataclass(frozen=True)
class Knobs:
    """The study's two knobs plus batching."""

    lsp: float = 1.0
    crop: str = "left"
    supervise: str = "p_cot_a"
    examples_per_step: int = 8
    micro_examples: int = 1
    pack: bool = True
    seed: int = 0


@dataclass(frozen=True)
class Key:
    """One example's place in a micro-batch, with the global counts of its optimizer step."""

    index: int
    step_examples: int
    step_tokens: int
    dummy: bool = False  # padding so every rank runs the same number of batches; zero weight


class StepSampler:
    """Batch sampler over optimizer steps; see the module docstring."""

    def __init__(
        self,
        n_supervised: Sequence[int],
        *,
        examples_per_step: int,
        micro_examples: int,
        world: int = 1,
        rank: int = 0,
        seed: int = 0,
        train: bool = True,
    ) -> None:
        if examples_per_step % (micro_examples * world) and train:
            raise DataError(
                f"examples_per_step={examples_per_step} must be a multiple of micro_examples "
                f"({micro_examples}) x world size ({world})"
            )
        self.n_supervised = list(n_supervised)
        self.examples_per_step = examples_per_step
        self.micro_examples = micro_examples
        self.world = world
        self.rank = rank
        self.seed = seed
        self.train = train
        self.epoch = 0
        self.skip = 0  # micro-batches of this rank to skip once (resuming mid-epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> StepSampler:
        # Lightning calls `set_epoch` on `loader.sampler` and on `loader.batch_sampler.sampler`,
        # never on the batch sampler itself: exposing ourselves there gives every epoch its own
        # seeded order (without it epoch 2 repeated epoch 1's order and step groupings).
        return self

    @property
    def accumulation(self) -> int:
        return self.examples_per_step // (self.micro_examples * self.world)

    def _steps(self) -> list[list[int]]:
        n = len(self.n_supervised)
        if not self.train:  # validation: one "step" per example, so sums are per-example means
            return [[i] for i in range(n)]
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n).tolist()
        n_steps = n // self.examples_per_step  # a trailing partial step is dropped (logged once)
        return [
            order[s * self.examples_per_step : (s + 1) * self.examples_per_step]
            for s in range(n_steps)
        ]

    def _micro_batches(self) -> list[list[Key]]:
        if not self.train:
            keys = [Key(i, 1, max(1, self.n_supervised[i])) for i in range(len(self.n_supervised))]
            per_rank = math.ceil(len(keys) / (self.micro_examples * self.world))
            total = per_rank * self.micro_examples * self.world
            keys += [replace(keys[0], dummy=True)] * (total - len(keys))
            chunks = [
                keys[j : j + self.micro_examples] for j in range(0, total, self.micro_examples)
            ]
            return chunks[self.rank :: self.world]
        mine: list[list[Key]] = []
        for step in self._steps():
            counts = [self.n_supervised[i] for i in step]
            step_examples = sum(1 for c in counts if c > 0)
            step_tokens = sum(counts)
            keys = [Key(i, step_examples, step_tokens) for i in step]
            chunks = [
                keys[j : j + self.micro_examples] for j in range(0, len(keys), self.micro_examples)
            ]
            mine.extend(chunks[self.rank :: self.world])
        return mine

    def __iter__(self) -> Iterator[list[Key]]:
        batches = self._micro_batches()
        skip, self.skip = self.skip, 0
        yield from batches[skip:]

    def __len__(self) -> int:
        if not self.train:
            return math.ceil(len(self.n_supervised) / (self.micro_examples * self.world))
        return (len(self.n_supervised) // self.examples_per_step) * self.accumulation


class _Items(Dataset):
    def __init__(self, items: Sequence[Supervised]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Key) -> tuple[Supervised, Key]:
        item = self.items[key.index]
        if key.dummy:
            item = replace(item, labels=[IGNORE_INDEX] * len(item.labels))
        return item, key


class Collate:
    def __init__(self, packed: bool, pad_id: int) -> None:
        self.packed = packed
        self.pad_id = pad_id

    def __call__(self, rows: list[tuple[Supervised, Key]]) -> dict[str, Any]:
        items = [item for item, _ in rows]
        batch: dict[str, Any] = dict(
            pack(items) if self.packed else pad_collate(items, self.pad_id)
        )
        key = rows[0][1]
        batch["step_examples"] = key.step_examples
        batch["step_tokens"] = key.step_tokens
        batch["n_weighted_examples"] = sum(
            1 for item, k in rows if not k.dummy and item.n_supervised > 0
        )
        batch["source_ids"] = [item.source_id for item, k in rows if not k.dummy]
        return batch


def cache_key(spec: DataSpec, tokenizer_fp: str, content: dict[str, Any] | None = None) -> str:
    """Key of the tokenised cache: the data config, the tokenizer and the content that was read
    (`sources.source_content`: file hashes or the Hub commit), so a data file edited in place or a
    new Hub revision is never served from the old cache."""
    what = {k: v for k, v in (content or {}).items() if k != "files"}  # mtimes: manifest only
    blob = json.dumps(
        {"spec": asdict(spec), "tok": tokenizer_fp, "content": what, "v": CACHE_VERSION},
        sort_keys=True,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _save_rendered(path: Path, train: Sequence[Any], val: Sequence[Any], manifest: dict) -> None:
    def flat(items: Sequence[Any]) -> dict[str, np.ndarray]:
        lengths = np.array([len(r.input_ids) for r in items], dtype=np.int64)
        ids = (
            np.concatenate([np.asarray(r.input_ids, dtype=np.int32) for r in items])
            if items
            else np.zeros(0, np.int32)
        )
        sec = (
            np.concatenate([np.asarray(r.section_ids, dtype=np.int8) for r in items])
            if items
            else np.zeros(0, np.int8)
        )
        sids = np.array([r.source_id for r in items], dtype=str)
        return {"lengths": lengths, "ids": ids, "sections": sec, "source_ids": sids}

    arrays = {
        f"{split}_{k}": v
        for split, items in (("train", train), ("val", val))
        for k, v in flat(items).items()
    }
    # Temporary names are per process: runs started together on one cache (the demo's two lanes,
    # a grid on one node) each write their own file and rename it into place; the contents agree.
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    tmp.replace(path)
    # Written last and renamed into place: prepare_data trusts the cache only when both exist.
    manifest_tmp = path.with_suffix(f".manifest.json.{os.getpid()}.tmp")
    manifest_tmp.write_text(json.dumps(manifest, indent=1))
    manifest_tmp.replace(path.with_suffix(".manifest.json"))


def _load_rendered(path: Path) -> tuple[list[Any], list[Any], dict]:
    from kdlite.data.render import Rendered

    data = np.load(path, allow_pickle=False)
    out = []
    for split in ("train", "val"):
        lengths = data[f"{split}_lengths"]
        ids, sec, sids = (
            data[f"{split}_ids"],
            data[f"{split}_sections"],
            data[f"{split}_source_ids"],
        )
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        out.append(
            [
                Rendered(ids[a:b].tolist(), sec[a:b].tolist(), str(s))
                for a, b, s in zip(bounds[:-1], bounds[1:], sids, strict=True)
            ]
        )
    manifest = json.loads(path.with_suffix(".manifest.json").read_text())
    return out[0], out[1], manifest


class DistillDataModule(L.LightningDataModule):
    def __init__(self, spec: DataSpec, tokenizer: Any, knobs: Knobs, num_workers: int = 0) -> None:
        super().__init__()
        self.spec = spec
        self.tokenizer = tokenizer
        self.knobs = knobs
        self.num_workers = num_workers
        self.manifest: dict[str, Any] = {}
        self.train_items: list[Supervised] = []
        self.val_items: list[Supervised] = []
        self.val_full_items: list[Supervised] | None = None
        self._resume_skip = 0
        self._train_sampler: StepSampler | None = None
        self._cache_path: Path | None = None
        self._content: dict[str, Any] | None = None

    # ---- once per node --------------------------------------------------------------------
    @property
    def cache_path(self) -> Path:
        """The tokenised cache of this spec, tokenizer and data content (resolved once per module:
        setup reads what prepare_data wrote even if the source changes in between)."""
        if self._cache_path is None:
            from kdlite.data.sources import source_content
            from kdlite.data.tokenizer import tokenizer_fingerprint

            self._content = source_content(self.spec)
            key = cache_key(self.spec, tokenizer_fingerprint(self.tokenizer), self._content)
            folder = cache_root() / "data"
            folder.mkdir(parents=True, exist_ok=True)
            self._cache_path = folder / f"{self.spec.name}-{key}.npz"
        return self._cache_path

    def prepare_data(self) -> None:
        path = self.cache_path
        if path.exists() and path.with_suffix(".manifest.json").exists():
            return
        from tqdm.auto import tqdm

        from kdlite.data.example import RowRejected
        from kdlite.data.render import render
        from kdlite.data.select import manifest_dict, select
        from kdlite.data.sources import load_examples

        loaded = load_examples(self.spec)
        content = self._content or {}
        if content.get("kind") == "local" and content.get("sha256") != loaded.fingerprint:
            raise DataError(
                f"{loaded.location} changed while it was being read (content hash "
                f"{content.get('sha256')} before, {loaded.fingerprint} after); run again once "
                "it is complete"
            )
        rendered = []
        examples = tqdm(loaded.examples, desc="rendering + tokenising", unit="ex", disable=None)
        for i, example in enumerate(examples):
            try:
                rendered.append(render(example, self.tokenizer))
            except RowRejected as err:  # e.g. a chat-control token inside the text
                loaded.counter.reject_accepted(i, err)
        loaded.counter.check()
        selection = select(
            rendered,
            max_tokens=self.spec.max_tokens,
            train_size=self.spec.train_size,
            val_size=self.spec.val_size,
            seed=self.spec.seed,
        )
        manifest = dict(manifest_dict(loaded, selection), content=content, cache=path.name)
        _save_rendered(path, selection.train, selection.val, manifest)
        log.info(
            "cached %d train / %d val examples at %s",
            len(selection.train),
            len(selection.val),
            path,
        )

    # ---- every rank -----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_items:
            return
        train, val, self.manifest = _load_rendered(self.cache_path)
        k = self.knobs
        self.train_items = [supervise(r, k.lsp, k.crop, k.supervise) for r in train]
        self.val_items = [supervise(r, k.lsp, k.crop, k.supervise) for r in val]
        if k.lsp < 1.0 or k.crop != "left":
            self.val_full_items = [supervise(r, 1.0, "left", k.supervise) for r in val]
        zero = sum(1 for it in self.train_items if it.n_supervised == 0)
        self.manifest["zero_weight_train_examples"] = zero
        if zero:
            log.warning(
                "%d of %d training examples have no supervised token after lsp=%s crop=%s "
                "supervise=%s; they are context only (zero loss weight)",
                zero,
                len(self.train_items),
                k.lsp,
                k.crop,
                k.supervise,
            )
        if zero == len(self.train_items):
            raise DataError(
                f"no training example keeps a supervised token with lsp={k.lsp}, crop={k.crop}, "
                f"supervise={k.supervise}"
            )
        if len(self.train_items) < k.examples_per_step:
            raise DataError(
                f"{len(self.train_items)} training examples is fewer than one optimizer step "
                f"(batch.examples_per_step={k.examples_per_step})"
            )

    def _world_rank(self) -> tuple[int, int]:
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def _loader(self, items: Sequence[Supervised], sampler: StepSampler) -> DataLoader:
        return DataLoader(
            _Items(items),
            batch_sampler=sampler,
            collate_fn=Collate(self.knobs.pack, self.tokenizer.pad_token_id),
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world_rank()
        k = self.knobs
        sampler = StepSampler(
            [it.n_supervised for it in self.train_items],
            examples_per_step=k.examples_per_step,
            micro_examples=k.micro_examples,
            world=world,
            rank=rank,
            seed=k.seed,
        )
        sampler.skip, self._resume_skip = self._resume_skip, 0
        self._train_sampler = sampler
        return self._loader(self.train_items, sampler)

    def val_dataloader(self) -> list[DataLoader]:
        world, rank = self._world_rank()
        sets = [self.val_items] + ([self.val_full_items] if self.val_full_items is not None else [])
        return [
            self._loader(
                items,
                StepSampler(
                    [it.n_supervised for it in items],
                    examples_per_step=1,
                    micro_examples=self.knobs.micro_examples,
                    world=world,
                    rank=rank,
                    train=False,
                ),
            )
            for items in sets
        ]

    # ---- resuming mid-epoch ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        done = 0
        if self.trainer is not None:
            # A _ProcessedTracker at runtime (typed as its base class): micro-batches whose
            # optimizer work is done, counted before the checkpoint of this batch is written.
            current: Any = self.trainer.fit_loop.epoch_loop.batch_progress.current
            done = current.processed
        return {"micro_batches_done_in_epoch": int(done)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        skip = int(state.get("micro_batches_done_in_epoch", 0))
        if self._train_sampler is not None:
            # ModelParallelStrategy (FSDP2) restores the checkpoint after setup, when
            # `estimated_stepping_batches` has already built the train loader: hand the skip to
            # its sampler, which is iterated only after this.
            self._train_sampler.skip = skip
        else:  # DDP / one device: restored before the loader exists
            self._resume_skip = skip
