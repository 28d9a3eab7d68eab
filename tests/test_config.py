"""Every shipped config composes; every job of every study grid composes; bad values fail early."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from kdlite.config import ConfigError, TrainConfig, accumulation, register_configs, validate

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()

GRIDS = {
    "rq1_sections": 36,
    "rq2_lsp": 100,
    "rq2_location": 6,
    "rq2_generalize": 18,
    "lambda_ablation": 10,
}


@pytest.fixture(scope="module", autouse=True)
def _hydra():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def _compose(overrides: list[str]):
    return compose("config", overrides=[*overrides, "run_dir=/tmp/kdlite-test-run"])


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["pair", "data", "trainer", "logger", "cell"])
def test_every_group_option_composes(group):
    for name in _names(group):
        cfg = _compose([f"{group}={name}"])
        validate(cfg)
        if group == "pair":
            assert cfg.pair.name == name


_COMPOSED: dict[tuple[str, ...], object] = {}


def _compose_job(experiment: str, job: list[str]):
    """Composing costs ~0.5 s; the grid tests share each job's composed config."""
    key = (experiment, *job)
    if key not in _COMPOSED:
        _COMPOSED[key] = _compose([f"experiment={experiment}", *job])
    return _COMPOSED[key]


def _grid_jobs(experiment: str) -> list[list[str]]:
    """Expand the experiment's sweeper params the way Hydra's basic sweeper does (Cartesian)."""
    raw = OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml")
    params = raw.hydra.sweeper.params
    parser = OverridesParser.create()
    axes = []
    for key, value in params.items():
        override = parser.parse_override(f"{key}={value}")
        if override.is_sweep_override():
            axes.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:  # a single value (e.g. one grid cell) is one job along that axis
            axes.append([f"{key}={value}"])
    return [list(job) for job in itertools.product(*axes)]


@pytest.mark.parametrize("experiment,count", sorted(GRIDS.items()))
def test_every_grid_job_composes_with_study_counts(experiment, count):
    jobs = _grid_jobs(experiment)
    assert len(jobs) == count
    seen = set()
    for job in jobs:
        cfg = _compose_job(experiment, job)
        validate(cfg)
        assert cfg.experiment == experiment
        assert cfg.trainer.strategy.value == "fsdp"
        seen.add(
            (cfg.pair.name, cfg.data.name, cfg.lsp, cfg.crop.value, cfg.supervise.value, cfg.lam)
        )
    assert len(seen) == count  # no two jobs train the same thing


def test_grid_contents_match_the_study():
    cfgs = [_compose_job("rq2_lsp", j) for j in _grid_jobs("rq2_lsp")]
    ot = {c.pair.name for c in cfgs if c.data.name == "openthoughts"}
    bespoke = {c.pair.name for c in cfgs if c.data.name == "bespoke"}
    assert len(ot) == 7 and bespoke == {"32b_8b", "32b_4b", "8b_4b"}
    loc = [_compose_job("rq2_location", j) for j in _grid_jobs("rq2_location")]
    assert {(c.crop.value, c.lsp) for c in loc} == {("right", 0.5)}
    lam = [_compose_job("lambda_ablation", j) for j in _grid_jobs("lambda_ablation")]
    assert {c.lam for c in lam} == {0.0, 0.25, 0.5, 0.75, 1.0}
    assert {(c.pair.name, c.data.name) for c in lam} == {("8b_4b", "bespoke")}


def test_default_is_the_embedded_tiny_run():
    cfg = _compose([])
    assert (cfg.pair.name, cfg.data.name, cfg.trainer.accelerator) == ("tiny", "synthetic", "auto")
    assert (cfg.lsp, cfg.crop.value, cfg.supervise.value, cfg.lam) == (1.0, "left", "p_cot_a", 0.5)
    # The tiny pair brings a learning rate for random-init models; the study's pairs keep 4e-6.
    assert cfg.optim.lr == 2e-3 and cfg.batch.examples_per_step == 2
    study = _compose(["pair=8b_4b"])
    assert (study.optim.lr, study.optim.weight_decay, study.optim.epochs) == (4e-6, 0.05, 2)
    assert (study.optim.warmup_ratio, study.optim.grad_clip) == (0.1, 1.0)


def test_study_pair_resolves_offline_without_loading():
    cfg = _compose(["pair=32b_8b", "data=bespoke", "lsp=0.5"])
    assert cfg.pair.teacher.name == "Qwen/Qwen3-32B"
    assert cfg.pair.student.name == "Qwen/Qwen3-8B-Base"
    assert cfg.data.train_size == 8000 and cfg.lsp == 0.5


@pytest.mark.parametrize(
    "override,key",
    [
        ("supervise=foo", "supervise"),
        ("crop=middle", "crop"),
        ("loss_norm=batch", "loss_norm"),
        ("batch.pack=maybe", "batch.pack"),
    ],
)
def test_bad_choice_is_rejected_at_compose_time_naming_the_key(override, key):
    with pytest.raises((ValidationError, ConfigCompositionException)) as err:
        _compose([override])
    assert key in str(err.value) or key in str(err.value.__cause__)


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigCompositionException) as err:
        _compose(["lssp=0.5"])
    assert "lssp" in str(err.value)
    with pytest.raises(ConfigCompositionException):
        _compose(["data.colour=blue"])
    # Hydra's explicit `+key=` adds keys past the schema; validate() still refuses them.
    with pytest.raises(ConfigError, match="data.colour: unknown key"):
        validate(_compose(["+data.colour=blue"]))


@pytest.mark.parametrize(
    "override,needle",
    [
        ("lsp=1.5", "lsp=1.5"),
        ("lsp=0", "lsp=0"),
        ("lam=-0.1", "lam=-0.1"),
        ("temperature=0", "temperature"),
        ("optim.lr=0", "optim.lr"),
        ("data.synthetic_answer_form=summary", "data.synthetic_answer_form=summary: must be one"),
    ],
)
def test_out_of_range_values_fail_validation(override, needle):
    cfg = _compose([override])
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        validate(cfg)


def test_accumulation_must_divide_exactly():
    b = OmegaConf.structured(TrainConfig).batch
    assert accumulation(b, 1) == 8
    b.micro_examples = 2
    assert accumulation(b, 4) == 1
    b.micro_examples = 3
    with pytest.raises(ConfigError, match="multiple"):
        accumulation(b, 1)


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose(
        "config",
        overrides=["hydra/launcher=slurm", "experiment=rq2_lsp", "run_dir=/tmp/x"],
        return_hydra_config=True,
    )
    assert cfg.hydra.launcher.gpus_per_node == 8


def test_run_names_stay_short_unique_and_deterministic():
    from kdlite.config import RUN_NAME_MAX, run_name

    assert run_name("") == "default"
    assert run_name("lsp=0.5,pair=32b_8b") == "lsp=0.5,pair=32b_8b"
    assert run_name("pair.student.name=/models/x") == "pair.student.name=_models_x"
    long_a = "pair.teacher.name=/very/long/folder/" + "x" * 300 + ",lsp=0.5"
    long_b = long_a.replace("lsp=0.5", "lsp=0.25")
    a, b = run_name(long_a), run_name(long_b)
    assert len(a.encode()) <= RUN_NAME_MAX and len(b.encode()) <= RUN_NAME_MAX
    assert a != b and a == run_name(long_a) and a.startswith("pair.teacher.name=_very_long")
