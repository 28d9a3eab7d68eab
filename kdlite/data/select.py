"""Length filter + seeded train/val sample over rendered examples, and the run's data manifest.

The study kept examples under 4k tokens and sampled fixed train sizes (docs/paper.md, Setup). Selection here
is pure and order-free: every kept item is ranked by sha256(f"{seed}:{source_id}"), validation
takes the first `val_size` ranks and training the next `train_size`. The trade-off: ranking costs
a hash per item instead of a seeded shuffle, but the split depends only on (seed, the set of ids),
not on the order rows were read, and the validation set stays the same when only `train_size`
changes, so runs of a size sweep are scored on equal terms. When too few items remain, both sizes
shrink in proportion (logged); an empty train set is an error.

Duplicates: items with the same token ids (a row repeated in the file, or the same example under
two indices) are one example. Only the copy of lowest rank is kept, so the choice is order-free too;
the others are counted (`duplicates` in the manifest). Validation and training are therefore
disjoint by content, not only by id.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kdlite.data.example import DataError

if TYPE_CHECKING:
    from kdlite.data.sources import LoadedSource

log = logging.getLogger(__name__)


class HasTokens(Protocol):
    @property
    def input_ids(self) -> Sequence[int]: ...

    @property
    def source_id(self) -> str: ...


@dataclass(frozen=True)
class Selection:
    train: list[Any]  # items in rank order (hash order), not input order
    val: list[Any]
    n_input: int
    n_too_long: int  # len(input_ids) >= max_tokens
    n_duplicates: (
        int  # items under max_tokens dropped because an earlier-ranked one has their tokens
    )
    max_tokens: int
    seed: int
    train_size: int  # requested sizes; len(train)/len(val) are smaller when the data ran short
    val_size: int

    @property
    def n_kept(self) -> int:
        return self.n_input - self.n_too_long - self.n_duplicates


def rank_key(seed: int, source_id: str) -> str:
    return hashlib.sha256(f"{seed}:{source_id}".encode()).hexdigest()


def _shrunk_sizes(n: int, train_size: int, val_size: int) -> tuple[int, int]:
    """Sizes when only `n` items remain: split n in the requested proportion, val at least 1."""
    if n >= train_size + val_size:
        return train_size, val_size
    val = round(n * val_size / (train_size + val_size)) if train_size + val_size else 0
    if val_size > 0 and n >= 2:
        val = max(val, 1)
    val = min(val, val_size, n)
    return min(n - val, train_size), val


def _token_digest(ids: Sequence[int]) -> bytes:
    return hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).digest()


def select(
    items: Sequence[HasTokens], *, max_tokens: int, train_size: int, val_size: int, seed: int
) -> Selection:
    """Keep items shorter than `max_tokens` tokens and unique by tokens, then take val then train
    in hash-rank order."""
    if train_size < 1 or val_size < 0:
        raise DataError(f"need train_size >= 1 and val_size >= 0, got {train_size}, {val_size}")
    short = [item for item in items if len(item.input_ids) < max_tokens]
    id_counts = Counter(item.source_id for item in short)
    if len(id_counts) != len(short):
        dupes = sorted(i for i, c in id_counts.items() if c > 1)[:5]
        raise DataError(f"duplicate source ids make the split order-dependent: {dupes}")
    ranked, seen = [], set()
    for item in sorted(short, key=lambda item: rank_key(seed, item.source_id)):
        digest = _token_digest(item.input_ids)
        if digest not in seen:
            seen.add(digest)
            ranked.append(item)
    n_duplicates = len(short) - len(ranked)
    if n_duplicates:
        log.warning("%d duplicate examples (same tokens as another) dropped", n_duplicates)
    kept = ranked
    n_train, n_val = _shrunk_sizes(len(ranked), train_size, val_size)
    if n_train < 1:
        raise DataError(
            f"no training examples: {len(items)} items, {len(items) - len(short)} of them "
            f">= max_tokens={max_tokens}, {n_duplicates} duplicates, {len(kept)} left for "
            f"val_size={val_size}"
        )
    if (n_train, n_val) != (train_size, val_size):
        log.warning(
            "only %d unique examples under %d tokens (of %d): train/val shrunk from %d/%d to %d/%d",
            len(kept),
            max_tokens,
            len(items),
            train_size,
            val_size,
            n_train,
            n_val,
        )
    return Selection(
        train=ranked[n_val : n_val + n_train],
        val=ranked[:n_val],
        n_input=len(items),
        n_too_long=len(items) - len(short),
        n_duplicates=n_duplicates,
        max_tokens=max_tokens,
        seed=seed,
        train_size=train_size,
        val_size=val_size,
    )


def manifest_dict(source: LoadedSource, selection: Selection) -> dict[str, Any]:
    """What a run read and kept: source, revision, counts by reason, the selected ids."""
    counter = source.counter
    return {
        "dataset": source.name,
        "location": source.location,
        "hf_config": source.hf_config,
        "split": source.split,
        "revision": source.revision,
        "fingerprint": source.fingerprint,
        "counts": {
            "rows_read": counter.seen + sum(source.filtered.values()),
            "rows_filtered": sum(source.filtered.values()),
            "rows_rejected": counter.rejected,
            "examples": len(source.examples),
            "too_long": selection.n_too_long,
            "duplicates": selection.n_duplicates,
            "kept": selection.n_kept,
            "train": len(selection.train),
            "val": len(selection.val),
        },
        "filtered": dict(sorted(source.filtered.items())),
        "rejected": dict(sorted(counter.reasons.items())),
        "first_rejected": [{"row": i, "reason": msg} for i, msg in counter.first_bad],
        "selection": {
            "max_tokens": selection.max_tokens,
            "seed": selection.seed,
            "train_size": selection.train_size,
            "val_size": selection.val_size,
        },
        "train_ids": [item.source_id for item in selection.train],
        "val_ids": [item.source_id for item in selection.val],
    }


def write_manifest(path: str | Path, source: LoadedSource, selection: Selection) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest_dict(source, selection), indent=1) + "\n", encoding="utf-8")
    return path
