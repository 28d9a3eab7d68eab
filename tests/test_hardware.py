"""Hardware chosen for the user: the `auto` trainer preset, the CPU refusal, the sweep guard."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from kdlite.config import ConfigError, register_configs
from kdlite.parallel import apply_hardware, model_parameters, refuse_study_pair_on_cpu

REPO = Path(__file__).resolve().parents[1]
register_configs()


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[*overrides, "run_dir=/tmp/kdlite-hw"])


@pytest.mark.parametrize(
    ("gpus", "accelerator", "devices", "strategy", "precision", "teacher_dtype"),
    [
        (0, "cpu", 1, "auto", "32-true", "float32"),
        (1, "gpu", 1, "auto", "bf16-mixed", "bfloat16"),
        (8, "gpu", 8, "fsdp", "bf16-mixed", "bfloat16"),
    ],
)
def test_the_default_trainer_uses_what_the_machine_has(
    gpus, accelerator, devices, strategy, precision, teacher_dtype
):
    cfg = _compose()
    assert cfg.trainer.accelerator == "auto"
    hw = apply_hardware(cfg, n_gpus=gpus)
    t = cfg.trainer
    assert (t.accelerator, t.devices, str(getattr(t.strategy, "value", t.strategy))) == (
        accelerator,
        devices,
        strategy,
    )
    assert (t.precision, t.teacher_dtype) == (precision, teacher_dtype)
    assert hw.message.startswith("kdlite: hardware:") and f"trainer={hw.preset}" in hw.message


def test_keys_the_user_set_stay_and_explicit_presets_are_untouched():
    cfg = _compose("trainer.precision=32-true")
    apply_hardware(cfg, n_gpus=1)
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "32-true")
    for preset, gpus in (("cpu", 8), ("gpu", 0), ("fsdp", 0)):
        cfg = _compose(f"trainer={preset}")
        before = dict(cfg.trainer)
        hw = apply_hardware(cfg, n_gpus=gpus)
        assert hw.message == ""
        assert dict(cfg.trainer) == {**before, **hw.settings}
        assert cfg.trainer.accelerator == before["accelerator"]


def test_a_study_size_pair_on_a_cpu_is_refused_unless_allowed():
    cfg = _compose("pair=32b_8b", "data=bespoke", "lsp=0.5")
    apply_hardware(cfg, n_gpus=0)
    with pytest.raises(ConfigError, match=r"study-sized .*Qwen3-32B.*trainer.allow_cpu=true"):
        refuse_study_pair_on_cpu(cfg)
    cfg = _compose("pair=32b_8b", "data=bespoke", "trainer.allow_cpu=true")
    apply_hardware(cfg, n_gpus=0)
    refuse_study_pair_on_cpu(cfg)
    assert cfg.trainer.accelerator == "cpu"
    tiny = _compose()
    apply_hardware(tiny, n_gpus=0)
    refuse_study_pair_on_cpu(tiny)  # the tiny pair runs anywhere


def test_model_sizes_from_shapes_names_and_folders(tmp_path):
    from omegaconf import OmegaConf

    def spec(**kw):
        return OmegaConf.create({"name": None, "shape": None, **kw})

    assert model_parameters(spec(shape="tiny-student")) == 0
    assert model_parameters(spec(shape="8b")) == pytest.approx(8.19e9, rel=0.01)
    assert model_parameters(spec(name="Qwen/Qwen3-1.7B-Base")) == int(1.7e9)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 100, '
        '"intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2}'
    )
    assert 0 < model_parameters(spec(name=str(folder))) < 100_000
    assert model_parameters(spec(name="some/model")) is None


def test_a_multi_device_sweep_on_the_basic_launcher_is_refused_before_any_job(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", "trainer=fsdp", "trainer.accelerator=cpu",
         "trainer.devices=2", "lsp=0.5,1.0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "2-device jobs on Hydra's basic launcher is refused" in proc.stderr
    assert "Launching" not in proc.stdout + proc.stderr
    assert not (tmp_path / "runs").exists()  # no job started, no run directory left behind


def test_the_study_command_on_a_cpu_says_why_it_stops(tmp_path):
    """`python train.py pair=32b_8b data=bespoke lsp=0.5`, as users type it, on a machine without
    a GPU (and offline, without the models): a few lines, no traceback, nothing written."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "pair=32b_8b", "data=bespoke", "lsp=0.5"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "study-sized" in proc.stderr and "trainer.allow_cpu=true" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) < 15
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))
