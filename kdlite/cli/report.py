"""`python -m kdlite.report <sweep or runs dir> [--out DIR] [--n-boot N] [--seed S] [--smooth M] [--wandb]`.

Writes `report.md` and PNG figures (default `<dir>/report/`) from every run directory under the
given folder; see `kdlite.analysis.report` for what each table holds. Missing or partial runs are
listed in the report, never fatal. `--wandb` also logs the figures as images to a `report` W&B run
in the sweep's group (`kdlite.wandb_run.log_figures`; offline unless `--wandb-mode online`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kdlite.analysis.knee import SMOOTHERS
from kdlite.analysis.report import write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kdlite.report", description=__doc__)
    parser.add_argument("runs", nargs="?", default="runs", help="sweep or runs directory")
    parser.add_argument("--out", default=None, help="output folder (default <runs>/report)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for knees")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smooth", choices=sorted(SMOOTHERS), default="isotonic")
    parser.add_argument("--wandb", action="store_true", help="log the figures to W&B as images")
    parser.add_argument("--wandb-project", default="kdlite")
    parser.add_argument("--wandb-entity", default=None)
    parser.add_argument("--wandb-mode", choices=("offline", "online"), default="offline")
    args = parser.parse_args(argv)
    path = write_report(args.runs, args.out, n_boot=args.n_boot, seed=args.seed, smooth=args.smooth)
    print(f"wrote {path}")
    if args.wandb:
        from omegaconf import OmegaConf

        from kdlite.wandb_run import log_figures

        log_cfg = OmegaConf.create(
            {"project": args.wandb_project, "entity": args.wandb_entity, "mode": args.wandb_mode}
        )
        figures = sorted(Path(path).parent.glob("*.png"))
        run_id = log_figures(figures, Path(args.runs), log_cfg)
        print(f"logged {len(figures)} figures to W&B run {run_id} ({args.wandb_mode})")


if __name__ == "__main__":
    main()
