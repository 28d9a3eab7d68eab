"""A sweep without `experiment=...` lands in runs/sweep (it used to be runs/None)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_sweep_without_an_experiment_goes_to_runs_sweep(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", "lsp=0.5,1.0", "--dry"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "runs/sweep/lsp=0.5" in proc.stdout and "None" not in proc.stdout
    assert not (tmp_path / "runs").exists()  # --dry launches nothing
