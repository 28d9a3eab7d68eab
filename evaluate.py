"""Evaluate models on AIME24/AIME25, the embedded synthetic set or a JSONL (docs/design.md §7).

    python evaluate.py                                         # runs/default on the synthetic set, CPU
    python evaluate.py model=runs/a,runs/b bench=aime24,aime25 # several models and benchmarks, one call

Thin wrapper around `kdlite.eval.run.evaluate(cfg)`. Hydra reads `key=a,b` as a sweep (and refuses
it without -m); for `model` and `bench` this wrapper rewrites it to the list `key=[a,b]` first, so
every benchmark of a model shares one engine (one vLLM start instead of one per benchmark).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import kdlite.eval.config  # noqa: F401  (registers the eval_schema)
from kdlite.eval.benchmarks import EvalError
from kdlite.eval.run import evaluate

LIST_KEYS = ("model=", "bench=")


def listify_argv(argv: list[str]) -> list[str]:
    """`model=a,b` -> `model=[a,b]` (outside multirun); other arguments unchanged."""
    if any(a in ("-m", "--multirun") for a in argv):
        return argv
    out = []
    for a in argv:
        if a.startswith(LIST_KEYS) and "," in a and a.split("=", 1)[1][:1] not in "[\"'":
            key, value = a.split("=", 1)
            a = f"{key}=[{value}]"
        out.append(a)
    return out


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except EvalError as e:
        sys.exit(f"evaluate.py: error: {e}")


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *listify_argv(sys.argv[1:])]
    main()
