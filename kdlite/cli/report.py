"""`python -m kdlite.cli.report runs=<sweep or runs dir> [out=DIR n_boot=N seed=S smooth=M wandb=true]`

Writes `report.md` and PNG figures (default `<runs>/report/`) from every run directory under the
given folder; see `kdlite.analysis.report` for what each table holds. Missing or partial runs are
listed in the report, never fatal. `wandb=true` also logs the figures as images to a `report` W&B
run in the sweep's group (`kdlite.wandb_run.log_figures`; offline unless `wandb_mode=online`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdlite.analysis.knee import SMOOTHERS
from kdlite.analysis.report import write_report
from kdlite.cli._args import arg, argv_or_sys, parse_keys


@dataclass
class Keys:
    runs: str = arg("runs", "sweep or runs directory")
    out: str | None = arg(None, "output folder (null: <runs>/report)")
    n_boot: int = arg(1000, "bootstrap replicates for the knees")
    seed: int = arg(0, "bootstrap seed")
    smooth: str = arg(
        "isotonic", "accuracy-vs-LSP smoother of the knees", choices=sorted(SMOOTHERS)
    )
    wandb: bool = arg(False, "also log the figures to W&B as images")
    wandb_project: str = arg("kdlite", "W&B project")
    wandb_entity: str | None = arg(None, "W&B entity (null: your default)")
    wandb_mode: str = arg("offline", "W&B mode", choices=("offline", "online"))


def main(argv: list[str] | None = None) -> Path:
    args = parse_keys(Keys, argv_or_sys(argv), prog="python -m kdlite.cli.report", doc=__doc__)
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
    return Path(path)


if __name__ == "__main__":
    main()
