"""Benchmarks as lists of `Problem(id, problem, answer)` and the user prompt each one is asked with.

Sources: a Hub dataset (AIME 2024 `HuggingFaceH4/aime_2024`, AIME 2025 `yentinglin/aime_2025`, both
30 rows with `problem`/`answer`, revision pinnable), the embedded synthetic set, or a user JSONL.
Everything is loaded and checked before any model is touched: a benchmark that cannot be read costs
seconds, not the hours of a 30 x 64 x 32k-token generation run.

The `aime` prompt is lighteval's AIME user prompt (its documented wording, double space after the
first sentence included: byte-level prompt changes move AIME scores of small models by points).
The `plain` prompt is the problem text itself, which is what the embedded corpus trains on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


class EvalError(ValueError):
    """A bad model, benchmark or configuration, raised before any generation starts."""


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str


AIME_PROMPT = (
    "Solve the following math problem efficiently and clearly.  The last line of your response "
    "should be of the following format: 'Therefore, the final answer is: $\\boxed{ANSWER}$. "
    "I hope it is correct' (without quotes) where ANSWER is just the final number or expression "
    "that solves the problem. Think step by step before answering.\n\n"
)


def user_prompt(problem: Problem, prompt: str) -> str:
    if prompt == "aime":
        return AIME_PROMPT + problem.problem
    if prompt == "plain":
        return problem.problem
    raise EvalError(f"unknown prompt {prompt!r}; expected 'aime' or 'plain'")


def problems_from_rows(rows: Iterable[Mapping], source: str) -> list[Problem]:
    """Rows with `problem` and `answer` (and an optional `id`) -> Problems; bad rows are errors."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        missing = [k for k in ("problem", "answer") if k not in row]
        if missing:
            raise EvalError(
                f"{source}: row {i} has no {', '.join(missing)} field (keys: {sorted(row)})"
            )
        text, answer = row["problem"], row["answer"]
        if not isinstance(text, str) or not text.strip():
            raise EvalError(f"{source}: row {i}: `problem` must be a non-empty string")
        if (
            isinstance(answer, bool)
            or not isinstance(answer, (str, int, float))
            or not str(answer).strip()
        ):
            raise EvalError(f"{source}: row {i}: `answer` must be a non-empty string or number")
        pid = str(row.get("id", i))
        if pid in seen:
            raise EvalError(f"{source}: duplicate id {pid!r} (row {i})")
        seen.add(pid)
        problems.append(Problem(id=pid, problem=text, answer=str(answer).strip()))
    if not problems:
        raise EvalError(f"{source}: no problems")
    return problems


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise EvalError(f"benchmark file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise EvalError(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"
                )
            rows.append(row)
    if not rows:
        raise EvalError(
            f"{path}: empty benchmark file (one JSON object per line with problem/answer)"
        )
    return rows


def load_problems(bench) -> list[Problem]:
    """`bench` is a BenchConfig (conf/bench/<name>.yaml)."""
    if bench.source == "jsonl":
        if not bench.path:
            raise EvalError(
                f"bench {bench.name}: set the file, e.g. benches.{bench.name}.path=my.jsonl"
            )
        problems = problems_from_rows(read_jsonl(bench.path), str(bench.path))
    elif bench.source == "synthetic":
        from kdlite.data.synthetic import generate_benchmark

        try:
            rows = generate_benchmark(bench.size, bench.seed, min_steps=bench.min_steps)
        except ValueError as e:
            raise EvalError(f"bench {bench.name}: benches.{bench.name}.{e}") from None
        problems = problems_from_rows(rows, "synthetic")
    elif bench.source == "hub":
        import datasets

        try:
            ds = datasets.load_dataset(bench.hub_id, revision=bench.revision, split=bench.split)
        except Exception as e:  # offline, unknown revision, ...: all mean "cannot evaluate this"
            raise EvalError(
                f"bench {bench.name}: cannot load {bench.hub_id} (revision {bench.revision}, split "
                f"{bench.split}): {type(e).__name__}: {e}. Offline? Run once with network so the "
                "datasets cache holds it, or export it to JSONL and use bench=jsonl."
            ) from e
        problems = problems_from_rows(ds, bench.hub_id)
    else:
        raise EvalError(f"bench {bench.name}: unknown source {bench.source!r}")
    if bench.source != "synthetic" and bench.size is not None:
        problems = problems[: bench.size]
    return problems
