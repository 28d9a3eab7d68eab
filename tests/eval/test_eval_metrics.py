import itertools
import math

import pytest

from kdlite.eval.metrics import default_ks, pass_at_k, summarize


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (c correct) that contain a correct one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 3, 6, 9])
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_large_n_is_stable_and_exact():
    # C(64, 32) ~ 1.8e18: compare with exact integer arithmetic
    for c, k in [(1, 1), (5, 8), (30, 32), (63, 64), (0, 64)]:
        exact = 1 - math.comb(64 - c, k) / math.comb(64, k)
        assert pass_at_k(64, c, k) == pytest.approx(exact, rel=1e-12, abs=1e-15)
    assert pass_at_k(64, 7, 1) == pytest.approx(7 / 64)


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_summarize_avg_stderr_ci_and_pass_at_k():
    correct = [[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]]
    s = summarize(correct)
    per = [1.0, 0.25, 0.0]
    mean = sum(per) / 3
    se = math.sqrt(sum((p - mean) ** 2 for p in per) / 2 / 3)
    assert s["avg_at_n"] == pytest.approx(mean)
    assert s["stderr"] == pytest.approx(se)
    assert s["ci95"] == pytest.approx([max(0, mean - 1.96 * se), min(1, mean + 1.96 * se)])
    assert s["pass_at_k"]["1"] == pytest.approx(mean)  # avg@n == pass@1
    assert s["pass_at_k"]["4"] == pytest.approx(2 / 3)
    assert set(s["pass_at_k"]) == {"1", "2", "4"}


def test_default_ks():
    assert default_ks(64) == [1, 2, 4, 8, 16, 32, 64]
    assert default_ks(6) == [1, 2, 4, 6]


def test_summarize_rejects_ragged_matrix():
    with pytest.raises(ValueError):
        summarize([[1, 0], [1]])
