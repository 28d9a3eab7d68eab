"""Distil a teacher into a student. `python train.py` runs the embedded default on a CPU.

python train.py pair=32b_8b data=bespoke lsp=0.5 trainer=fsdp
python train.py -m experiment=rq2_lsp --dry     # the grid's jobs and run directories, nothing runs
python train.py -m experiment=rq2_lsp

Before Hydra starts: `--dry` lists what would run (`kdlite.sweep`), and `--cfg` validates the
composed config first, so `lsp=1.5 --cfg job` fails like the run would. kdlite's own errors (a
config value, a model or tokenizer that cannot be found, unusable data) end a single run with their
message, not a traceback; in a multirun they propagate so Hydra records them and goes on.
"""

import sys

import hydra
from omegaconf import DictConfig

from kdlite.config import ConfigError, register_configs
from kdlite.data.example import DataError
from kdlite.data.tokenizer import TokenizerNotFoundError
from kdlite.models import ModelLoadError
from kdlite.training import train

register_configs()
USER_ERRORS = (ConfigError, ModelLoadError, TokenizerNotFoundError, DataError)
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-dir", "-cd"}


def overrides_of(argv: list[str]) -> list[str]:
    """The key=value overrides of a command line (Hydra's flags and their values dropped)."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("-"):
            skip = arg in FLAGS_WITH_VALUE
            continue
        out.append(arg)
    return out


def before_hydra(argv: list[str]) -> int | None:
    """`--dry` and the `--cfg` check; an exit status when the command is answered here."""
    from kdlite.sweep import expand, format_jobs, single_job

    multirun = "-m" in argv or "--multirun" in argv
    cfg_flag = "--cfg" in argv or "-c" in argv
    if "--dry" not in argv and not cfg_flag:
        return None
    overrides = overrides_of(argv)
    if multirun:  # Hydra refuses `-m --cfg`: a grid is shown as its list of jobs
        jobs = expand(overrides)
        print(format_jobs(jobs))
        return 1 if any(job.problem for job in jobs) else 0
    job = single_job(overrides)
    if job.problem:
        print(f"train.py: error: invalid config: {job.problem}", file=sys.stderr)
        return 1
    if "--dry" in argv:
        print(f"run directory: {job.run_dir} (config valid; nothing loaded)")
        return 0
    return None  # valid: let Hydra print it


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from kdlite.run_state import mark_failed

    try:
        train(cfg)
    except Exception as err:  # an interrupt (Ctrl-C, SIGTERM) leaves the run resumable
        mark_failed(cfg.run_dir, err)
        if isinstance(err, USER_ERRORS) and HydraConfig.get().mode != RunMode.MULTIRUN:
            sys.exit(f"train.py: error: {err}")
        raise


if __name__ == "__main__":
    try:
        status = before_hydra(sys.argv[1:])
    except USER_ERRORS as err:
        sys.exit(f"train.py: error: {err}")
    if status is not None:
        sys.exit(status)
    main()
