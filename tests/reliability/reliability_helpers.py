"""Helpers shared by the reliability suite's modules (see conftest.py for the groups)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from kdlite.config import register_configs

# The tiny-run config of the training tests (the shipped tiny pair on a small slice of the
# synthetic corpus, a few seconds per run), one definition for both suites.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_training import FAST, make_cfg  # noqa: E402, F401 - re-exported to the suite

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
FIXTURES = REPO / "tests" / "fixtures" / "reliability"
DATA_FIXTURES = REPO / "tests" / "fixtures" / "data"
TINY_BENCH = REPO / "tests" / "fixtures" / "eval" / "tiny.jsonl"  # 3 problems
register_configs()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def own_row(i: int) -> dict:
    """A good row of a user's file (`data=jsonl`), distinct per `i`."""
    return {
        "prompt": f"What is {i} + {i}?",
        "cot": f"{i} + {i} = {2 * i}. Check: {2 * i} - {i} = {i}.",
        "answer": f"\\boxed{{{2 * i}}}",
    }


def compose_eval(*overrides: str):
    import kdlite.eval.config  # noqa: F401  (registers eval_schema)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("eval", overrides=list(overrides))


def small(*extra: str) -> tuple[str, ...]:
    return ("bench=jsonl", f"benches.jsonl.path={TINY_BENCH}", "n_samples=2",
            "max_new_tokens=6", "batch_size=4", "grade_workers=1", *extra)  # fmt: skip
