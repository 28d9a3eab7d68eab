"""Golden losses: a seeded run of `experiment=debug` (tiny pair, 10 steps) must reproduce the
per-step losses checked into tests/golden/debug_losses.json, so a refactor that changes numerics
fails loudly. After an intended change: `KDLITE_UPDATE_GOLDEN=1 pytest tests/test_golden.py`, and
say why in the commit.

Tolerance: rtol 1e-5. The same CPU reproduces the values bit for bit; the margin only absorbs
another CPU's BLAS kernels, and a numerics change moves the loss by far more.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from kdlite.config import compose_train
from kdlite.training import train

GOLDEN = Path(__file__).parent / "golden" / "debug_losses.json"
KEYS = ("train/loss", "train/soft", "train/hard", "val/loss")


def test_the_debug_run_reproduces_the_golden_losses(tmp_path):
    run_dir = tmp_path / "debug"
    train(compose_train(["experiment=debug", "trainer.num_threads=1", f"run_dir={run_dir}"]))
    with (run_dir / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    got = {key: {r["step"]: float(r[key]) for r in rows if r.get(key)} for key in KEYS}
    assert len(got["train/loss"]) == 10 and len(got["val/loss"]) == 2
    if os.environ.get("KDLITE_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(GOLDEN.read_text())
    for key in KEYS:
        assert sorted(got[key]) == sorted(want[key]), key
        for step, value in want[key].items():
            assert got[key][step] == pytest.approx(value, rel=1e-5), f"{key} at step {step}"
