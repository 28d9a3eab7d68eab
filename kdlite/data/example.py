"""The unit every adapter produces and every later stage consumes.

An `Example` is plain text split into the study's three sections: prompt (P), chain of thought
(CoT) and answer (A), with the think/solution tags already removed. Section ids are small ints so
they can live in token-aligned tensors. Rows that cannot become an Example raise `RowRejected`
with a short machine-readable reason; `SkipCounter` tallies those reasons per source so a run can
log and persist them instead of crashing mid-epoch.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

P, COT, A = 0, 1, 2
SECTION_NAMES = ("P", "CoT", "A")

# If more than this share of a source's rows are rejected, loading fails loudly: a wrong adapter or
# column layout should never silently train on the few rows that happen to parse.
MAX_REJECT_SHARE = 0.5


@dataclass(frozen=True)
class Example:
    prompt: str
    cot: str
    answer: str
    source_id: str


def make_source_id(dataset: str, index: int, *texts: str) -> str:
    """`dataset:index:hash12`, stable across runs and machines (content hash of the texts)."""
    digest = hashlib.sha1("\x1f".join(texts).encode("utf-8")).hexdigest()[:12]
    return f"{dataset}:{index}:{digest}"


class RowRejected(ValueError):
    """A raw row that cannot become an Example; `reason` is a short snake_case key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class DataError(ValueError):
    """Bad data or data configuration, raised before any training work starts."""


@dataclass
class SkipCounter:
    """Counts rejected rows by reason and remembers the first few for error messages."""

    source: str
    seen: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    first_bad: list[tuple[int, str]] = field(default_factory=list)

    def accept(self) -> None:
        self.seen += 1

    def reject(self, index: int, err: RowRejected) -> None:
        self.seen += 1
        self.reasons[err.reason] += 1
        if len(self.first_bad) < 5:
            self.first_bad.append((index, str(err)))

    def reject_accepted(self, index: int, err: RowRejected) -> None:
        """A row accepted by its adapter but refused later (e.g. by the renderer)."""
        self.seen -= 1
        self.reject(index, err)

    @property
    def rejected(self) -> int:
        return sum(self.reasons.values())

    def check(self, max_share: float = MAX_REJECT_SHARE) -> None:
        """Raise DataError naming the first bad rows when most rows were rejected."""
        if self.seen and self.rejected / self.seen > max_share:
            rows = "; ".join(f"row {i}: {msg}" for i, msg in self.first_bad)
            raise DataError(
                f"{self.source}: {self.rejected} of {self.seen} rows rejected "
                f"({dict(self.reasons)}); is the adapter right for this data? First bad rows: {rows}"
            )

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "seen": self.seen, "rejected": dict(self.reasons)}
