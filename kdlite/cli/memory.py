"""`python -m kdlite.cli.memory [world=8]`: the per-GPU memory estimate of every study pair
(`kdlite.analysis.memory`, docs/memory.md) as a Markdown table."""

from __future__ import annotations

from dataclasses import dataclass

from kdlite.analysis.memory import markdown
from kdlite.cli._args import arg, argv_or_sys, parse_keys


@dataclass
class Keys:
    world: int = arg(8, "GPUs the student and teacher are sharded over (trainer=fsdp)")


def main(argv: list[str] | None = None) -> str:
    args = parse_keys(Keys, argv_or_sys(argv), prog="python -m kdlite.cli.memory", doc=__doc__)
    if args.world < 1:
        raise SystemExit(f"python -m kdlite.cli.memory: error: world={args.world}: must be >= 1")
    table = markdown(args.world)
    print(table)
    return table


if __name__ == "__main__":
    main()
