"""evaluate.py's command line: every run directory kdlite names (`=` and `,` inside) is accepted as
the shell completes it, bare or in `model=`, several at once, or a whole sweep with `sweep=`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdlite.eval.cli import ArgvError, rewrite_argv, split_paths
from kdlite.eval.run import model_specs

REPO = Path(__file__).resolve().parents[2]
RUNS = ("runs/optim.max_steps=120", "runs/demo/crop=right,lsp=0.5", "runs/demo/lsp=0.5")


@pytest.fixture
def runs_cwd(tmp_path, monkeypatch) -> Path:
    for name in RUNS:
        (tmp_path / name / "export").mkdir(parents=True)
        (tmp_path / name / "export" / "config.json").write_text("{}")
        (tmp_path / name / "config.yaml").write_text("lsp: 0.5\n")
    (tmp_path / "runs/demo/lsp=0.25").mkdir(parents=True)  # started, never finished
    (tmp_path / "runs/demo/lsp=0.25/config.yaml").write_text("lsp: 0.25\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_split_paths_prefers_the_longest_existing_path():
    exists = {"runs/demo/crop=right,lsp=0.5", "runs/a"}.__contains__
    value = "runs/demo/crop=right,lsp=0.5,Qwen/Qwen3-4B-Base,runs/a"
    assert split_paths(value, exists) == [
        "runs/demo/crop=right,lsp=0.5",
        "Qwen/Qwen3-4B-Base",
        "runs/a",
    ]
    assert split_paths("a,b", lambda p: False) == ["a", "b"]


@pytest.mark.parametrize(
    "argv, models",
    [
        (["runs/optim.max_steps=120"], ["runs/optim.max_steps=120"]),
        (["runs/optim.max_steps=120/"], ["runs/optim.max_steps=120/"]),  # shell completion
        (["runs/demo/crop=right,lsp=0.5", "runs/demo/lsp=0.5"], list(RUNS[1:])),
        (
            ["model=runs/demo/crop=right,lsp=0.5,Qwen/Qwen3-4B-Base"],
            [RUNS[1], "Qwen/Qwen3-4B-Base"],
        ),
        (["model=runs/optim.max_steps=120", "runs/demo/lsp=0.5"], [RUNS[0], RUNS[2]]),
    ],
)
def test_run_directories_as_typed_compose(runs_cwd, compose_eval, argv, models):
    overrides = rewrite_argv([*argv, "bench=aime24,aime25", "seed=1"])
    cfg = compose_eval(*overrides)
    assert list(cfg.model) == models
    assert list(cfg.benches) == ["aime24", "aime25"] and cfg.seed == 1


def test_sweep_evaluates_every_finished_run(runs_cwd, compose_eval, caplog):
    cfg = compose_eval(*rewrite_argv(["sweep=runs/demo", "bench=synthetic"]))
    assert list(cfg.sweep) == ["runs/demo"] and cfg.model is None
    assert model_specs(cfg) == ["runs/demo/crop=right,lsp=0.5", "runs/demo/lsp=0.5"]
    assert "skipping 1 runs without an export ({'interrupted': 1})" in caplog.text
    cfg = compose_eval(*rewrite_argv(["runs/optim.max_steps=120", "sweep=runs/demo"]))
    assert model_specs(cfg)[0] == "runs/optim.max_steps=120" and len(model_specs(cfg)) == 3
    assert model_specs(compose_eval()) == ["runs/default"]
    # the same run twice (shell completion's `/`, and again through the sweep) is evaluated once
    cfg = compose_eval(
        *rewrite_argv(["runs/demo/lsp=0.5/", "Qwen/Qwen3-4B-Base", "sweep=runs/demo"])
    )
    assert model_specs(cfg) == ["runs/demo/lsp=0.5/", "Qwen/Qwen3-4B-Base", RUNS[1]]


def test_bad_arguments_and_hydra_forms(runs_cwd):
    with pytest.raises(ArgvError, match="runs/lsp=0.7"):
        rewrite_argv(["runs/lsp=0.7"])  # no such directory: named, not a Hydra parse error
    assert rewrite_argv(["-m", "bench=x,y"]) == ["-m", "bench=x,y"]
    assert rewrite_argv(["--cfg", "job", "bench=[x,y]"]) == ["--cfg", "job", "bench=[x,y]"]
    assert rewrite_argv(["model=a,b"]) == ["model=['a','b']"]
    assert rewrite_argv(["+benches.x.size=3", "hydra/help=eval"]) == [
        "+benches.x.size=3",
        "hydra/help=eval",
    ]


def test_evaluate_py_accepts_a_run_directory_with_equals_and_comma(runs_cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), "runs/demo/crop=right,lsp=0.5", "--cfg", "job"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "- runs/demo/crop=right,lsp=0.5" in out.stdout
