"""See a sweep before and after launching it (the program is `python -m kdlite.cli.sweep`).

    python -m kdlite.cli.sweep action=list experiment=rq2_lsp [key=a,b ...]   # = train.py -m ... --dry
    python -m kdlite.cli.sweep action=status sweep=runs/rq2_lsp                # every job's state

`list` (`expand`) expands a multirun command line exactly as Hydra's basic sweeper does (the experiment's
`hydra.sweeper.params`, then the command line's `key=a,b` overrides, cartesian product in that
order) and composes every job, without loading anything: the job count, each job's run directory,
the overrides that vary between jobs, and any job whose config is invalid (`kdlite.config.validate`).

`status` (`sweep_status`) reads a sweep directory: each run's state (`kdlite.run_state`: done, running, interrupted
and resumable or not, failed with the error's last line) and the benchmarks it was evaluated on. The
jobs Hydra was asked for (the command line stored in `<sweep>/multirun.yaml`) that have no directory
are listed as never started.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from kdlite.run_state import STATES, RunStatus, read_status

LAUNCHER = ("hydra/launcher=", "hydra.launcher.")


@dataclass
class Job:
    overrides: list[str]  # the job's command-line overrides, as Hydra passes them
    run_dir: Path
    varying: list[str] = field(default_factory=list)  # overrides that differ between jobs
    problem: str | None = None  # invalid config: the error


def _compose(overrides: list[str], hydra_config: bool = True):
    from hydra import compose, initialize_config_dir

    from kdlite.config import CONF_DIR, register_configs

    register_configs()
    if not any(o.startswith("run_dir=") for o in overrides):
        overrides = [*overrides, "run_dir=unused"]  # ${hydra:...} is unset outside @hydra.main
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra_config)


class _Values:
    """A config's values without its DictConfig type (validate() then skips the unknown-key scan,
    which builds the whole schema: 0.15 s a job)."""

    def __init__(self, cfg: Any) -> None:
        self._cfg = cfg

    def __getattr__(self, key: str) -> Any:
        return getattr(self._cfg, key)


def _is_group(override) -> bool:
    """A config-group choice (`cell=...`, `pair=...`) or an added/deleted key: needs a compose."""
    from kdlite.config import CONF_DIR

    key = override.key_or_group
    return override.is_add() or override.is_delete() or (CONF_DIR / key).is_dir() or "/" in key


def expand(argv: list[str]) -> list[Job]:
    """The jobs `python train.py -m <argv>` launches, in Hydra's order (see the module docstring).

    One compose per distinct set of config-group choices (10 for rq2_lsp's 100 jobs); plain values
    are applied to a copy, so listing a grid takes seconds, not a compose per job.
    """
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from kdlite.config import ConfigError, run_name, validate

    parser = OverridesParser.create()
    # The launcher decides where jobs run, not what they are (and its plugin may be absent here).
    argv = [a for a in argv if a not in ("-m", "--multirun") and not a.startswith(LAUNCHER)]
    cli = parser.parse_overrides(argv)
    fixed = [str(o.input_line) for o in cli if not o.is_sweep_override()]
    params = _compose(fixed).hydra.sweeper.params or {}
    lines = [f"{k}={v}" for k, v in params.items()] + [str(o.input_line) for o in cli]
    (batch,) = BasicSweeper.split_arguments(parser.parse_overrides(lines), None)
    composed: dict[tuple[str, ...], Any] = {}
    checked: set[tuple[str, ...]] = set()
    jobs = []
    for overrides in batch:
        parsed = parser.parse_overrides(overrides)
        groups = tuple(str(o.input_line) for o in parsed if _is_group(o))
        if groups not in composed:
            composed[groups] = _compose(list(groups))
        cfg = composed[groups].copy()
        hc = cfg.hydra
        names = hc.job.config.override_dirname
        dirname = get_overrides_dirname(
            parsed, list(names.exclude_keys), names.item_sep, names.kv_sep
        )
        job = Job(overrides, Path(str(hc.sweep.dir)) / run_name(dirname))
        with open_dict(cfg):
            del cfg["hydra"]
        try:
            for o in parsed:
                if not _is_group(o):
                    OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
            # Unknown keys are checked once per compose (value overrides cannot add keys: the
            # struct config refuses them above); the range checks run on every job.
            first = groups not in checked
            validate(cfg if first else cast(DictConfig, _Values(cfg)))
            checked.add(groups)
        except ConfigError as err:
            job.problem = str(err).replace("invalid config:\n  ", "").replace("\n  ", "; ")
        except ValueError as err:  # OmegaConf: a value of the wrong type or outside a choice
            job.problem = f"{o.input_line}: {str(err).splitlines()[0]}"
        jobs.append(job)
    counts = Counter(o for job in jobs for o in job.overrides)
    for job in jobs:
        job.varying = [o for o in job.overrides if counts[o] < len(jobs)]
    return jobs


def single_job(overrides: list[str]) -> Job:
    """What `python train.py <overrides>` would run: its run directory and config problems."""
    from kdlite.config import ConfigError, validate

    cfg = _compose(overrides)
    job = Job(list(overrides), Path(str(cfg.hydra.run.dir)))
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        validate(cfg)
    except ConfigError as err:
        job.problem = str(err).replace("invalid config:\n  ", "").replace("\n  ", "; ")
    return job


def format_jobs(jobs: list[Job]) -> str:
    bad = sum(job.problem is not None for job in jobs)
    lines = [f"{len(jobs)} jobs" + (f", {bad} with an invalid config" if bad else "")]
    if jobs:
        common = [o for o in jobs[0].overrides if o not in jobs[0].varying]
        lines.append(f"common overrides: {' '.join(common) or '(none)'}")
    for i, job in enumerate(jobs):
        line = f"{i:>4}  {job.run_dir}  {' '.join(job.varying)}"
        lines.append(line + (f"  INVALID: {job.problem}" if job.problem else ""))
    return "\n".join(lines)


# ---- status -------------------------------------------------------------------------------------
def expected_jobs(sweep_dir: Path) -> list[Path]:
    """Run directories (under sweep_dir) of the jobs `<sweep_dir>/multirun.yaml` asked for."""
    stored = sweep_dir / "multirun.yaml"
    if not stored.is_file():
        return []
    try:
        jobs = expand(list(OmegaConf.load(stored).hydra.overrides.task))
    except Exception as err:  # noqa: BLE001 - the grid may no longer compose; the runs still list
        print(f"kdlite.sweep: cannot expand {stored} ({err}); listing existing runs only")
        return []
    return [sweep_dir / job.run_dir.name for job in jobs]


def sweep_status(sweep_dir: str | Path) -> list[RunStatus]:
    """Every run under sweep_dir and every expected job without a directory, sorted by path."""
    from kdlite.analysis.runs import SKIP_DIRS

    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no such sweep directory: {root}")
    found = {p.parent for p in root.rglob("config.yaml") if not SKIP_DIRS & set(p.parts)}
    found |= {p.parent for p in root.rglob("status.json")}
    found = {p for p in found if ".hydra" not in p.parts}
    found |= set(expected_jobs(root))
    return [read_status(p) for p in sorted(found)]


def format_status(statuses: list[RunStatus], root: Path) -> str:
    counts = Counter(s.state for s in statuses)
    evaluated = sum(bool(s.evaluated) for s in statuses)
    head = ", ".join(f"{counts[k]} {k}" for k in STATES if counts[k])
    lines = [f"{root}: {len(statuses)} runs: {head or 'none'}; {evaluated} evaluated"]
    for s in statuses:
        name = str(s.path.relative_to(root)) if s.path != root else s.path.name
        state = s.state
        if s.state == "interrupted":
            state += " (resumable)" if s.resumable else " (no checkpoint)"
        note = s.error if s.state == "failed" else s.detail
        step = f"step {s.step}" if s.step is not None else ""
        ev = f"eval: {','.join(s.evaluated)}" if s.evaluated else ""
        lines.append(f"  {state:<26} {name:<40} {step:<10} {ev:<20} {note or ''}".rstrip())
    return "\n".join(lines)


class MultirunGuard(Callback):
    """Hydra callback (conf/config.yaml): refuse a multi-device sweep on the basic launcher
    before any job starts. Lightning would relaunch the whole sweep once per rank, and a refusal
    inside `train()` would come once per job and leave every job's run directory behind."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if "basic" not in launcher.lower():
            return
        from kdlite.config import world_size
        from kdlite.parallel import apply_hardware

        trainer = config.trainer.copy()
        apply_hardware(OmegaConf.create({"trainer": trainer, "pair": config.pair}))
        world = world_size(trainer)
        if world > 1:  # Hydra turns a callback's exception into a warning: exit instead
            sys.exit(
                f"train.py: error: a sweep of {world}-device jobs on Hydra's basic launcher is refused: Lightning "
                "would relaunch the whole sweep once per rank. Use the Slurm launcher "
                "(`hydra/launcher=slurm`, one job per cell), run one device per job "
                "(`trainer=gpu`), or run the jobs one at a time without -m."
            )
