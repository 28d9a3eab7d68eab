"""The report's figures: 95% intervals as error bars, labels that name only what differs, smoothed
loss gaps with the smoothing stated, and no figure at all when nothing can be drawn."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.axes
import numpy as np
import pytest

from kdlite.analysis import report as rep
from kdlite.analysis.runs import load_runs

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sweep" / "runs"


@pytest.fixture
def calls(monkeypatch):
    seen: list[dict] = []
    orig = matplotlib.axes.Axes.errorbar

    def spy(self, x, y, yerr=None, **kw):
        seen.append({"x": list(x), "y": list(y), "yerr": list(yerr), "label": kw.get("label")})
        return orig(self, x, y, yerr=yerr, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    return seen


def test_accuracy_curves_carry_their_95_percent_intervals(tmp_path, calls):
    sweep = rep.make_sweep(load_runs(FIXTURE))
    assert rep.figure_accuracy_vs_lsp(sweep, tmp_path / "f.png")
    # asymmetric bars: a row below and a row above each point
    assert calls and all(len(c["yerr"]) == 2 for c in calls)
    assert all(len(row) == len(c["y"]) for c in calls for row in c["yerr"])
    run = next(r for r in sweep.trained if r.results.get("aime24", {}).get("ci95"))
    lo, hi = run.results["aime24"]["ci95"]
    acc = run.accuracy("aime24")
    assert rep._err(run, "aime24") == pytest.approx((100 * (acc - lo), 100 * (hi - acc)))
    assert any(e > 0 for c in calls for row in c["yerr"] for e in row)


def test_error_bars_stop_at_the_clipped_interval(tmp_path, calls):
    """An accuracy near 0 has an interval clipped at 0 by the evaluator: its bar must not reach
    below 0%, as a symmetric half-width bar would (2.5% with [0.0, 7.4] drew down to -1.2%)."""
    sweep = rep.make_sweep(load_runs(FIXTURE))
    run = next(r for r in sweep.trained if r.results.get("aime24", {}).get("ci95"))
    run.results["aime24"] = {**run.results["aime24"], "avg_at_n": 0.025, "ci95": [0.0, 0.074]}
    assert run.accuracy("aime24") == pytest.approx(0.025)
    assert rep._err(run, "aime24") == pytest.approx((2.5, 4.9))
    assert rep.figure_accuracy_vs_lsp(sweep, tmp_path / "f.png")
    for c in calls:
        for y, below in zip(c["y"], c["yerr"][0], strict=True):
            assert y - below >= -1e-9


def test_labels_name_only_what_differs(tmp_path):
    sweep = rep.make_sweep(load_runs(FIXTURE))
    one = rep.Sweep(sweep.runs, [sweep.trained[0]], [], ["aime24"], [])
    assert rep._cell(one.trained[0], one, "aime24") == ""  # nothing differs: nothing repeated
    assert (
        rep._shared(one)
        == f"\n(pair {one.trained[0].pair}, data {one.trained[0].data}, bench aime24)"
    )
    assert "bench aime25" in rep._cell(sweep.trained[0], sweep, "aime25")


def test_loss_gap_is_a_trailing_mean_stated_on_the_axis():
    assert rep.trailing_mean([0, 2, 4, 6], 2).tolist() == [0, 1, 3, 5]
    noisy = np.tile([10.0, -10.0], 50)
    assert np.abs(rep.trailing_mean(list(noisy), 10)[10:]).max() == 0


def test_no_figure_when_nothing_can_be_drawn(tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(FIXTURE / "lsp=0.6", root / "lsp=0.6")  # one run: no curve, no pair, no gap
    text = rep.write_report(root, n_boot=5).read_text()
    assert not list((root / "report").glob("*.png"))
    assert "_(no runs for this figure)_" in text and "](fig" not in text
