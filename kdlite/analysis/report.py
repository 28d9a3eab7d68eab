"""The sweep report: Markdown tables and PNG figures from a directory of runs, paper next to ours.

What it reproduces: accuracy vs LSP with the un-distilled baseline (Figure 3), knees (Table 3) with a
bootstrap interval, retention at LSP 0.5 (Table 4), left vs right crop at 50% (Figure 4), accuracy
per supervision condition (Figure 1), the lambda ablation (Table 12), and training-loss gaps
(Tables 7-11). A "paper" column shows the study's number wherever `paper.py` has one for the same
pair, data, bench and condition; cells without one stay blank rather than borrowing a neighbour.

Trade-off: runs are grouped by their full condition (supervise, lam, temperature, loss_norm, seed)
rather than by pair alone, so two seeds or two lambdas give two curves instead of one silently
averaged one; the figure legends name only the keys that actually vary in the sweep. Missing and
partial runs are listed in their own section and every table is built from what is there.
Accuracy is `avg_at_n` (full-output score, as lighteval reported it); strict is shown beside it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdlite.analysis import paper
from kdlite.analysis.knee import bootstrap_accuracy, bootstrap_knee
from kdlite.analysis.loss_gap import GapRow, loss_gaps
from kdlite.analysis.runs import CONDITION_KEYS, Run, baseline_for, load_runs

FIGURES = {
    "fig3": "fig3_accuracy_vs_lsp.png",
    "fig4": "fig4_left_vs_right.png",
    "fig1": "fig1_supervision.png",
    "lam": "fig_lambda_ablation.png",
    "gap": "fig_loss_gap.png",
}


# ---------------------------------------------------------------- formatting


def _pct(x: float | None, digits: int = 2) -> str:
    return "" if x is None else f"{100 * x:.{digits}f}"


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "" if x is None else fmt.format(x)


def _signed_pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:+.1f}%"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return "_(no runs for this table)_\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _ci_half(run: Run, bench: str) -> float | None:
    ci = run.results.get(bench, {}).get("ci95")
    return None if not ci else (float(ci[1]) - float(ci[0])) / 2


# ---------------------------------------------------------------- grouping


@dataclass
class Sweep:
    runs: list[Run]
    trained: list[Run]
    baselines: list[Run]
    benches: list[str]
    varying: list[str]  # condition keys that differ between trained runs

    def label(self, run: Run) -> str:
        parts = [f"{k}={run.get(k)}" for k in self.varying]
        return ", ".join(parts)


def make_sweep(runs: list[Run]) -> Sweep:
    trained = [r for r in runs if not r.is_baseline]
    baselines = [r for r in runs if r.is_baseline]
    benches = sorted({b for r in runs for b in r.results})
    varying = [k for k in CONDITION_KEYS if len({repr(r.get(k)) for r in trained}) > 1]
    return Sweep(runs, trained, baselines, benches, varying)


def _is_paper_condition(run: Run) -> bool:
    lam, temp = run.get("lam"), run.get("temperature")
    return (
        run.get("supervise", paper.SUPERVISE) == paper.SUPERVISE
        and (temp is None or float(temp) == paper.TEMPERATURE)
        and (lam is None or float(lam) == paper.LAM)
    )


def _paper_acc(run: Run, bench: str, lsp: float | None = None) -> float | None:
    """Paper accuracy as a fraction for this run's cell (Table 13, or Table 12 for other lambdas)."""
    if run.pair is None or run.data is None or run.crop != "left":
        return None
    if run.get("supervise", paper.SUPERVISE) != paper.SUPERVISE:
        return None
    lam = float(run.get("lam", paper.LAM))
    value = paper.accuracy(run.pair, run.data, bench, run.lsp if lsp is None else lsp, lam)
    return None if value is None else value / 100


def lsp_curves(sweep: Sweep) -> dict[tuple[Any, ...], list[Run]]:
    """Left-crop runs grouped by condition, sorted by lsp (one run per lsp: the first found)."""
    groups: dict[tuple[Any, ...], dict[float, Run]] = defaultdict(dict)
    for run in sweep.trained:
        if run.crop == "left" and run.results:
            groups[run.condition].setdefault(round(run.lsp, 6), run)
    # A single point is no curve (those runs show up in the supervision / lambda tables).
    return {k: [v[p] for p in sorted(v)] for k, v in groups.items() if len(v) > 1}


# ---------------------------------------------------------------- tables


def table_runs(sweep: Sweep) -> str:
    rows: list[list[Any]] = []
    for run in sweep.runs:
        benches = ", ".join(sorted(run.results)) or "-"
        status = "; ".join(run.problems) or "ok"
        if run.is_baseline:
            rows.append([run.name, "baseline", run.model or "", "", "", "", "", benches, status])
        else:
            rows.append(
                [run.name, run.pair, run.data, run.get("supervise"), run.lsp, run.crop,
                 run.get("lam"), benches, status]
            )  # fmt: skip
    header = ["run", "pair", "data", "supervise", "lsp", "crop", "lam", "evaluated", "status"]
    return markdown_table(header, rows)


def table_accuracy_vs_lsp(sweep: Sweep) -> str:
    rows = []
    for curve in lsp_curves(sweep).values():
        base = baseline_for(curve[0], sweep.baselines)
        for bench in sweep.benches:
            for run in curve:
                acc = run.accuracy(bench)
                if acc is None:
                    continue
                rows.append(
                    [run.pair, run.data, sweep.label(run), bench, run.lsp, _pct(acc),
                     _pct(_ci_half(run, bench)), _pct(run.accuracy(bench, strict=True)),
                     _pct(_paper_acc(run, bench)), _pct(base.accuracy(bench)) if base else ""]
                )  # fmt: skip
    header = ["pair", "data", "condition", "bench", "lsp", "ours %", "±ci95", "strict %", "paper %",
              "baseline %"]  # fmt: skip
    return markdown_table(header, rows)


def table_knees(sweep: Sweep, n_boot: int, seed: int, smooth: str) -> tuple[str, list[str]]:
    rows, notes = [], []
    for curve in lsp_curves(sweep).values():
        for bench in sweep.benches:
            points = [(r.lsp, r.correct(bench), r) for r in curve if r.accuracy(bench) is not None]
            if len({p for p, _, _ in points}) < 3:
                continue
            first = curve[0]
            matrices = [c for _, c, _ in points if c is not None]
            if len(matrices) < len(points):
                lacking = [r.name for _, c, r in points if c is None]
                notes.append(
                    f"knee {first.pair}/{first.data}/{bench}: no correct matrix in {lacking}"
                )
                continue
            est = bootstrap_knee(
                [p for p, _, _ in points], matrices, n_boot=n_boot, seed=seed, smooth=smooth
            )
            interval = "" if est.low is None else f"[{est.low:.2f}, {est.high:.2f}]"
            pair, data = first.pair, first.data
            paper_knee = (
                paper.KNEES.get((pair, data, bench))
                if _is_paper_condition(first) and pair is not None and data is not None
                else None
            )
            rows.append(
                [first.pair, first.data, sweep.label(first), bench, len(points), _num(est.knee),
                 _num(est.median), interval, f"{100 * est.no_knee_share:.0f}%", _num(paper_knee)]
            )  # fmt: skip
    header = ["pair", "data", "condition", "bench", "points", "knee (ours)", "bootstrap median",
              "95% interval", "no knee", "paper"]  # fmt: skip
    return markdown_table(header, rows), notes


def _retention_interval(half: Run, full: Run, bench: str, n_boot: int, seed: int):
    c_half, c_full = half.correct(bench), full.correct(bench)
    if c_half is None or c_full is None:
        return None
    curves = bootstrap_accuracy([c_half, c_full], n_boot, np.random.default_rng(seed))
    ok = curves[:, 1] > 0
    if not ok.any():
        return None
    ratio = curves[ok, 0] / curves[ok, 1]
    return tuple(float(v) for v in np.percentile(ratio, [2.5, 97.5]))


def table_retention(sweep: Sweep, n_boot: int, seed: int) -> tuple[str, str]:
    rows, ours_all, paper_all = [], [], []
    for curve in lsp_curves(sweep).values():
        by_lsp = {round(r.lsp, 6): r for r in curve}
        half, full = by_lsp.get(0.5), by_lsp.get(1.0)
        if half is None or full is None:
            continue
        for bench in sweep.benches:
            a_half, a_full = half.accuracy(bench), full.accuracy(bench)
            if a_half is None or a_full is None or a_full == 0:
                continue
            ret = a_half / a_full
            ours_all.append(ret)
            interval = _retention_interval(half, full, bench, n_boot, seed)
            pair, data = half.pair, half.data
            paper_ret = (
                paper.retention(pair, data, bench)
                if _is_paper_condition(half) and pair is not None and data is not None
                else None
            )
            if paper_ret is not None:
                paper_all.append(paper_ret)
            rows.append(
                [half.pair, half.data, sweep.label(half), bench, _pct(a_half), _pct(a_full),
                 _pct(ret, 1), "" if interval is None else f"[{_pct(interval[0], 1)}, {_pct(interval[1], 1)}]",
                 _pct(paper_ret, 1)]
            )  # fmt: skip
    header = ["pair", "data", "condition", "bench", "acc@0.5 %", "acc@1.0 %", "retention %",
              "95% interval", "paper %"]  # fmt: skip
    summary = ""
    if ours_all:
        summary = (
            f"Mean retention over {len(ours_all)} cells: ours {_pct(float(np.mean(ours_all)), 1)}%"
            + (
                f"; paper over the same cells {_pct(float(np.mean(paper_all)), 1)}%"
                if paper_all
                else ""
            )
            + f"; paper over its 30 cells {_pct(paper.RETENTION_MEAN, 0)}%.\n"
        )
    return markdown_table(header, rows), summary


def left_right_pairs(sweep: Sweep) -> list[tuple[Run, Run]]:
    out = []
    for right in sweep.trained:
        if right.crop != "right":
            continue
        for left in sweep.trained:
            if (
                left.crop == "left"
                and left.condition == right.condition
                and abs(left.lsp - right.lsp) < 1e-9
            ):
                out.append((left, right))
                break
    return out


def table_left_right(sweep: Sweep) -> tuple[str, list[str]]:
    rows, notes = [], []
    for right in sweep.trained:
        if right.crop == "right" and not any(r is right for _, r in left_right_pairs(sweep)):
            notes.append(f"{right.name}: right crop without a left run at lsp {right.lsp}")
    for left, right in left_right_pairs(sweep):
        for bench in sweep.benches:
            a_l, a_r = left.accuracy(bench), right.accuracy(bench)
            if a_l is None or a_r is None:
                continue
            rows.append(
                [left.pair, left.data, sweep.label(left), bench, left.lsp, _pct(a_l), _pct(a_r),
                 f"{100 * (a_l - a_r):+.2f}", "left ≫ right"]
            )  # fmt: skip
    header = ["pair", "data", "condition", "bench", "lsp", "left %", "right %", "left − right (pts)",
              "paper"]  # fmt: skip
    return markdown_table(header, rows), notes


def supervision_groups(sweep: Sweep) -> dict[tuple[Any, ...], list[Run]]:
    """Full-length (lsp 1, left) runs that differ only in `supervise`."""
    groups: dict[tuple[Any, ...], list[Run]] = defaultdict(list)
    for run in sweep.trained:
        if run.crop == "left" and run.lsp >= 1.0 and run.results:
            key = (run.pair, run.data) + tuple(
                run.get(k) for k in CONDITION_KEYS if k != "supervise"
            )
            groups[key].append(run)
    return {
        k: sorted(v, key=lambda r: str(r.get("supervise")))
        for k, v in groups.items()
        if len({r.get("supervise") for r in v}) > 1
    }


def table_supervision(sweep: Sweep) -> str:
    rows = []
    for runs in supervision_groups(sweep).values():
        for bench in sweep.benches:
            for run in runs:
                acc = run.accuracy(bench)
                if acc is not None:
                    rows.append(
                        [run.pair, run.data, bench, run.get("supervise"), run.get("lam"), _pct(acc),
                         _pct(_ci_half(run, bench)), _pct(_paper_acc(run, bench))]
                    )  # fmt: skip
    header = ["pair", "data", "bench", "supervise", "lam", "ours %", "±ci95", "paper %"]
    return markdown_table(header, rows)


def lambda_groups(sweep: Sweep) -> dict[tuple[Any, ...], list[Run]]:
    groups: dict[tuple[Any, ...], list[Run]] = defaultdict(list)
    for run in sweep.trained:
        if run.crop == "left" and run.results and run.get("lam") is not None:
            key = (run.pair, run.data, run.lsp) + tuple(
                run.get(k) for k in CONDITION_KEYS if k != "lam"
            )
            groups[key].append(run)
    return {
        k: sorted(v, key=lambda r: float(r.get("lam")))
        for k, v in groups.items()
        if len({float(r.get("lam")) for r in v}) > 1
    }


def table_lambda(sweep: Sweep) -> str:
    rows = []
    for runs in lambda_groups(sweep).values():
        for bench in sweep.benches:
            for run in runs:
                acc = run.accuracy(bench)
                if acc is not None:
                    rows.append(
                        [run.pair, run.data, bench, run.lsp, run.get("lam"), _pct(acc),
                         _pct(_ci_half(run, bench)), _pct(_paper_acc(run, bench))]
                    )  # fmt: skip
    header = ["pair", "data", "bench", "lsp", "lam", "ours %", "±ci95", "paper %"]
    return markdown_table(header, rows)


def _paper_gap_range(row: GapRow, term: str) -> str:
    if row.run.crop == "right":
        lo, hi = (paper.left_vs_right_as_right_vs_left(g) for g in paper.LOSS_GAP_LEFT_VS_RIGHT)
        lo, hi = min(lo, hi), max(lo, hi)
    elif abs(row.run.lsp - 0.5) < 1e-9:
        lo, hi = paper.LOSS_GAP_HALF[term]
    else:
        return ""
    return f"{100 * lo:+.0f}…{100 * hi:+.0f}%"


def table_loss_gap(rows: list[GapRow], sweep: Sweep) -> str:
    """Gaps of the soft loss as the study logged it (cross-entropy against the teacher = KL +
    teacher entropy) and of the hard CE, next to the paper's ranges; the KL's gap (what kdlite
    optimises) in the last columns. Runs that logged no `soft_ce` leave the soft CE cells blank."""
    out = []
    for row in rows:
        run = row.run
        comparison = f"{run.crop} {run.lsp} vs " + (
            f"left {row.ref.lsp}" if run.crop == "right" else "lsp 1.0"
        )
        xent, hard, kl = row.soft_ce, row.hard, row.soft
        steps = next((g.n_steps for g in (xent, hard, kl, row.loss) if g is not None), 0)
        out.append(
            [run.pair, run.data, sweep.label(run), comparison,
             _signed_pct(xent.avg if xent else None), _signed_pct(xent.last if xent else None),
             _paper_gap_range(row, "soft"),
             _signed_pct(hard.avg if hard else None), _signed_pct(hard.last if hard else None),
             _paper_gap_range(row, "hard"),
             _signed_pct(kl.avg if kl else None), _signed_pct(kl.last if kl else None), steps]
        )  # fmt: skip
    header = ["pair", "data", "condition", "comparison", "soft CE avg", "soft CE last",
              "paper soft avg", "hard avg", "hard last", "paper hard avg", "KL avg", "KL last",
              "steps"]  # fmt: skip
    return markdown_table(header, out)


def table_validation(sweep: Sweep) -> str:
    """Final validation losses: cropped like training (`val/loss`, what the study reported) and on
    the full, un-cropped examples (`val_full/loss`), the one comparable across lsp and crop."""
    rows: list[list[Any]] = []
    for run in sweep.trained:
        last = {}
        for key in ("val/loss", "val_full/loss", "val_full/soft", "val_full/soft_ce",
                    "val_full/hard"):  # fmt: skip
            series = run.metrics.get(key) or {}
            last[key] = series[max(series)] if series else None
        if all(v is None for v in last.values()):
            continue
        rows.append(
            [run.name, run.get("supervise"), run.lsp, run.crop, run.get("lam"),
             *(f"{v:.4f}" if v is not None else "" for v in last.values())]
        )  # fmt: skip
    if not rows:
        return "_(no validation losses logged)_\n"
    rows.sort(key=lambda r: (str(r[1]), r[3], -float(r[2])))
    header = ["run", "supervise", "lsp", "crop", "lam", "val loss (cropped)", "val loss (full)",
              "full: soft (KL)", "full: soft CE (KL + teacher entropy)", "full: hard (CE)"]  # fmt: skip
    return markdown_table(header, rows)


def table_derived(sweep: Sweep) -> str:
    """Accuracy next to the share of outputs that derive the right answer before their first
    self-reflection cue, and the share cut at the token limit (results.json of evaluate.py)."""
    rows: list[list[Any]] = []
    for run in sorted(sweep.runs, key=lambda r: (r.is_baseline, str(r.get("supervise")), r.crop,
                                                   -r.lsp, r.name)):  # fmt: skip
        for bench in sorted(run.results):
            res = run.results[bench]
            derived = res.get("derived_before_reflection")
            if derived is None:
                continue
            trunc = (res.get("generation") or {}).get("truncated_share")
            if run.is_baseline:
                where: list[Any] = ["baseline", "", "", ""]
            else:
                where = [run.get("supervise"), run.lsp, run.crop, run.get("lam")]
            anywhere = res.get("derived_anywhere")  # results.json before it: blank
            # synthetic benchmarks only (evaluate.py's `think_conclusion`); blank elsewhere
            concl = res.get("think_conclusion") or {}
            ends, boxes = concl.get("ends_on_gold"), concl.get("boxes_own_conclusion")
            rows.append([run.name, *where, bench, _pct(run.accuracy(bench)),
                         _pct(float(derived)),
                         _pct(anywhere), _pct(ends), _pct(boxes),
                         _pct(trunc)])  # fmt: skip
    if not rows:
        return "_(no evaluation results with this diagnostic; evaluate.py writes it)_\n"
    header = ["run", "supervise", "lsp", "crop", "lam", "bench", "acc %",
              "derived before reflecting %", "derived anywhere %", "think block ends on gold %",
              "boxes its think block's conclusion %", "truncated %"]  # fmt: skip
    return markdown_table(header, rows)


def read_probe(run: Run) -> dict[str, Any] | None:
    """`<run>/probe.json` (written by `python -m kdlite.cli.probe`); None when absent. An unreadable
    file is recorded on the run's problems, not raised."""
    path = run.path / "probe.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        points = data["points"]
        if not isinstance(points, dict):
            raise ValueError("'points' is not a mapping")
        return data
    except Exception as err:  # one bad file must not hide the rest of the report
        run.problems.append(f"unreadable probe.json ({type(err).__name__}: {err})")
        return None


def table_probe(sweep: Sweep) -> str:
    """The closing probe per model: mean summed log-prob of the closing at each probe point, the
    share of traces whose closing is all argmax tokens, and the mean probability of the closing's
    lead alone (the decision to close there; kdlite/analysis/probe.py)."""
    found = []
    for run in sorted(sweep.runs, key=lambda r: (not r.is_baseline, str(r.get("supervise")),
                                                   r.crop, -r.lsp, r.name)):  # fmt: skip
        data = read_probe(run)
        if data is not None:
            found.append((run, data))
    names: list[str] = []  # probe points in the files' order
    for _, data in found:
        names += [p for p in data["points"] if p not in names]
    rows: list[list[Any]] = []
    for run, data in found:
        where = (
            ["baseline", "", ""] if run.is_baseline else [run.get("supervise"), run.lsp, run.crop]
        )
        cells = []
        for point in names:
            res = data["points"].get(point)
            if res is None:
                cells.append("")
                continue
            cell = f"{res['logprob']:.2f} ({100 * res['greedy_closes']:.0f}%)"
            if "p_lead" in res:  # probe.json files written before the lead lack it
                cell += f"; lead {100 * res['p_lead']:.0f}%"
            cells.append(cell)
        rows.append([run.name, *where, data.get("n", ""), *cells])
    if not rows:
        return "_(no probe.json in any run; `python -m kdlite.cli.probe` writes it)_\n"
    header = ["run", "supervise", "lsp", "crop", "traces",
              *(f"{p.replace('_', ' ')}: log-prob (greedy closes); lead p" for p in names)]  # fmt: skip
    return markdown_table(header, rows)


def table_baselines(sweep: Sweep) -> str:
    rows = [
        [b.name, b.model or "", bench, _pct(b.accuracy(bench)), _pct(_ci_half(b, bench))]
        for b in sweep.baselines
        for bench in sorted(b.results)
    ]
    return markdown_table(["dir", "model", "bench", "acc %", "±ci95"], rows)


# ---------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int):
    plt = _plt()
    cols = min(3, max(1, n))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 3.8 * rows), squeeze=False)
    return plt, fig, list(axes.flat)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)


def _err(run: Run, bench: str) -> tuple[float, float]:
    """The run's 95% interval as (below, above) its accuracy, in %, for an error bar; (0, 0) when
    unknown. The evaluator clips the interval to [0, 1], so a bar never crosses 0% or 100%."""
    ci, acc = run.results.get(bench, {}).get("ci95"), run.accuracy(bench)
    if not ci or acc is None:
        return (0.0, 0.0)
    return (100 * max(0.0, acc - float(ci[0])), 100 * max(0.0, float(ci[1]) - acc))


def _yerr(errs: Sequence[tuple[float, float]]) -> list[list[float]]:
    """matplotlib's asymmetric `yerr` (a row below, a row above) from `_err` pairs."""
    return [[e[0] for e in errs], [e[1] for e in errs]]


def _cell(run: Run, sweep: Sweep, bench: str | None = None) -> str:
    """`pair tiny · data synthetic · bench aime24`, keeping only what differs between the sweep's
    runs (what is shared goes in the title, `_shared`)."""
    parts = []
    if len({r.pair for r in sweep.trained}) > 1:
        parts.append(f"pair {run.pair}")
    if len({r.data for r in sweep.trained}) > 1:
        parts.append(f"data {run.data}")
    if bench is not None and len(sweep.benches) > 1:
        parts.append(f"bench {bench}")
    return " · ".join(parts)


def _shared(sweep: Sweep) -> str:
    """What every run of the sweep shares (pair, data, bench), for figure titles."""
    parts = []
    if len(pairs := {r.pair for r in sweep.trained}) == 1:
        parts.append(f"pair {next(iter(pairs))}")
    if len(datas := {r.data for r in sweep.trained}) == 1:
        parts.append(f"data {next(iter(datas))}")
    if len(sweep.benches) == 1:
        parts.append(f"bench {sweep.benches[0]}")
    return f"\n({', '.join(parts)})" if parts else ""  # a second line: titles stay in the figure


def figure_accuracy_vs_lsp(sweep: Sweep, path: Path) -> bool:
    """Accuracy vs LSP per pair x data, 95% intervals as error bars; False (no file) with no curve."""
    by_pair: dict[tuple[Any, Any], list[list[Run]]] = defaultdict(list)
    for curve in lsp_curves(sweep).values():
        by_pair[(curve[0].pair, curve[0].data)].append(curve)
    if not by_pair:
        return False
    plt, fig, axes = _grid(len(by_pair))
    for ax, ((pair, data), curves) in zip(axes, by_pair.items(), strict=False):
        baselines_drawn: set[str] = set()
        for curve in curves:
            base = baseline_for(curve[0], sweep.baselines)
            for bench in sweep.benches:
                pts = [(r.lsp, 100 * acc, _err(r, bench)) for r in curve
                       if (acc := r.accuracy(bench)) is not None]  # fmt: skip
                if not pts:
                    continue
                what = [bench] if len(sweep.benches) > 1 else []
                label = (
                    ", ".join(what + ([sweep.label(curve[0])] if sweep.varying else []))
                    or "distilled"
                )
                xs, ys, es = zip(*pts, strict=True)
                bars = ax.errorbar(xs, ys, yerr=_yerr(es), fmt="o-", capsize=3, label=label)
                color = bars.lines[0].get_color()
                paper_pts = [(p, _paper_acc(curve[0], bench, p)) for p in (0.5, 1.0)]
                paper_pts = [(p, 100 * a) for p, a in paper_pts if a is not None]
                if paper_pts:
                    ax.plot(*zip(*paper_pts, strict=True), "x", ms=9, color=color,
                            label=f"{label}: paper")  # fmt: skip
                base_acc = None if base is None else base.accuracy(bench)
                if base_acc is not None and bench not in baselines_drawn:
                    baselines_drawn.add(bench)
                    ax.axhline(100 * base_acc, ls="--", color=color, alpha=0.6,
                               label=f"{bench}: un-distilled student")  # fmt: skip
        ax.set_title(f"pair {pair} · data {data}")
        ax.set_xlabel("LSP (share of each trace kept)")
        ax.set_ylabel("accuracy % (error bars: 95% CI)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    for ax in axes[len(by_pair) :]:
        ax.set_axis_off()
    _save(fig, path)
    return True


def _bars(
    ax,
    groups: list[str],
    series: dict[str, list[float | None]],
    errors: dict[str, list[tuple[float, float]]],
) -> None:
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        ys = [np.nan if v is None else 100 * v for v in values]
        errs = errors.get(name)
        ax.bar(x + i * width - 0.4 + width / 2, ys, width, yerr=errs and _yerr(errs), capsize=3,
               label=name)  # fmt: skip
    ax.set_xticks(
        x,
        groups,
        rotation=20 if len(groups) > 3 else 0,
        ha="right" if len(groups) > 3 else "center",
        fontsize=8,
    )
    ax.set_ylabel("accuracy % (error bars: 95% CI)")
    ax.legend(fontsize=7)


def figure_left_right(sweep: Sweep, path: Path) -> bool:
    groups, left_v, right_v, left_e, right_e = [], [], [], [], []
    for left, right in left_right_pairs(sweep):
        for bench in sweep.benches:
            if left.accuracy(bench) is None or right.accuracy(bench) is None:
                continue
            groups.append(" · ".join(filter(None, [_cell(left, sweep, bench), f"LSP {left.lsp}"])))
            left_v.append(left.accuracy(bench))
            right_v.append(right.accuracy(bench))
            left_e.append(_err(left, bench))
            right_e.append(_err(right, bench))
    if not groups:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    _bars(ax, groups, {"left (lead kept)": left_v, "right (tail kept)": right_v},
          {"left (lead kept)": left_e, "right (tail kept)": right_e})  # fmt: skip
    ax.set_title("Left vs right crop (Figure 4)" + _shared(sweep))
    _save(fig, path)
    return True


def figure_supervision(sweep: Sweep, path: Path) -> bool:
    groups: list[str] = []
    series: dict[str, list[float | None]] = defaultdict(list)
    errors: dict[str, list[tuple[float, float]]] = defaultdict(list)
    sup_groups = supervision_groups(sweep)
    names = sorted({str(r.get("supervise")) for g in sup_groups.values() for r in g})
    for runs in sup_groups.values():
        for bench in sweep.benches:
            groups.append(_cell(runs[0], sweep, bench) or "supervised sections")
            by_sup = {str(r.get("supervise")): r for r in runs}
            for name in names:
                run = by_sup.get(name)
                series[name].append(None if run is None else run.accuracy(bench))
                errors[name].append((0.0, 0.0) if run is None else _err(run, bench))
    if not groups:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    _bars(ax, groups, dict(series), dict(errors))
    ax.set_title("Accuracy per supervised section (Figure 1)" + _shared(sweep))
    _save(fig, path)
    return True


def figure_lambda(sweep: Sweep, path: Path) -> bool:
    groups = lambda_groups(sweep)
    drawn = False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for runs in groups.values():
        for bench in sweep.benches:
            pts = [(float(r.get("lam")), 100 * acc, _err(r, bench)) for r in runs
                   if (acc := r.accuracy(bench)) is not None]  # fmt: skip
            if not pts:
                continue
            drawn = True
            label = " · ".join(filter(None, [_cell(runs[0], sweep, bench), f"LSP {runs[0].lsp}"]))
            xs, ys, es = zip(*pts, strict=True)
            bars = ax.errorbar(xs, ys, yerr=_yerr(es), fmt="o-", capsize=3, label=label)
            paper_pts = [
                (lam, _paper_acc(r, bench)) for lam, r in ((float(r.get("lam")), r) for r in runs)
            ]
            paper_pts = [(lam, 100 * a) for lam, a in paper_pts if a is not None]
            if paper_pts:
                ax.plot(*zip(*paper_pts, strict=True), "x--", color=bars.lines[0].get_color(),
                        alpha=0.6, label=f"{label}: paper")  # fmt: skip
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("lam (weight of the KL term)")
    ax.set_ylabel("accuracy % (error bars: 95% CI)")
    ax.set_title("lambda ablation (Table 12)" + _shared(sweep))
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def trailing_mean(values: list[float], window: int) -> np.ndarray:
    """Trailing mean over `window` points (fewer at the start), same length as `values`."""
    v = np.asarray(values, dtype=float)
    csum = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


def figure_loss_gap(rows: list[GapRow], path: Path, prefix: str = "train") -> bool:
    """Relative loss gap per step, a trailing mean over ~5% of the steps (stated on the axes)."""
    curves = []
    for term in ("soft", "hard"):
        for row in rows:
            p = row.run.metrics.get(f"{prefix}/{term}", {})
            r = row.ref.metrics.get(f"{prefix}/{term}", {})
            steps = sorted(s for s in set(p) & set(r) if r[s] != 0)
            if steps:
                curves.append((term, row, steps, [100 * (p[s] - r[s]) / r[s] for s in steps]))
    if not curves:
        return False
    sweep = _sweep_of(rows)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, term in zip(axes, ("soft", "hard"), strict=True):
        mine = [c for c in curves if c[0] == term]
        if not mine:
            ax.set_axis_off()
            continue
        window = max(1, max(len(c[2]) for c in mine) // 20)
        for _, row, steps, rel in mine:
            run = row.run
            label = " · ".join(
                filter(None, [_cell(run, sweep), f"{run.crop} LSP {run.lsp}", sweep.label(run)])
            )
            ax.plot(steps, trailing_mean(rel, window), label=label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"{term}: (L_partial − L_ref) / L_ref")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"gap %, trailing mean of {window} logged steps" if window > 1 else "gap %")
        ax.legend(fontsize=7)
    _save(fig, path)
    return True


def _sweep_of(rows: list[GapRow]) -> Sweep:
    return make_sweep([row.run for row in rows] + [row.ref for row in rows])


# ---------------------------------------------------------------- the report


def write_report(
    root: str | Path,
    out_dir: str | Path | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    smooth: str = "isotonic",
) -> Path:
    """Read every run under `root`, write `report.md` and the PNG figures to `out_dir`; returns the
    path of report.md. Default `out_dir`: `<root>/report`."""
    root = Path(root)
    out = Path(out_dir) if out_dir is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    sweep = make_sweep(load_runs(root))
    gap_rows, gap_missing = loss_gaps(sweep.trained)
    knees, knee_notes = table_knees(sweep, n_boot, seed, smooth)
    retention, retention_summary = table_retention(sweep, n_boot, seed)
    left_right, lr_notes = table_left_right(sweep)

    drawn = {
        "fig3": figure_accuracy_vs_lsp(sweep, out / FIGURES["fig3"]),
        "fig4": figure_left_right(sweep, out / FIGURES["fig4"]),
        "fig1": figure_supervision(sweep, out / FIGURES["fig1"]),
        "lam": figure_lambda(sweep, out / FIGURES["lam"]),
        "gap": figure_loss_gap(gap_rows, out / FIGURES["gap"]),
    }
    for key, name in FIGURES.items():  # no stale figure from an earlier report of this folder
        if not drawn[key]:
            (out / name).unlink(missing_ok=True)

    def image(key: str, alt: str) -> str:
        return f"![{alt}]({FIGURES[key]})\n" if drawn[key] else "_(no runs for this figure)_\n"

    problems = [f"{r.name}: {p}" for r in sweep.runs for p in r.problems]
    problems += gap_missing + knee_notes + lr_notes
    parts = [
        "# kdlite sweep report\n",
        f"Runs under `{root}`: {len(sweep.trained)} trained, {len(sweep.baselines)} baseline(s); "
        f"benchmarks: {', '.join(sweep.benches) or 'none'}. Accuracy is avg@n (pass@1 averaged over "
        'samples, full-output score); "paper" is the study\'s number for the same pair, data, bench '
        "and condition (blank where it has none).\n",
        "## Missing or partial\n",
        "\n".join(f"- {p}" for p in problems) + "\n" if problems else "None.\n",
        "## Accuracy vs LSP (Figure 3)\n",
        image("fig3", "accuracy vs LSP"),
        table_accuracy_vs_lsp(sweep),
        "## Knee of accuracy vs LSP (Table 3)\n",
        f"Kneedle (concave, increasing) on the `{smooth}`-smoothed mean curve; interval from "
        f"{n_boot} bootstrap replicates resampling evaluation samples per problem (seed {seed}).\n",
        knees,
        "## Retention at LSP 0.5 (Table 4)\n",
        "retention = acc(0.5) / acc(1.0); interval from the same sample bootstrap.\n",
        retention,
        retention_summary,
        "## Left vs right crop (Figure 4)\n",
        image("fig4", "left vs right"),
        left_right,
        "## Supervised sections (Figure 1)\n",
        image("fig1", "supervision"),
        table_supervision(sweep),
        "## lambda ablation (Table 12)\n",
        image("lam", "lambda"),
        table_lambda(sweep),
        "## Answer derived before reflecting (diagnostic)\n",
        "Accuracy grades the final answer. This column counts the outputs that derive the right "
        "answer (a result such as `= 42`, not a quote of the problem) before their first "
        "self-reflection cue (docs/paper.md's keywords), whatever comes after: the study's claim is that "
        "a trace's lead carries the reasoning, and a student trained on left crops may derive the "
        "answer, then reflect without ever closing its think block (see truncated). Lenient: any "
        "such result counts, also an intermediate value equal to the answer. Traces that reflect "
        "inside their first pass (the synthetic corpus, built to Table 6) never derive before a "
        "cue, so *derived anywhere* counts such a result anywhere in the output: above accuracy, "
        "it is reasoning that was done but never concluded. On the synthetic benchmarks, *think "
        "block ends on gold* is the share of outputs whose think block's last stated conclusion is "
        "the gold (a re-check can move a model off a value it derived), and *boxes its think "
        "block's conclusion* the share of the outputs that close their think block whose boxed "
        "answer is that conclusion (docs/mini-replication.md §8).\n",
        table_derived(sweep),
        "## Closing probe (diagnostic)\n",
        "Does the model still close with an answer? Mean over held-out synthetic traces of the "
        "summed log-prob of ` The answer is \\boxed{N}.` + end token under teacher forcing, after "
        "the trace's first pass, after its re-check, and after `</think>` and the answer's chain "
        "line (there with `<|im_end|>`, as the trace writes it); *end think after first pass* "
        "scores the chat closing instead (`</think>`, the trace's answer section, `<|im_end|>`) "
        "right after the first pass. In brackets the share of traces whose every closing token is "
        "the model's argmax. Definition and caveats: "
        "`kdlite/analysis/probe.py`; written by `python -m kdlite.cli.probe` as `<run>/probe.json`.\n",
        table_probe(sweep),
        "## Training-loss gap (Tables 7–11)\n",
        "(L_partial(t) − L_ref(t)) / L_ref(t) on shared logged steps: mean over steps (avg) and at "
        "the last shared step. Soft CE is `train/soft_ce`, the cross-entropy against the teacher's "
        "distribution (= KL + teacher entropy): the quantity the study's code logged as its soft "
        "loss and its Tables 7–11 compare, so it is the one beside the paper's range. KL is "
        "`train/soft`, what kdlite optimises; it goes to 0 as the student approaches the teacher, "
        "so its relative gaps can explode or flip sign. Hard is `train/hard`. Reference: the "
        "lsp 1.0 run for a left crop, the left run at the same lsp for a right crop. The paper "
        "states left vs right as (L_left − L_right)/L_right = −9…−20%; it is shown here converted "
        "to right vs left. The figure plots the KL and hard curves.\n",
        image("gap", "loss gap"),
        table_loss_gap(gap_rows, sweep),
        "## Validation loss on full examples\n",
        "Last logged validation loss per run. Training and `val/loss` see the cropped examples; "
        "`val_full/*` is measured on the same validation examples un-cropped, so runs with "
        "different lsp or crop are compared on equal terms.\n",
        table_validation(sweep),
        "## Baselines (un-distilled)\n",
        table_baselines(sweep),
        "## Runs\n",
        table_runs(sweep),
    ]
    report = out / "report.md"
    report.write_text("\n".join(parts))
    return report
