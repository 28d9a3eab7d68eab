"""Trace statistics of a data source: token counts per section (Table 2), where the final answer is
first derived and the self-reflection cues before it (Appendix A.2, Figure 5), optionally an LLM
judge's verdicts. Writes `traces.md` and `fig5_answer_position.png`.

Trade-off: the study judged 100 examples per dataset with an LLM; here the default is the
rule-based finder of `answer.py` on the first `limit` examples (cheap, reproducible, no model),
and examples where it finds no cued derivation are counted by reason and left out of the means
rather than guessed. Means are over found examples only; the found share is printed beside them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdlite.analysis import paper
from kdlite.analysis.answer import Derivation, find_derivation
from kdlite.data.example import Example


@dataclass
class TraceSummary:
    n: int
    derivations: list[Derivation]
    reasons: Counter[str] = field(default_factory=Counter)

    def mean(self, attr: str) -> float | None:
        values = [getattr(d, attr) for d in self.derivations]
        return float(np.mean(values)) if values else None


def analyse(examples: Sequence[Example], count: Callable[[str], int] = len) -> TraceSummary:
    summary = TraceSummary(n=len(examples), derivations=[])
    for example in examples:
        derivation, reason = find_derivation(example, count)
        summary.reasons[reason] += 1
        if derivation is not None:
            summary.derivations.append(derivation)
    return summary


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return ""
    return f"{100 * x:.1f}%" if pct else f"{x:.2f}"


def answer_table(name: str, summary: TraceSummary) -> str:
    p_cot, p_full = paper.ANSWER_POSITION.get(name, (None, None))
    p_refl = paper.REFLECTIONS_BEFORE_ANSWER.get(name)
    found = len(summary.derivations)
    rows = [
        ("found (of examples)", f"{found}/{summary.n}", "100 (LLM judge)"),
        ("answer position in CoT", _fmt(summary.mean("cot_rel")), _fmt(p_cot)),
        ("answer position in full sequence", _fmt(summary.mean("full_rel")), _fmt(p_full)),
        (
            "reflection cues before it",
            _fmt(summary.mean("reflections_before"), False),
            _fmt(p_refl, False),
        ),
        ("reflection cues in the whole CoT", _fmt(summary.mean("reflections_total"), False), ""),
    ]
    lines = ["| | ours | paper |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.reasons.items()))
    return "\n".join(lines) + f"\n\nOutcomes: {reasons}.\n"


def token_table(name: str, stats) -> str:
    """Our Table 2 row (a `kdlite.data.stats.SectionStats`) above the paper's."""
    lines = ["| | n | Full | P | CoT | A |", "|---|---|---|---|---|---|"]
    cells = [f"{getattr(stats, k):.1f} ({100 * stats.share(k):.1f}%)" for k in ("p", "cot", "a")]
    lines.append(f"| ours | {stats.n} | {stats.full:.1f} | " + " | ".join(cells) + " |")
    ref = paper.TOKEN_STATS.get(name)
    if ref:
        shares = [f"{ref[k]:.1f} ({100 * ref[k] / ref['full']:.1f}%)" for k in ("P", "CoT", "A")]
        lines.append(f"| paper | | {ref['full']:.1f} | " + " | ".join(shares) + " |")
    return "\n".join(lines) + "\n"


def histograms(name: str, summary: TraceSummary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    d = summary.derivations
    p_cot, p_full = paper.ANSWER_POSITION.get(name, (None, None))
    panels: list[tuple[Sequence[float], str, float | None, np.ndarray | None]] = [
        ([x.cot_rel for x in d], "relative position in the CoT", p_cot, np.linspace(0, 1, 21)),
        ([x.full_rel for x in d], "relative position in the full sequence", p_full, np.linspace(0, 1, 21)),
        ([x.reflections_before for x in d], "reflection cues before the answer",
         paper.REFLECTIONS_BEFORE_ANSWER.get(name), None),
    ]  # fmt: skip
    for ax, (values, label, ref, bins) in zip(axes, panels, strict=True):
        if values:
            ax.hist(values, bins=bins if bins is not None else max(1, max(values) + 1))
            ax.axvline(float(np.mean(values)), color="k", label="ours (mean)")
        if ref is not None:
            ax.axvline(ref, color="r", ls="--", label="paper (mean)")
        ax.set_xlabel(label)
        ax.set_ylabel("examples")
        ax.legend(fontsize=7)
    fig.suptitle(f"First derivation of the final answer, {name} (Figure 5), n={len(d)}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def judge_table(verdicts: list) -> str:
    def share(attr: str) -> str:
        known = [getattr(v, attr) for v in verdicts if getattr(v, attr) is not None]
        return f"{100 * sum(known) / len(known):.0f}% of {len(known)}" if known else ""

    located = [v.cot_rel for v in verdicts if v.cot_rel is not None]
    rows = [
        ("CoT entails P", share("cot_entails_prompt"), "90–99%"),
        ("CoT entails A", share("cot_entails_answer"), "73–97%"),
        ("A's answer matches the CoT's", share("answer_matches_cot"), "91–100%"),
        ("first derivation, position in CoT (chars)",
         f"{100 * float(np.mean(located)):.1f}% of {len(located)}" if located else "", ""),
    ]  # fmt: skip
    lines = ["| | judge | paper |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


def write_traces_report(
    name: str,
    examples: Sequence[Example],
    out_dir: Path,
    *,
    count: Callable[[str], int] = len,
    unit: str = "characters",
    token_stats=None,
    verdicts: list | None = None,
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = analyse(examples, count)
    histograms(name, summary, out_dir / "fig5_answer_position.png")
    parts = [f"# Trace analysis: {name} ({len(examples)} examples)\n"]
    if token_stats is not None:
        parts += ["## Tokens per section (Table 2)\n", token_table(name, token_stats)]
    parts += [
        "## First derivation of the final answer (Appendix A.2, rule-based)\n",
        f"Positions measured in {unit}; see `kdlite/analysis/answer.py` for the rule.\n",
        answer_table(name, summary),
        "![answer position](fig5_answer_position.png)\n",
    ]
    if verdicts is not None:
        parts += ["## LLM judge\n", judge_table(verdicts)]
    path = out_dir / "traces.md"
    path.write_text("\n".join(parts))
    return path
