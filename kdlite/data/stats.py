"""Per-section token statistics of a source, the numbers of docs/paper.md Table 2.

    python -m kdlite.data.stats data=bespoke tokenizer=/path/to/Qwen3-8B limit=2000

Counts come from the same rendering the trainer uses (chat template included, so P holds the
user turn and the assistant header, CoT the think block with its tags), which is what the study's
shares measure. Shares are ratios of means (mean P / mean Full), as in Table 2, not means of
per-example ratios: long examples weigh more, matching how tokens are spent in training. The
trade-off of `limit` (default 2000): tokenising 2000 rows instead of 114k takes seconds, not
minutes, but they are the first rows, not a random sample, so a source sorted by length or topic
biases the means; use `limit=null` for the numbers you report. No length filter is applied (the
study's Table 2 describes the data before the < 4k-token cut).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from kdlite.data.example import COT, A, P

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SectionStats:
    """Mean tokens per example of the whole sequence and of each section."""

    name: str
    n: int
    full: float
    p: float
    cot: float
    a: float

    def share(self, section: str) -> float:
        return getattr(self, section) / self.full if self.full else 0.0


def section_stats(items: Iterable[Any], name: str = "") -> SectionStats:
    """Means over items with `section_ids` (P=0, CoT=1, A=2), e.g. `Rendered`."""
    n = total = 0
    counts = {P: 0, COT: 0, A: 0}
    for item in items:
        n += 1
        total += len(item.section_ids)
        for section_id in item.section_ids:
            counts[section_id] += 1
    if n == 0:
        return SectionStats(name, 0, 0.0, 0.0, 0.0, 0.0)
    return SectionStats(name, n, total / n, counts[P] / n, counts[COT] / n, counts[A] / n)


def format_table(rows: Sequence[SectionStats]) -> str:
    """Markdown in Table 2's layout: mean tokens, and each section's share of the sequence."""
    lines = ["| | n | Full | P | CoT | A |", "|---|---|---|---|---|---|"]
    for s in rows:
        cells = [f"{getattr(s, k):.1f} ({100 * s.share(k):.1f}%)" for k in ("p", "cot", "a")]
        lines.append(f"| {s.name} | {s.n} | {s.full:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stats_for_source(spec: Any, tokenizer_name: str, limit: int | None) -> tuple[SectionStats, str]:
    """Load (up to `limit` rows), render with the tokenizer, and measure; -> (stats, table)."""
    from dataclasses import replace

    from kdlite.config import data_spec
    from kdlite.data.render import render
    from kdlite.data.sources import load_examples
    from kdlite.data.tokenizer import load_tokenizer

    spec = replace(data_spec(spec), limit=limit)
    loaded = load_examples(spec)
    tokenizer = load_tokenizer(tokenizer_name)
    stats = section_stats((render(e, tokenizer) for e in loaded.examples), name=spec.name)
    return stats, format_table([stats])


@hydra.main(config_path="../../conf", config_name="stats", version_base="1.3")
def main(cfg: DictConfig) -> None:
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    limit = cfg.limit if cfg.limit is not None else cfg.data.limit
    _, table = stats_for_source(cfg.data, cfg.tokenizer, limit)
    print(table)


if __name__ == "__main__":
    main()
