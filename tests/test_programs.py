"""Every program in kdlite/cli takes the one argument style (kdlite/cli/_args.py): `--help` lists
its keys with their defaults and exits 0; an unknown key or a bad value exits 2 naming it."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

import kdlite.cli
from kdlite.cli._args import UsageError, arg, parse, parse_keys

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = sorted(m.name for m in pkgutil.iter_modules(kdlite.cli.__path__) if m.name[0] != "_")


def test_the_programs_are_the_ones_the_docs_list():
    listed = ["bench", "cache_teacher", "export", "gpu_check", "memory", "pretrain", "probe",
              "report", "sweep", "traces"]  # fmt: skip
    assert listed == PROGRAMS
    for name in PROGRAMS:
        assert f"`{name}`" in kdlite.cli.__doc__, name


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_help_lists_every_key_with_its_default(name, capsys):
    module = importlib.import_module(f"kdlite.cli.{name}")
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m kdlite.cli.{name} [key=value ...]")
    for f in fields(module.Keys):
        assert f"\n  {f.name}=" in out, f.name
        assert f.metadata["help"], f"{name}: key {f.name} has no help"


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_rejects_an_unknown_key_naming_it(name, capsys, tmp_path):
    module = importlib.import_module(f"kdlite.cli.{name}")
    # the required keys; `sweep action=list` would hand the key on to train.py (which names it)
    argv = {"sweep": ["action=status"], "export": [f"out={tmp_path}"]}.get(name, [])
    with pytest.raises(SystemExit) as done:
        module.main([*argv, "no_such_key=1"])
    assert done.value.code == 2
    assert "no_such_key" in capsys.readouterr().err


def test_help_and_an_unknown_key_through_python_m():
    cmd = [sys.executable, "-m", "kdlite.cli.report"]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([*cmd, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0 and "n_boot=1000" in ok.stdout, ok.stderr
    bad = subprocess.run([*cmd, "nboot=3"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert "python -m kdlite.cli.report: error: unknown key 'nboot'" in bad.stderr


@dataclass
class Keys:
    n: int = arg(3, "a count")
    out: str | None = arg(None, "a folder")
    lsp: list[float] = arg([0.5, 1.0], "values", commas=True)
    model: list[str] = arg(["a"], "names")
    mode: str = arg("cpu", "a choice", choices=("cpu", "gpu"))
    flag: bool = arg(False, "a switch")


def _parse(*argv: str) -> Keys:
    return parse_keys(Keys, list(argv), prog="prog", doc=None)


def test_values_are_typed_as_a_dotlist_and_checked(capsys):
    got = _parse("n=5", "out=null", "lsp=0.25,0.5", "model=x/y,z", "mode=gpu", "flag=true")
    assert (got.n, got.out, got.lsp, got.model, got.mode, got.flag) == (
        5, None, [0.25, 0.5], ["x/y,z"], "gpu", True,
    )  # fmt: skip
    assert _parse("model=[a,'b,c']").model == ["a", "b,c"] and _parse("lsp=1").lsp == [1.0]
    assert _parse("out=<|endoftext|>").out == "<|endoftext|>"  # str values stay as written
    assert _parse().lsp == [0.5, 1.0] and _parse().lsp is not Keys().lsp
    for argv, said in (
        (["n=three"], "n=three"),
        (["lsp=0.5,x"], "lsp"),
        (["mode=tpu"], "mode=tpu: mode must be one of cpu, gpu"),
        (["flag=maybe"], "flag"),
        (["n"], "'n' is not key=value"),
    ):
        with pytest.raises(UsageError):
            _parse(*argv)
        assert said in capsys.readouterr().err, argv


def test_words_handed_on_keep_their_order():
    keys, rest = parse(Keys, ["pair=tiny", "n=1", "data.x=2"], prog="p", doc=None,
                       rest=lambda key: key != "bad")  # fmt: skip
    assert keys.n == 1 and rest == ["pair=tiny", "data.x=2"]
    with pytest.raises(UsageError):
        parse(Keys, ["bad=1"], prog="p", doc=None, rest=lambda key: key != "bad")
