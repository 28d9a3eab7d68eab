"""Loss-gap tables on the soft cross-entropy (what the study logged) with the KL kept beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlite.analysis.loss_gap import loss_gaps
from kdlite.analysis.report import make_sweep, table_loss_gap, table_validation
from kdlite.analysis.runs import load_runs

ENTROPY = 1.0  # teacher entropy per token: the same for every run (same teacher, same data)


def _write_run(root: Path, name: str, lsp: float, kl: float, hard: float, with_ce=True) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(
        f"lsp: {lsp}\ncrop: left\nlam: 0.5\nsupervise: p_cot_a\npair: {{name: tiny}}\n"
        "data: {name: synthetic}\n"
    )
    cols = ["step", "train/loss", "train/soft", "train/hard"] + (["train/soft_ce"] * with_ce)
    lines = [",".join(cols + ["val_full/soft", "val_full/soft_ce"])]
    for step in range(10):
        k, h = kl * (1 + 0.1 * step), hard
        row = [step, 0.5 * k + 0.5 * h, k, h] + ([k + ENTROPY] * with_ce)
        lines.append(",".join(str(x) for x in row) + ",,")
    lines.append(",".join(["9"] + [""] * (len(cols) - 1) + [str(kl), str(kl + ENTROPY)]))
    (d / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_soft_ce_gap_is_the_papers_quantity_and_kl_gap_stays_available(tmp_path):
    _write_run(tmp_path, "lsp=1.0", 1.0, kl=0.01, hard=0.5)
    _write_run(tmp_path, "lsp=0.5", 0.5, kl=0.05, hard=0.55)
    _write_run(tmp_path, "lsp=0.25", 0.25, kl=0.05, hard=0.6, with_ce=False)
    sweep = make_sweep(load_runs(tmp_path))
    rows, missing = loss_gaps(sweep.trained)
    assert not missing
    by = {r.run.name: r for r in rows}
    half = by["lsp=0.5"]
    # KL: 0.05·f vs 0.01·f → +400%; soft CE: (0.05·f + 1) vs (0.01·f + 1) → a few percent
    assert half.soft is not None and half.soft.avg == pytest.approx(4.0)
    expected = [
        (0.05 * f + ENTROPY) / (0.01 * f + ENTROPY) - 1 for f in (1 + 0.1 * s for s in range(10))
    ]
    assert half.soft_ce is not None
    assert half.soft_ce.avg == pytest.approx(sum(expected) / 10)
    assert half.soft_ce.last == pytest.approx(expected[-1])
    # the total as the study logged it: 0.5·soft_ce + 0.5·hard
    loss_ce = [(0.5 * (0.05 * f + 1) + 0.275) / (0.5 * (0.01 * f + 1) + 0.25) - 1
               for f in (1 + 0.1 * s for s in range(10))]  # fmt: skip
    assert half.loss_ce is not None and half.loss_ce.avg == pytest.approx(sum(loss_ce) / 10)
    assert by["lsp=0.25"].soft_ce is None and by["lsp=0.25"].soft is not None

    table = table_loss_gap(rows, sweep)
    header = table.splitlines()[0]
    assert "soft CE avg" in header and "KL avg" in header
    assert header.index("soft CE avg") < header.index("paper soft avg") < header.index("KL avg")
    half_row = next(line for line in table.splitlines() if "left 0.5 vs lsp 1.0" in line)
    assert f"| {100 * sum(expected) / 10:+.1f}% |" in half_row
    assert "| +400.0% |" in half_row
    quarter_row = next(line for line in table.splitlines() if "left 0.25 vs lsp 1.0" in line)
    assert quarter_row.split("|")[5].strip() == ""  # no soft_ce logged: blank, not the KL

    validation = table_validation(sweep)
    assert "soft CE (KL + teacher entropy)" in validation
    assert "| 1.0500 |" in next(line for line in validation.splitlines() if "lsp=0.5 " in line)
