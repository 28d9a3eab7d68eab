"""Knee of an accuracy-vs-LSP curve (Kneedle via the pinned `kneed`), and its bootstrap interval.

The study reads off where adding more of each trace stops paying (Table 3). Evaluation accuracies are
noisy (AIME has 30 problems), so Kneedle runs on a lightly smoothed curve:
- points are sorted by LSP and duplicate LSPs averaged (input order never matters);
- smoothing (default `"isotonic"`) is a least-squares non-decreasing fit (pool-adjacent-violators):
  accuracy should not fall when the student sees more of each trace, so a dip is noise and gets
  pooled with its neighbour, while an exact elbow is left where it is. The alternative
  `"binomial"` ([1/4, 1/2, 1/4] kernel, endpoints [2/3, 1/3]) also damps upward spikes but drags an
  early elbow one grid step later (a clean elbow at 0.2 reads 0.3); `"none"` runs on the raw means;
- Kneedle then runs with `curve="concave", direction="increasing", interp_method="interp1d"`,
  sensitivity `S` (default 1.0), so the knee is always one of the measured LSPs (the paper's knees
  are on its 0.1 grid too).
A curve with fewer than 3 distinct LSPs, or one whose smoothed range is below `flat_tol`, has no
knee (None) rather than an arbitrary one: Kneedle's min-max normalisation divides by that range.

The bootstrap resamples evaluation samples: for every LSP point and every problem, the columns of
the `correct` matrix [problems x samples] are drawn with replacement, giving one accuracy curve per
replicate; Kneedle runs on each. Problems are held fixed (the benchmark is fixed; resampling them
too would answer a different question and widen the interval). Reported: the point knee on the
observed curve, the replicate median, the 2.5/97.5 percentiles, and the share of replicates with
no knee.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from kneed import KneeLocator

FLAT_TOL = 1e-9


def sorted_curve(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Sort by x and average y over duplicate x values."""
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x_arr.shape != y_arr.shape or x_arr.ndim != 1:
        raise ValueError(
            f"x and y must be 1-D of equal length, got {x_arr.shape} and {y_arr.shape}"
        )
    xs, inverse = np.unique(x_arr, return_inverse=True)
    ys = np.bincount(inverse, weights=y_arr) / np.bincount(inverse)
    return xs, ys


def isotonic(y: np.ndarray) -> np.ndarray:
    """Least-squares non-decreasing fit of y (pool-adjacent-violators, unit weights)."""
    blocks: list[list[float]] = []  # [mean, count]
    for value in np.asarray(y, dtype=float):
        blocks.append([float(value), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean_b, n_b = blocks.pop()
            mean_a, n_a = blocks[-1]
            blocks[-1] = [(mean_a * n_a + mean_b * n_b) / (n_a + n_b), n_a + n_b]
    return np.concatenate([np.full(int(n), mean) for mean, n in blocks])


def binomial(y: np.ndarray) -> np.ndarray:
    """One pass of [1/4, 1/2, 1/4] smoothing, endpoints [2/3, 1/3] with their neighbour."""
    y = np.asarray(y, dtype=float)
    if y.size < 3:
        return y.copy()
    out = y.copy()
    out[1:-1] = 0.25 * y[:-2] + 0.5 * y[1:-1] + 0.25 * y[2:]
    out[0] = (2 * y[0] + y[1]) / 3
    out[-1] = (2 * y[-1] + y[-2]) / 3
    return out


SMOOTHERS = {"isotonic": isotonic, "binomial": binomial, "none": lambda y: np.asarray(y, float)}


def find_knee(
    x: Sequence[float],
    y: Sequence[float],
    *,
    smooth: str = "isotonic",
    sensitivity: float = 1.0,
    flat_tol: float = FLAT_TOL,
) -> float | None:
    """Knee of an increasing concave curve y(x), or None (too few points, flat, or no knee)."""
    xs, ys = sorted_curve(x, y)
    if xs.size < 3:
        return None
    ys = SMOOTHERS[smooth](ys)
    if float(ys.max() - ys.min()) <= flat_tol:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kneed warns "No knee/elbow found"; None says the same
        locator = KneeLocator(
            xs, ys, S=sensitivity, curve="concave", direction="increasing", interp_method="interp1d"
        )
    return None if locator.knee is None else float(locator.knee)


@dataclass(frozen=True)
class KneeEstimate:
    knee: float | None  # on the observed (mean) curve
    median: float | None  # over bootstrap replicates that have a knee
    low: float | None  # 2.5th percentile
    high: float | None  # 97.5th percentile
    no_knee_share: float  # replicates without a knee
    n_boot: int


def bootstrap_accuracy(
    correct: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """[n_boot, n_points] accuracies, resampling each point's samples per problem."""
    curves = np.empty((n_boot, len(correct)))
    for j, matrix in enumerate(correct):
        m = np.asarray(matrix, dtype=float)
        n_problems, n_samples = m.shape
        cols = rng.integers(0, n_samples, size=(n_boot, n_problems, n_samples))
        picked = np.take_along_axis(m[None, :, :].repeat(n_boot, 0), cols, axis=2)
        curves[:, j] = picked.mean(axis=(1, 2))
    return curves


def bootstrap_knee(
    x: Sequence[float],
    correct: Sequence[np.ndarray],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    smooth: str = "isotonic",
    sensitivity: float = 1.0,
) -> KneeEstimate:
    """Knee of mean accuracy vs x with a bootstrap interval over evaluation samples."""
    if len(x) != len(correct):
        raise ValueError(f"{len(x)} x values but {len(correct)} correct matrices")
    observed = [float(np.asarray(m, dtype=float).mean()) for m in correct]
    knee = find_knee(x, observed, smooth=smooth, sensitivity=sensitivity)
    curves = bootstrap_accuracy(correct, n_boot, np.random.default_rng(seed))
    knees = [find_knee(x, curve, smooth=smooth, sensitivity=sensitivity) for curve in curves]
    found = np.array([k for k in knees if k is not None])
    if found.size == 0:
        return KneeEstimate(knee, None, None, None, 1.0, n_boot)
    low, median, high = np.percentile(found, [2.5, 50, 97.5])
    return KneeEstimate(
        knee, float(median), float(low), float(high), 1.0 - found.size / n_boot, n_boot
    )
