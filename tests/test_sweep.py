"""Sweeps you can see: the dry listing of a grid, and the status of a sweep directory with one run
in each state."""

from __future__ import annotations

import json
import os

import pytest

from kdlite.cli.sweep import main
from kdlite.run_state import mark_done, mark_failed, mark_running, read_status
from kdlite.sweep import _compose, expand, format_status, sweep_status


def test_listing_matches_hydra_job_by_job():
    jobs = expand(["experiment=demo", "lsp=0.25,0.5,1.5", "supervise=cot,a", "seed=3"])
    assert len(jobs) == 6
    assert [j.varying for j in jobs[:2]] == [
        ["lsp=0.25", "supervise=cot"],
        ["lsp=0.25", "supervise=a"],
    ]
    for job in jobs[:3]:  # each run directory is the one Hydra computes for the job
        hc = _compose(job.overrides).hydra
        assert str(job.run_dir) == f"{hc.sweep.dir}/{hc.sweep.subdir}"
    assert str(jobs[0].run_dir) == "runs/demo/lsp=0.25,seed=3,supervise=cot"
    bad = [j for j in jobs if j.problem]
    assert len(bad) == 2 and all("lsp=1.5: must be in (0, 1]" in j.problem for j in bad)


def test_experiment_grid_is_listed_without_launching(capsys):
    assert main(["action=list", "experiment=rq2_location"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("6 jobs") and "runs/rq2_location/" in out


@pytest.fixture
def sweep(tmp_path):
    """runs/grid: one run of each kind, and multirun.yaml asking for six jobs."""
    root = tmp_path / "grid"
    root.mkdir()
    (root / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: [experiment=demo, 'lsp=0.25,0.5,1.0', 'supervise=cot,a']\n"
    )

    def run(name):
        d = root / name
        d.mkdir()
        (d / "config.yaml").write_text("lsp: 0.5\n")
        return d

    done = run("lsp=0.25,supervise=cot")
    mark_done(
        done, step=12, epochs_done=2, max_steps=-1, epochs=2, best_val_loss=1.0, weights="best"
    )
    (done / "eval" / "synthetic").mkdir(parents=True)
    (done / "eval" / "synthetic" / "results.json").write_text(json.dumps({"avg_at_n": 0.5}))
    old = run("lsp=0.25,supervise=a")  # finished before status.json existed
    (old / "export").mkdir()
    (old / "export" / "config.json").write_text("{}")
    mark_running(run("lsp=0.5,supervise=cot"))  # this process: alive
    interrupted = run("lsp=0.5,supervise=a")
    (interrupted / "status.json").write_text(
        json.dumps({"state": "running", "host": os.uname().nodename, "pid": 2**22 + 12345})
    )
    (interrupted / "checkpoints").mkdir()
    (interrupted / "checkpoints" / "last.ckpt").write_bytes(b"x")
    failed = run("lsp=1.0,supervise=cot")
    mark_running(failed)
    try:
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
    except RuntimeError as err:
        mark_failed(failed, err)
    return root  # lsp=1.0,supervise=a: never started


def test_status_of_a_sweep_with_one_run_of_each_kind(sweep, capsys):
    by_name = {s.path.name: s for s in sweep_status(sweep)}
    assert {n: s.state for n, s in by_name.items()} == {
        "lsp=0.25,supervise=cot": "done",
        "lsp=0.25,supervise=a": "done",
        "lsp=0.5,supervise=cot": "running",
        "lsp=0.5,supervise=a": "interrupted",
        "lsp=1.0,supervise=cot": "failed",
        "lsp=1.0,supervise=a": "never",
    }
    assert by_name["lsp=0.25,supervise=cot"].evaluated == ["synthetic"]
    assert by_name["lsp=0.5,supervise=a"].resumable
    assert by_name["lsp=1.0,supervise=cot"].error == "RuntimeError: Tried to allocate 2 GiB"
    text = format_status(sweep_status(sweep), sweep)
    assert "6 runs: 2 done, 1 running, 1 interrupted, 1 failed, 1 never; 1 evaluated" in text
    assert "interrupted (resumable)" in text and "eval: synthetic" in text
    assert main(["action=status", f"sweep={sweep}"]) == 1  # not all done
    assert "Tried to allocate 2 GiB" in capsys.readouterr().out


def test_status_needs_no_status_file_for_old_runs(tmp_path):
    assert read_status(tmp_path / "nothing").state == "never"
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("lsp: 1.0\n")
    assert read_status(tmp_path / "r").state == "interrupted"


@pytest.mark.parametrize("experiment", ["demo", "replication"])
def test_make_lanes_evaluate_exactly_the_runs_they_train(experiment):
    """`make demo` / `make replication`: the run directories the lanes evaluate and probe are the
    ones their train.py sweeps write (a renamed condition would otherwise leave a run unevaluated
    and the report a row short), and together they are the study's grid in miniature."""
    import re
    import shlex
    from pathlib import Path

    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    assert f"lane-left lane-rest EXP={experiment}" in makefile
    variables = dict(re.findall(r"^([A-Z_]+) := (.*)$", makefile, re.M), EXP=experiment, PY="py")

    def expand_vars(line: str) -> str:
        while (
            done := re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), ""), line)
        ) != line:
            line = done
        return line.strip()

    trained: set[str] = set()
    read: dict[str, set[str]] = {"evaluate.py": set(), "kdlite.cli.probe": set()}
    for lane in ("left", "rest"):
        body = re.search(rf"^lane-{lane}: .*\n((?:\t.*\n)+)", makefile, re.M).group(1)
        for line in map(expand_vars, body.splitlines()):
            if f"train.py -m experiment={experiment}" in line:
                args = [a for a in shlex.split(line) if "=" in a and not a.startswith("trainer.")]
                trained |= {str(j.run_dir) for j in expand(args)}
            for tool, models in read.items():
                if tool in line:
                    listed = re.findall(r"'([^']+)'", re.search(r"model=\[(.*)\]", line).group(1))
                    models |= {m for m in listed if "/baseline/" not in m}
    root = f"runs/{experiment}/"
    want = {"lsp=0.25", "lsp=0.5", "lsp=1.0", "crop=right,lsp=0.5", "supervise=cot", "supervise=a"}
    assert trained == {root + w for w in want}
    assert read["evaluate.py"] == trained and read["kdlite.cli.probe"] == trained
