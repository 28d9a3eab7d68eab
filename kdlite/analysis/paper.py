"""The study's numbers (Chen et al. 2025, arXiv 2512.21002; transcribed in docs/paper.md) as data.

Plain dicts keyed by kdlite's own names (pair `32b_4b`, data `bespoke`, bench `aime24`) so a report
looks a cell up with the same key it groups its runs by; no logic beyond a few lookups. Accuracies
are percentages as printed in the paper; fractions (retention, loss gaps, positions) are fractions.
Only what docs/paper.md states is here: a missing key means the paper has no number for that cell.
"""

from __future__ import annotations

PAIRS = ("32b_8b", "32b_4b", "32b_1.7b", "32b_0.6b", "8b_4b", "8b_1.7b", "8b_0.6b")
DATASETS = ("openthoughts", "bespoke", "synthetic1", "nemotron", "skyt1")
BENCHES = ("aime24", "aime25")

# Default training condition of the study (every number below except Table 12 is at this one).
LAM = 0.5
TEMPERATURE = 1.0
SUPERVISE = "p_cot_a"

# Table 3: knee of accuracy vs LSP (Kneedle).  (pair, data, bench) -> LSP
KNEES: dict[tuple[str, str, str], float] = {
    ("32b_4b", "openthoughts", "aime24"): 0.5,
    ("32b_4b", "openthoughts", "aime25"): 0.5,
    ("32b_4b", "bespoke", "aime24"): 0.6,
    ("32b_4b", "bespoke", "aime25"): 0.2,
    ("8b_4b", "openthoughts", "aime24"): 0.4,
    ("8b_4b", "openthoughts", "aime25"): 0.2,
    ("8b_4b", "bespoke", "aime24"): 0.2,
    ("8b_4b", "bespoke", "aime25"): 0.2,
    ("32b_8b", "openthoughts", "aime24"): 0.6,
    ("32b_8b", "openthoughts", "aime25"): 0.5,
    ("32b_8b", "bespoke", "aime24"): 0.4,
    ("32b_8b", "bespoke", "aime25"): 0.5,
}

# Table 13: accuracy (%), per pair and dataset: (AIME24 @0.5, AIME24 @1.0, AIME25 @0.5, AIME25 @1.0).
_TABLE13: dict[tuple[str, str], tuple[float, float, float, float]] = {
    ("32b_4b", "openthoughts"): (22.50, 23.39, 23.44, 24.06),
    ("32b_4b", "bespoke"): (17.66, 18.02, 19.53, 20.94),
    ("32b_4b", "synthetic1"): (19.32, 24.37, 22.08, 24.06),
    ("32b_4b", "nemotron"): (25.00, 25.89, 21.97, 24.22),
    ("32b_4b", "skyt1"): (17.71, 20.26, 18.44, 20.57),
    ("8b_4b", "openthoughts"): (23.80, 24.27, 23.91, 24.17),
    ("8b_4b", "bespoke"): (16.98, 19.79, 19.17, 21.88),
    ("8b_4b", "synthetic1"): (20.89, 25.31, 22.45, 24.37),
    ("8b_4b", "nemotron"): (22.92, 25.05, 22.19, 24.22),
    ("8b_4b", "skyt1"): (17.55, 23.33, 18.96, 21.30),
    ("32b_8b", "openthoughts"): (32.19, 33.54, 27.86, 28.54),
    ("32b_8b", "bespoke"): (24.17, 26.15, 23.33, 26.77),
    ("32b_8b", "synthetic1"): (26.93, 28.28, 27.40, 28.23),
    ("32b_8b", "nemotron"): (32.08, 34.79, 26.98, 27.92),
    ("32b_8b", "skyt1"): (22.24, 27.76, 21.35, 25.83),
}
# (pair, data, bench, lsp) -> accuracy %
ACCURACY: dict[tuple[str, str, str, float], float] = {}
for (_pair, _data), (_a24_05, _a24_10, _a25_05, _a25_10) in _TABLE13.items():
    ACCURACY[(_pair, _data, "aime24", 0.5)] = _a24_05
    ACCURACY[(_pair, _data, "aime24", 1.0)] = _a24_10
    ACCURACY[(_pair, _data, "aime25", 0.5)] = _a25_05
    ACCURACY[(_pair, _data, "aime25", 1.0)] = _a25_10

# Table 4: mean retention acc(0.5)/acc(1.0) over the 30 cells of Table 13 ("about 91%").
RETENTION_MEAN = 0.91

# Table 12: lambda ablation, 8B->4B on Bespoke. (lsp, lam, bench) -> accuracy %
LAMBDA_PAIR, LAMBDA_DATA = "8b_4b", "bespoke"
_TABLE12: dict[float, tuple[tuple[float, float], ...]] = {
    0.5: ((13.39, 16.04), (16.04, 17.81), (16.98, 19.17), (16.15, 15.83), (10.57, 10.52)),
    1.0: ((18.18, 19.95), (19.48, 20.83), (19.79, 21.88), (18.49, 18.39), (12.97, 11.30)),
}
LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)
LAMBDA_ABLATION: dict[tuple[float, float, str], float] = {
    (_lsp, _lam, _bench): _cell[_i]
    for _lsp, _cells in _TABLE12.items()
    for _lam, _cell in zip(LAMBDAS, _cells, strict=True)
    for _i, _bench in enumerate(BENCHES)
}

# Tables 7-11: relative training-loss difference, mean over steps, as (low, high) fractions.
# LSP 0.5 against LSP 1.0:
LOSS_GAP_HALF: dict[str, tuple[float, float]] = {"soft": (0.05, 0.15), "hard": (0.02, 0.10)}
# Left 50% against Right 50%, as the paper states it: (L_left - L_right) / L_right, left is lower.
LOSS_GAP_LEFT_VS_RIGHT: tuple[float, float] = (-0.20, -0.09)

# Figure 6 (8B->4B): peak GPU memory (GiB) per LSP; step time and FLOPs roughly halve at 0.5.
COMPUTE_PAIR = "8b_4b"
PEAK_MEMORY_GIB: dict[float, float] = {1.0: 68.2, 0.5: 36.6}

# Table 2: mean tokens per example, full sequence and per section.
TOKEN_STATS: dict[str, dict[str, float]] = {
    "openthoughts": {"full": 2497.5, "P": 116.6, "CoT": 1910.4, "A": 468.5},
    "bespoke": {"full": 2165.3, "P": 120.5, "CoT": 1657.3, "A": 385.5},
    "synthetic1": {"full": 1854.0, "P": 100.2, "CoT": 1402.8, "A": 349.1},
    "nemotron": {"full": 2437.8, "P": 87.3, "CoT": 2073.3, "A": 275.2},
    "skyt1": {"full": 2277.1, "P": 139.1, "CoT": 1632.1, "A": 503.9},
}

# Appendix A.2 (100 examples per dataset): first correct derivation of the final answer as a
# relative position (in the CoT, in the full sequence), and self-reflection cues before it.
ANSWER_POSITION: dict[str, tuple[float, float]] = {
    "openthoughts": (0.505, 0.433),
    "bespoke": (0.475, 0.420),
    "synthetic1": (0.466, 0.407),
    "nemotron": (0.615, 0.559),
    "skyt1": (0.668, 0.540),
}
REFLECTIONS_BEFORE_ANSWER: dict[str, float] = {
    "openthoughts": 2.23,
    "bespoke": 2.42,
    "synthetic1": 2.76,
    "nemotron": 5.13,
    "skyt1": 1.91,
}
REFLECTION_KEYWORDS = (
    "recheck",
    "rethink",
    "reassess",
    "reevaluate",
    "re-evaluate",
    "reevaluation",
    "re-examine",
    "reexamine",
    "reconsider",
    "reanalyze",
    "double-check",
    "check again",
    "think again",
    "verify again",
    "go over the steps",
    "wait",
)
# LLM-judged shares over the 100 examples (ranges across the five datasets).
COT_ENTAILS_PROMPT = (0.90, 0.99)
COT_ENTAILS_ANSWER = (0.73, 0.97)
ANSWER_MATCHES_COT = (0.91, 1.00)


def accuracy(pair: str, data: str, bench: str, lsp: float, lam: float = LAM) -> float | None:
    """Paper accuracy (%) for a cell, from Table 13 (lam 0.5) or Table 12 (the lambda ablation)."""
    if lam != LAM:
        if (pair, data) != (LAMBDA_PAIR, LAMBDA_DATA):
            return None
        return LAMBDA_ABLATION.get((round(lsp, 4), lam, bench))
    return ACCURACY.get((pair, data, bench, round(lsp, 4)))


def retention(pair: str, data: str, bench: str) -> float | None:
    """acc(0.5) / acc(1.0) from Table 13, or None where the paper has no such cell."""
    half, full = ACCURACY.get((pair, data, bench, 0.5)), ACCURACY.get((pair, data, bench, 1.0))
    return None if half is None or full is None else half / full


def left_vs_right_as_right_vs_left(gap: float) -> float:
    """Convert the paper's (L_left - L_right)/L_right into kdlite's (L_right - L_left)/L_left."""
    return -gap / (1.0 + gap)
