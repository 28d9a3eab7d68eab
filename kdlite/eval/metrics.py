"""avg@n, unbiased pass@k and their error bars from a problems x samples correctness matrix.

avg@n is the mean over problems of c_i / n (= pass@1 estimated from all n samples, what lighteval
reports). pass@k uses the unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al. 2021) as the
product 1 - prod_{i=n-c+1..n} (1 - k/i): C(64, 32) is 1.8e18, so the binomial form overflows floats
long before AIME's n = 64 is reached in other settings. Error bars are over problems only (standard
error of the per-problem scores, 95% normal interval): with 30 problems that term dominates; the
sampling noise of 64 samples per problem is an order of magnitude smaller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def default_ks(n: int) -> list[int]:
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256) if k <= n]
    return ks if n in ks else [*ks, n]


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def ci95(mean: float, stderr: float) -> list[float]:
    return [max(0.0, mean - 1.96 * stderr), min(1.0, mean + 1.96 * stderr)]


def summarize(correct: Sequence[Sequence[int]], ks: Sequence[int] | None = None) -> dict:
    """Scores of one correctness matrix (rows = problems, all with the same number of samples)."""
    if not correct:
        raise ValueError("no problems")
    n = len(correct[0])
    if n == 0 or any(len(row) != n for row in correct):
        raise ValueError("every problem needs the same, non-zero number of samples")
    counts = [sum(row) for row in correct]
    avg, se = mean_stderr([c / n for c in counts])
    out: dict = {
        "avg_at_n": avg,
        "stderr": se,
        "ci95": ci95(avg, se),
        "pass_at_k": {},
        "pass_at_k_stderr": {},
    }
    for k in ks or default_ks(n):
        m, s = mean_stderr([pass_at_k(n, c, k) for c in counts])
        out["pass_at_k"][str(k)] = m
        out["pass_at_k_stderr"][str(k)] = s
    return out
