"""`python train.py --help` and `python evaluate.py --help` describe every top-level key and group
(conf/hydra/help/*.yaml); evaluate's help lists only its own group."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

import kdlite.eval.config as eval_config
from kdlite.config import CONF_DIR, TrainConfig, register_configs

REPO = Path(__file__).resolve().parents[1]


def _help(config: str) -> str:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config, overrides=["run_dir=x"] if config == "config" else [],
                      return_hydra_config=True)  # fmt: skip
        return str(cfg.hydra.help.template)


def _described(template: str) -> set[str]:
    """Names at the start of a line of the help's sections (`lsp  ...`, `optim.*  ...`)."""
    names = set()
    for line in template.splitlines():
        for name in re.split(r",\s*", line.split("  ")[0].strip()):
            names.add(name.split(".")[0])
    return names


def test_train_help_describes_every_key_and_group():
    text = _help("config")
    described = _described(text)
    keys = {f.name for f in dataclasses.fields(TrainConfig)}
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()} - {"hydra", "bench"}  # bench: eval
    missing = (keys | groups) - described
    assert not missing, f"add to conf/hydra/help/train.yaml: {sorted(missing)}"


def test_evaluate_help_describes_its_keys_and_only_its_group():
    text = _help("eval")
    described = _described(text)
    keys = {f.name for f in dataclasses.fields(eval_config.EvalConfig)} | {"bench"}
    assert not keys - described, sorted(keys - described)
    groups = text.split("== Groups")[1].split("==")[1]
    assert "bench" in groups and not {"pair", "data", "trainer", "experiment"} & _described(groups)


def test_evaluate_py_help_prints_the_template():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "--help"],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "== Top-level keys ==" in out.stdout and "sweep " in out.stdout
    assert "pair" not in out.stdout.split("== Config")[0]
