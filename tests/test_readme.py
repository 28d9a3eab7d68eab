"""Every command in README.md's code blocks runs: dry for training and the long tools (the same
entry code, `--dry`/`--cfg`/argument parsing, nothing loads), for real where it is cheap (the report,
the sweep status), so the README cannot drift from the code again. A new command with no check
here fails the test."""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kdlite.sweep as sweep_mod  # kdlite.cli.sweep calls its expand

REPO = Path(__file__).resolve().parents[1]
FIXTURE_SWEEP = REPO / "tests" / "fixtures" / "sweep" / "runs"
sys.path.insert(0, str(REPO))  # `import train` (train.py at the repository root)
_REAL_EXPAND = sweep_mod.expand


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _fake_run(path: Path) -> None:
    (path / "export").mkdir(parents=True, exist_ok=True)
    (path / "export" / "config.json").write_text("{}")
    (path / "config.yaml").write_text("lsp: 0.5\n")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A working directory with the run directories the README names, and runs/demo = the
    report's fixture sweep."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(FIXTURE_SWEEP, root / "runs" / "demo")
    for name in ("default", "optim.max_steps=120", "demo/crop=right,lsp=0.5", "demo/lsp=0.5",
                 "lsp=0.5", "rq2_lsp/cell=openthoughts-8b_0.6b,lsp=0.5"):  # fmt: skip
        _fake_run(root / "runs" / name)
    return root


def check_make(args: list[str]) -> None:
    out = subprocess.run(["make", "-n", "-C", str(REPO), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def check_train(args: list[str]) -> None:
    import train

    assert train.before_hydra([*args, "--dry"]) == 0


def check_evaluate(args: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    import kdlite.eval.config  # noqa: F401
    from kdlite.eval.cli import rewrite_argv
    from kdlite.eval.models import resolve_model
    from kdlite.eval.run import check_config, model_specs

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("eval", overrides=rewrite_argv(args))
    check_config(cfg)
    for spec in model_specs(cfg):
        ref = resolve_model(spec, cfg.out_dir)
        assert ref.kind == "run" or not spec.startswith("runs/"), spec


def check_module(module: str, args: list[str]) -> None:
    if module == "kdlite.cli.report":
        from kdlite.cli.report import main

        assert main(args).is_file()
    elif module == "kdlite.cli.sweep":
        from kdlite.cli.sweep import main

        assert main(args) in (0, 1)  # 2 = a usage or input error
    elif module == "kdlite.cli.bench":
        from kdlite.cli._args import parse_keys
        from kdlite.cli.bench import Keys

        parse_keys(Keys, args, prog=module, doc=None)  # the benchmark itself takes minutes
    elif module == "kdlite.cli.traces":
        from kdlite.cli.traces import parse_args

        parse_args(args)
    elif module == "kdlite.cli.memory":
        from kdlite.cli.memory import main

        assert main(args).count("\n") == 8  # the head, its rule and the 7 study pairs
    elif module == "kdlite.cli.cache_teacher":
        from kdlite.cli.cache_teacher import split_args
        from kdlite.config import compose_train, validate

        _own, overrides = split_args(args)
        validate(compose_train(overrides))
    else:
        pytest.fail(f"README runs `python -m {module}`: add a check for it in {__file__}")


def test_readme_has_the_workflow_commands():
    commands = readme_commands()
    assert any("--dry" in c for c in commands) and any("evaluate.py sweep=" in c for c in commands)
    assert any("kdlite.cli.sweep action=status" in c for c in commands)


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs(command, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(sweep_mod, "expand", _cached_expand)
    argv = shlex.split(command)
    if argv[0] == "make":
        check_make(argv[1:])
    elif argv[:2] == ["python", "train.py"]:
        check_train(argv[2:])
    elif argv[:2] == ["python", "evaluate.py"]:
        check_evaluate(argv[2:])
    elif argv[:2] == ["python", "-m"]:
        check_module(argv[2], argv[3:])
    else:
        pytest.fail(f"README command with no check: {command!r}")


@functools.cache
def _expand(argv: tuple[str, ...]):
    return _REAL_EXPAND(list(argv))


def _cached_expand(argv: list[str]):
    """One expansion per grid: the README lists rq2_lsp (100 jobs) three ways."""
    kept = tuple(a for a in argv if a not in ("-m", "--multirun") and not a.startswith("hydra/"))
    return _expand(kept)
