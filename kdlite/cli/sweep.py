"""See a sweep before and after launching it (`kdlite.sweep` holds the logic).

    python -m kdlite.cli.sweep action=list experiment=rq2_lsp [key=a,b ...]   # = train.py -m ... --dry
    python -m kdlite.cli.sweep action=status sweep=runs/rq2_lsp                # every job's state

`action=list` expands a multirun command line as Hydra's basic sweeper does and composes every
job without loading anything: the job count, each job's run directory, the overrides that vary,
and any job whose config is invalid; every key other than `action` is a `train.py` override.
`action=status` reads a sweep directory: each run's state (done, running, interrupted and resumable
or not, failed with the error's last line), the benchmarks it was evaluated on, and the jobs that
never started. Exit status: list 0 (2 on a config error); status 0 when every job is done, else 1.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from kdlite.cli._args import UsageError, arg, argv_or_sys, compose_errors, parse

PROG = "python -m kdlite.cli.sweep"


@dataclass
class Keys:
    action: str = arg("???", "list a grid's jobs, or the status of a sweep directory (required)",
                      choices=("list", "status"))  # fmt: skip
    sweep: str | None = arg(None, "action=status: the sweep directory, e.g. runs/rq2_lsp")


def main(argv: list[str] | None = None) -> int:
    words = argv_or_sys(argv)
    args, overrides = parse(
        Keys, words, prog=PROG, doc=__doc__, rest=lambda key: "action=list" in words,
        rest_help="With action=list, other key=value words are train.py overrides.",
    )  # fmt: skip
    from kdlite.sweep import expand, format_jobs, format_status, sweep_status

    if args.action == "list":
        from kdlite.config import ConfigError

        if args.sweep is not None:
            raise UsageError(PROG, "sweep=... is for action=status; list takes train.py overrides")
        try:
            with compose_errors(PROG):
                print(format_jobs(expand(overrides)))
        except (ConfigError, ValueError) as err:
            print(f"kdlite.sweep: error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.sweep is None:
        raise UsageError(PROG, "action=status needs sweep=<sweep directory, e.g. runs/rq2_lsp>")
    root = Path(args.sweep)
    try:
        statuses = sweep_status(root)
    except FileNotFoundError as err:
        print(f"kdlite.sweep: error: {err}", file=sys.stderr)
        return 2
    print(format_status(statuses, root))
    return 0 if statuses and all(s.state == "done" for s in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
