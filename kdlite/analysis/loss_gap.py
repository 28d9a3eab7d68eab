"""Relative training-loss differences between runs from their logged curves (the study's Tables 7-11).

gap(t) = (L_partial(t) - L_ref(t)) / L_ref(t) on the steps both runs logged, reported as the mean
over those steps ("avg") and at the last shared step ("last"), for the soft and hard (CE) terms and
the total. The soft term comes in two forms: `soft_ce`, the cross-entropy against the teacher's
distribution (= KL + the teacher's entropy), which is what the study's code logged and its tables
compare, and `soft`, the KL that kdlite optimises. They differ by the teacher's entropy on the
run's supervised tokens, which does not depend on the student (but does on the crop: runs with
different lsp average it over different tokens). The KL goes to 0 as the student approaches the
teacher, so its relative gaps can be arbitrarily large and even change sign against the CE's;
those of the soft CE stay on the scale the paper reports. `loss_ce` is the total as the study
logged it, lam·soft_ce + (1 − lam)·hard. The reference of a left-cropped run with lsp < 1 is the run with the same condition at
lsp 1.0; the reference of a right-cropped run is the left-cropped run at the same lsp (Right 50%
against Left 50%). Steps are aligned by exact optimizer-step number, never interpolated: runs of one
grid see the same examples in the same order, so step t is the same batch in both (cropped
differently), and interpolation would blend different batches. A run that stopped early is
compared on the shared prefix and the step counts are reported so a short overlap is visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdlite.analysis.runs import Run


@dataclass(frozen=True)
class Gap:
    avg: float
    last: float
    n_steps: int  # aligned steps
    last_step: int


def relative_gap(partial: dict[int, float], ref: dict[int, float]) -> Gap | None:
    """Gap of one logged column; None when the runs share no step with a nonzero reference."""
    steps = sorted(s for s in set(partial) & set(ref) if ref[s] != 0)
    if not steps:
        return None
    p = np.array([partial[s] for s in steps])
    r = np.array([ref[s] for s in steps])
    rel = (p - r) / r
    return Gap(avg=float(rel.mean()), last=float(rel[-1]), n_steps=len(steps), last_step=steps[-1])


def reference_for(run: Run, runs: list[Run]) -> Run | None:
    """lsp-1.0 left run of the same condition for a left crop; the left run at the same lsp for a right crop."""
    if run.crop == "right":
        want_lsp, want_crop = run.lsp, "left"
    elif run.lsp < 1.0:
        want_lsp, want_crop = 1.0, "left"
    else:
        return None
    for other in runs:
        if (
            other is not run
            and not other.is_baseline
            and other.condition == run.condition
            and other.crop == want_crop
            and abs(other.lsp - want_lsp) < 1e-9
        ):
            return other
    return None


@dataclass(frozen=True)
class GapRow:
    run: Run
    ref: Run
    soft: Gap | None  # KL
    hard: Gap | None
    loss: Gap | None  # lam·KL + (1 − lam)·CE: the optimised loss
    soft_ce: Gap | None = None  # soft cross-entropy (KL + teacher entropy), as the study logged
    loss_ce: Gap | None = None  # lam·soft_ce + (1 − lam)·hard, as the study logged


TERMS = ("soft", "hard", "loss", "soft_ce", "loss_ce")


def curve(run: Run, prefix: str, term: str) -> dict[int, float]:
    """A logged column `{prefix}/{term}`; `loss_ce` is derived per step from the logged loss, KL
    and soft CE (loss + lam·(soft_ce − soft)), on the steps that have all three."""
    if term != "loss_ce":
        return run.metrics.get(f"{prefix}/{term}", {})
    loss, soft, soft_ce = (
        run.metrics.get(f"{prefix}/{t}", {}) for t in ("loss", "soft", "soft_ce")
    )
    lam = float(run.get("lam", 0.5))
    return {s: loss[s] + lam * (soft_ce[s] - soft[s]) for s in loss if s in soft and s in soft_ce}


def loss_gaps(runs: list[Run], prefix: str = "train") -> tuple[list[GapRow], list[str]]:
    """One row per run that has a reference; plus messages for runs whose reference is missing."""
    rows, missing = [], []
    for run in runs:
        if run.is_baseline or (run.crop == "left" and run.lsp >= 1.0):
            continue
        ref = reference_for(run, runs)
        if ref is None:
            want = "left crop at the same lsp" if run.crop == "right" else "lsp=1.0"
            missing.append(f"{run.name}: no reference run ({want}) for the loss gap")
            continue
        parts = {
            term: relative_gap(curve(run, prefix, term), curve(ref, prefix, term)) for term in TERMS
        }
        if all(v is None for v in parts.values()):
            missing.append(f"{run.name}: no shared logged steps with {ref.name}")
            continue
        rows.append(GapRow(run, ref, **parts))
    return rows, missing
