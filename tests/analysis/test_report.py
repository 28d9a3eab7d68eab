import shutil
from pathlib import Path

import pytest

from kdlite.analysis import paper
from kdlite.analysis.loss_gap import loss_gaps, relative_gap
from kdlite.analysis.report import FIGURES, write_report
from kdlite.analysis.runs import baseline_for, load_runs, read_metrics

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sweep" / "runs"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep") / "runs"
    shutil.copytree(FIXTURE, root)
    path = write_report(root, n_boot=40, seed=0)
    return root, path, path.read_text()


def _section(text: str, title: str) -> str:
    return text.split(title, 1)[1].split("\n## ", 1)[0]


def _row(text: str, *cells: str) -> str:
    rows = [line for line in text.splitlines() if all(f"| {c} |" in line for c in cells)]
    assert len(rows) == 1, (cells, rows)
    return rows[0]


def test_report_writes_every_table_and_figure(report):
    root, path, text = report
    assert path == root / "report" / "report.md"
    for name in FIGURES.values():
        png = path.parent / name
        assert png.read_bytes()[:4] == b"\x89PNG", name
        assert f"]({name})" in text
    for title in [
        "Figure 3",
        "Table 3",
        "Table 4",
        "Figure 4",
        "Figure 1",
        "Table 12",
        "Tables 7–11",
    ]:
        assert title in text
    assert "_(no runs for this table)_" not in text
    assert "Validation loss on full examples" in text
    # lsp=1.0 runs get soft_scale 1.0 in the fixture: val_full/loss is 2.5 x that at the last step.
    assert "| 2.5000 |" in text


def test_derived_before_reflection_is_shown_next_to_accuracy(report):
    _, _, text = report
    section = _section(text, "## Answer derived before reflecting")
    row = _row(section, "lsp=0.5", "aime24")
    # fixture: 25 of 48 correct, derived = (25 + 6) / 48, truncated 12.5%; its results.json
    # predate derived_anywhere and think_conclusion (and aime24 is not synthetic): blank cells
    assert f"| {100 * 25 / 48:.2f} | {100 * 31 / 48:.2f} |  |  |  | 12.50 |" in row
    assert _row(section, "eval/qwen3-4b-base", "aime25").count("| baseline |") == 1


def test_think_conclusion_counts_are_shown_where_evaluate_wrote_them(tmp_path):
    import json

    root = tmp_path / "runs"
    shutil.copytree(FIXTURE, root)
    path = root / "lsp=0.5" / "eval" / "aime24" / "results.json"
    res = json.loads(path.read_text())
    res["derived_anywhere"] = 0.75
    res["think_conclusion"] = {"ends_on_gold": 0.5, "closed_think": 40, "boxes_own_conclusion": 0.8}
    path.write_text(json.dumps(res))
    text = write_report(root, n_boot=10, seed=0).read_text()
    row = _row(_section(text, "## Answer derived before reflecting"), "lsp=0.5", "aime24")
    assert "| 75.00 | 50.00 | 80.00 | 12.50 |" in row


def test_missing_and_partial_runs_are_listed(report):
    _, _, text = report
    missing = _section(text, "## Missing or partial")
    assert "lsp=0.3: no evaluation results" in missing
    assert "lsp=0.8: eval/aime25: 4 of 8 samples (partial)" in missing


def test_knee_and_retention_against_known_fixture_values(report):
    _, _, text = report
    knee_row = _row(_section(text, "(Table 3)"), "aime24", "6")
    assert "| 0.40 |" in knee_row  # fixture built with its knee at 0.4
    assert "| 0.20 |" in knee_row  # paper: 8B->4B Bespoke AIME24
    ret_row = _row(_section(text, "(Table 4)"), "supervise=p_cot_a, lam=0.5", "aime24")
    assert f"| {100 * 25 / 28:.1f} |" in ret_row
    assert f"| {100 * paper.retention('8b_4b', 'bespoke', 'aime24'):.1f} |" in ret_row


def test_paper_column_and_baseline(report):
    _, _, text = report
    row = _row(_section(text, "(Figure 3)"), "supervise=p_cot_a, lam=0.5", "aime24", "1.0")
    assert "| 19.79 |" in row  # Table 13
    assert "| 10.42 |" in row  # baseline: 5 of 48
    lam_row = _row(_section(text, "(Table 12)"), "aime25", "0.5", "0.0")
    assert "| 16.04 |" in lam_row


def test_loss_gaps_from_fixture_curves():
    runs = load_runs(FIXTURE)
    rows, missing = loss_gaps([r for r in runs if not r.is_baseline])
    by_name = {r.run.name: r for r in rows}
    half = by_name["lsp=0.5"]
    assert half.ref.name == "lsp=1.0"
    assert half.soft.avg == pytest.approx(0.10, abs=1e-5)
    assert half.hard.last == pytest.approx(0.05, abs=1e-5)
    right = by_name["crop=right,lsp=0.5"]
    assert right.ref.name == "lsp=0.5"
    assert right.soft.avg == pytest.approx(0.15, abs=1e-5)
    assert half.soft.n_steps == 20 and not missing


def test_relative_gap_aligns_steps_and_reports_last():
    gap = relative_gap({1: 2.0, 2: 3.0, 5: 9.0}, {1: 1.0, 2: 2.0, 3: 7.0})
    assert (gap.avg, gap.last, gap.n_steps, gap.last_step) == (0.75, 0.5, 2, 2)
    assert relative_gap({1: 1.0}, {2: 1.0}) is None


def test_discovery_skips_hydra_copies_and_finds_the_baseline():
    runs = load_runs(FIXTURE)
    names = {r.name for r in runs}
    assert not any(".hydra" in n for n in names)
    (base,) = [r for r in runs if r.is_baseline]
    assert base.name == "eval/qwen3-4b-base"
    run = next(r for r in runs if r.name == "lsp=1.0")
    assert baseline_for(run, [base]) is base


def test_sparse_csv_is_read_per_column(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("step,train/loss,val/loss\n0,2.0,\n0,4.0,\n9,,1.5\n9,1.0,\n")
    assert read_metrics(csv) == {"train/loss": {0: 3.0, 9: 1.0}, "val/loss": {9: 1.5}}


def test_broken_runs_are_reported_not_fatal(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.yaml").write_text("lsp: 0.5\ncrop: left\npair: {name: x}\n")
    (tmp_path / "a" / "eval" / "aime24").mkdir(parents=True)
    (tmp_path / "a" / "eval" / "aime24" / "results.json").write_text("{not json")
    text = write_report(tmp_path, n_boot=5).read_text()
    assert "a: no metrics.csv" in text
    assert "a: unreadable eval/aime24/results.json" in text
    assert "a: no evaluation results" in text
