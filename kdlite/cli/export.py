"""`python -m kdlite.cli.export out=DIR [role=student|teacher] [train.py overrides: pair=... seed=...]`

Exports a model of the pair as a run starts from it (`kdlite.export.export_initial_model`): the
un-distilled student (the study's baseline row) or the teacher that teaches, as an HF folder that
`evaluate.py` reads. Every other `key=value` is a `train.py` override selecting the pair and seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdlite.cli._args import arg, argv_or_sys, compose_errors, parse

PROG = "python -m kdlite.cli.export"


@dataclass
class Keys:
    out: str = arg("???", "output folder (required)")
    role: str = arg("student", "which model of the pair", choices=("student", "teacher"))


def main(argv: list[str] | None = None) -> Path:
    args, overrides = parse(
        Keys, argv_or_sys(argv), prog=PROG, doc=__doc__, rest=lambda key: True,
        rest_help="Other key=value words are train.py overrides (python train.py --help).",
    )  # fmt: skip
    from kdlite.export import export_initial_model

    with compose_errors(PROG):
        out = export_initial_model(overrides, args.out, args.role)
    print(f"kdlite: exported the initial {args.role} to {out}")
    return out


if __name__ == "__main__":
    main()
