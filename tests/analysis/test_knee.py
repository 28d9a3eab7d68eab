import numpy as np
import pytest

from kdlite.analysis.knee import bootstrap_knee, find_knee, isotonic, sorted_curve

GRID = np.round(np.arange(0.1, 1.01, 0.1), 2)


def elbow(at: float, x=GRID) -> np.ndarray:
    """Rises with slope 1 up to `at`, then with slope 0.05: a clean knee at `at`."""
    return np.minimum(x, at) + 0.05 * x


@pytest.mark.parametrize("at", [0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
def test_knee_of_a_clean_elbow(at):
    assert find_knee(GRID, elbow(at)) == pytest.approx(at)


def test_knee_of_a_saturating_exponential():
    assert find_knee(GRID, 1 - np.exp(-GRID / 0.15)) == pytest.approx(0.4)


def test_unsorted_input_gives_the_same_knee():
    order = np.random.default_rng(0).permutation(len(GRID))
    assert find_knee(GRID[order], elbow(0.4)[order]) == pytest.approx(0.4)


def test_duplicate_x_are_averaged():
    x, y = sorted_curve([0.5, 0.1, 0.5], [1.0, 0.0, 3.0])
    np.testing.assert_allclose(x, [0.1, 0.5])
    np.testing.assert_allclose(y, [0.0, 2.0])


@pytest.mark.parametrize("y", [np.full(10, 0.3), np.zeros(10)])
def test_flat_curve_has_no_knee(y):
    assert find_knee(GRID, y) is None


def test_too_few_points_have_no_knee():
    assert find_knee([0.5, 1.0], [0.2, 0.3]) is None


def test_isotonic_pools_a_dip_and_keeps_the_knee():
    y = elbow(0.4)
    y[6] -= 0.008  # a small noisy dip at 0.7, below the 0.6 point
    fitted = isotonic(y)
    assert np.all(np.diff(fitted) >= 0)
    np.testing.assert_allclose(fitted[:5], y[:5])
    assert fitted[5] == fitted[6] == pytest.approx((y[5] + y[6]) / 2)
    assert find_knee(GRID, y) == pytest.approx(0.4)


def test_knee_depends_on_the_data():
    assert find_knee(GRID, elbow(0.3)) != find_knee(GRID, elbow(0.6))


def test_bootstrap_interval_brackets_the_knee_and_is_seeded():
    rng = np.random.default_rng(0)
    acc = 0.1 + 0.8 * np.minimum(GRID, 0.4)
    correct = [(rng.random((30, 64)) < a).astype(int) for a in acc]
    est = bootstrap_knee(GRID, correct, n_boot=100, seed=1)
    assert est.knee == pytest.approx(0.4)
    assert est.low <= 0.4 <= est.high
    assert est == bootstrap_knee(GRID, correct, n_boot=100, seed=1)


def test_bootstrap_of_deterministic_samples_has_zero_width():
    # every sample of a problem agrees, so resampling samples cannot move the curve
    acc = elbow(0.5)
    correct = [
        np.repeat((np.arange(20) < round(20 * a / acc.max()))[:, None], 8, axis=1) for a in acc
    ]
    est = bootstrap_knee(GRID, correct, n_boot=20)
    assert est.low == est.high == est.knee
