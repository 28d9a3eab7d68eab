"""Evaluate models on AIME24/AIME25, the embedded synthetic set or a JSONL (docs/design.md §7).

    python evaluate.py                                         # runs/default on the synthetic set, CPU
    python evaluate.py runs/demo/crop=right,lsp=0.5 runs/demo/lsp=0.5 bench=synthetic_long
    python evaluate.py sweep=runs/rq2_lsp bench=aime24,aime25   # every finished run of a sweep

Thin wrapper around `kdlite.eval.run.evaluate(cfg)`. Run directories are passed as the shell
completes them (bare, or `model=a,b`), although their names hold `=` and `,`:
`kdlite.eval.cli.rewrite_argv` quotes them for Hydra first, and turns `bench=a,b` into a list so every
benchmark of a model shares one engine.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import kdlite.eval.config  # noqa: F401  (registers the eval_schema)
from kdlite.eval.benchmarks import EvalError
from kdlite.eval.cli import ArgvError, rewrite_argv
from kdlite.eval.run import evaluate


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except EvalError as e:
        sys.exit(f"evaluate.py: error: {e}")


if __name__ == "__main__":
    try:
        sys.argv = [sys.argv[0], *rewrite_argv(sys.argv[1:])]
    except ArgvError as err:
        sys.exit(f"evaluate.py: error: {err}")
    main()
