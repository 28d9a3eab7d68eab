"""Crop (`lsp`, `crop`) and supervision mask (`supervise`) -> next-token labels (docs/design.md §4).

The study's two knobs meet here. `lsp` = p keeps max(2, ⌊p·L⌋) tokens of the whole rendered
sequence (prompt included), from the start (`crop=left`) or the end (`crop=right`); dropped tokens
never reach either model, so p = 0.25 costs about a quarter of the tokens of p = 1. `supervise`
picks the sections (P=0, CoT=1, A=2) that carry loss; the rest of the cropped sequence is context
only. Section ids are computed on the full sequence and cropped with it, so every mask composes with
every crop: e.g. `supervise=a` with `crop=left, lsp=0.5` usually leaves no supervised token at all
(answers sit at the end of a trace). Such an example is valid with zero loss weight
(`n_supervised == 0`), never NaN; the caller counts them.

Label convention: `labels[t] = input_ids[t+1]` if token t+1 is supervised, else `IGNORE_INDEX`;
the last label is always `IGNORE_INDEX`, so packed rows never predict across examples.

⌊p·L⌋ forgives float rounding: 0.29 · 100 is 28.999999999999996 in floats and a naive
`int(p * L)` keeps 28 tokens instead of 29. A product within 1e-7 of an integer counts as that
integer: float error in p·L is ≤ 1e-10 for L up to 1e6 tokens, and a p written with up to 6 decimals
puts a non-integer p·L at least 1e-6 from an integer, so no true fraction is rounded up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kdlite.data.example import COT, A, P

IGNORE_INDEX = -100
CROPS = ("left", "right")
MIN_TOKENS = 2  # one input and one target: the shortest sequence that can carry a label
_FLOOR_ATOL = 1e-7

SUPERVISE: dict[str, frozenset[int]] = {
    "p_cot_a": frozenset({P, COT, A}),
    "cot_a": frozenset({COT, A}),
    "p_cot": frozenset({P, COT}),
    "cot": frozenset({COT}),
    "p_a": frozenset({P, A}),
    "a": frozenset({A}),
}
_SECTIONS = frozenset({P, COT, A})


class _HasSections(Protocol):
    """What `supervise` reads from `kdlite.data.render.Rendered` (read-only, so frozen fits)."""

    @property
    def input_ids(self) -> Sequence[int]: ...
    @property
    def section_ids(self) -> Sequence[int]: ...
    @property
    def source_id(self) -> str: ...


@dataclass(frozen=True)
class Supervised:
    input_ids: list[int]
    labels: list[
        int
    ]  # labels[t] = input_ids[t+1] if token t+1 is supervised else -100; last = -100
    source_id: str

    @property
    def n_supervised(self) -> int:
        """Tokens that carry loss; 0 is a valid example with zero weight."""
        return sum(label != IGNORE_INDEX for label in self.labels)


def _check_lsp(lsp: float) -> float:
    if isinstance(lsp, bool) or not isinstance(lsp, (int, float)):
        raise ValueError(f"lsp must be a number in (0, 1], got {lsp!r}")
    if not 0 < lsp <= 1:  # also rejects NaN
        raise ValueError(f"lsp must be in (0, 1], got {lsp!r}")
    return float(lsp)


def _floor(x: float) -> int:
    """floor(x), but an x within 1e-7 of an integer is that integer."""
    nearest = round(x)
    return nearest if abs(x - nearest) <= _FLOOR_ATOL else math.floor(x)


def crop_span(n_tokens: int, lsp: float, crop: str) -> slice:
    """The slice of a length-`n_tokens` sequence kept by `lsp` and `crop`.

    `left` keeps the first max(2, ⌊lsp·n_tokens⌋) tokens, `right` the last as many.
    """
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    p = _check_lsp(lsp)
    if n_tokens < MIN_TOKENS:
        raise ValueError(
            f"a sequence needs at least {MIN_TOKENS} tokens to carry a label, got {n_tokens}"
        )
    keep = max(MIN_TOKENS, _floor(p * n_tokens))
    return slice(0, keep) if crop == "left" else slice(n_tokens - keep, n_tokens)


def supervise(rendered: _HasSections, lsp: float, crop: str, supervise: str) -> Supervised:
    """Crop `rendered` and build next-token labels on the sections named by `supervise`."""
    if supervise not in SUPERVISE:
        raise ValueError(f"unknown supervise {supervise!r}; expected one of {sorted(SUPERVISE)}")
    sections = SUPERVISE[supervise]
    input_ids = list(rendered.input_ids)
    section_ids = list(rendered.section_ids)
    if len(input_ids) != len(section_ids):
        raise ValueError(
            f"{rendered.source_id}: input_ids has {len(input_ids)} tokens but section_ids has "
            f"{len(section_ids)}"
        )
    unknown = set(section_ids) - _SECTIONS
    if unknown:
        raise ValueError(
            f"{rendered.source_id}: unknown section ids {sorted(unknown)}; expected P={P}, "
            f"COT={COT}, A={A}"
        )

    span = crop_span(len(input_ids), lsp, crop)
    ids = input_ids[span]
    secs = section_ids[span]
    labels = [
        nxt if sec in sections else IGNORE_INDEX for nxt, sec in zip(ids[1:], secs[1:], strict=True)
    ]
    labels.append(IGNORE_INDEX)
    return Supervised(input_ids=ids, labels=labels, source_id=rendered.source_id)
