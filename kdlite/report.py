"""`python -m kdlite.report <sweep or runs dir> [--out DIR] [--n-boot N] [--seed S] [--smooth M]`.

Writes `report.md` and PNG figures (default `<dir>/report/`) from every run directory under the
given folder; see `kdlite.analysis.report` for what each table holds. Missing or partial runs are
listed in the report, never fatal.
"""

from __future__ import annotations

import argparse

from kdlite.analysis.knee import SMOOTHERS
from kdlite.analysis.report import write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kdlite.report", description=__doc__)
    parser.add_argument("runs", nargs="?", default="runs", help="sweep or runs directory")
    parser.add_argument("--out", default=None, help="output folder (default <runs>/report)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for knees")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smooth", choices=sorted(SMOOTHERS), default="isotonic")
    args = parser.parse_args(argv)
    path = write_report(args.runs, args.out, n_boot=args.n_boot, seed=args.seed, smooth=args.smooth)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
