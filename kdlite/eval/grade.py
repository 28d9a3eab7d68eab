"""math-verify grading of raw generations: two scores per sample, in a pool of killable workers.

- full: the whole output, as lighteval scored it (gold parsed as LaTeX or a plain expression; in the
  prediction `\\boxed{}` has first priority, then the rightmost answer-like match). A boxed answer
  inside the think block counts. math-verify may read several boxes of one text together
  (`boxed="all"`): "\\boxed{205}. wait, recheck: 204</think> so \\boxed{204}" parses as "205,204" and is
  wrong. That is lighteval's behaviour, kept; the strict score only sees the final answer.
- strict: only the text after the last `</think>`; no `</think>` (thinking never ended, e.g. cut at
  the token limit) is wrong.

math-verify's own timeouts are `signal.alarm`s, which only work in a main thread and can be defeated
by C code (sympy simplifying a 10k-character expression). So grading runs in spawned worker
processes, one sample at a time with a wall-clock deadline: a sample that runs past it or kills its
worker is scored wrong, counted (`timeout` / `error`), and the worker is replaced. A
ProcessPoolExecutor cannot do this: a running task cannot be cancelled, and one dead worker breaks
the pool for every pending sample. Cost: ~1 ms of IPC per sample, against 5-50 ms to parse one.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait

from tqdm.auto import tqdm

from kdlite.chat import END_THINK

STARTUP_TIMEOUT_S = 300.0  # spawn + import sympy; minutes on a loaded 2-core box


def strict_text(text: str) -> str | None:
    i = text.rfind(END_THINK)
    return None if i < 0 else text[i + len(END_THINK) :]


def _verify(gold: str, pred_text: str, timeout_s: int) -> bool:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    gold_cfg = [LatexExtractionConfig(), ExprExtractionConfig()]
    # "$...$" so LaTeX golds parse whole ("3\sqrt{2}" bare parses as the expression 3)
    gold_parsed = parse(f"${gold}$", gold_cfg, parsing_timeout=timeout_s) or parse(
        gold, gold_cfg, parsing_timeout=timeout_s
    )
    pred = parse(
        pred_text,
        [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        parsing_timeout=timeout_s,
    )
    return bool(gold_parsed and pred and verify(gold_parsed, pred, timeout_seconds=timeout_s))


def grade_sample(gold: str, text: str, timeout_s: int = 5) -> tuple[bool, bool]:
    """(full, strict) correctness of one output; the reference implementation the pool runs."""
    if not isinstance(text, str) or not isinstance(gold, str):
        raise TypeError(
            f"gold and text must be strings, got {type(gold).__name__}, {type(text).__name__}"
        )
    full = _verify(gold, text, timeout_s)
    after = strict_text(text)
    strict = after is not None and after.strip() != "" and _verify(gold, after, timeout_s)
    return full, strict


def _worker(conn, fn: Callable, timeout_s: int) -> None:
    fn("1", "1", timeout_s)  # import math-verify/sympy before the first deadline starts (~3 s)
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            return
        i, gold, text = msg
        try:
            full, strict = fn(gold, text, timeout_s)
            conn.send((i, "ok", bool(full), bool(strict)))
        except Exception as e:  # a grader bug on one sample: wrong, counted, not fatal
            conn.send((i, f"error: {type(e).__name__}: {e}"[:200], False, False))


class _Slot:
    def __init__(self, ctx, fn, inner_timeout: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, fn, inner_timeout), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.task: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()


def grade_all(
    pairs: Sequence[tuple[str, str]],
    *,
    workers: int = 2,
    timeout_s: float = 20.0,
    fn: Callable = grade_sample,
) -> list[tuple[str, bool, bool]]:
    """Grade (gold, text) pairs; returns (status, full, strict) per pair, status ok|error|timeout."""
    results: list[tuple[str, bool, bool] | None] = [None] * len(pairs)
    if not pairs:
        return []
    ctx = mp.get_context("spawn")  # safe under CUDA and threads; workers import math-verify once
    inner = max(1, int(timeout_s // 2))  # math-verify's own alarms fire first in the common case
    slots = [_Slot(ctx, fn, inner) for _ in range(max(1, min(workers, len(pairs))))]
    todo = iter(range(len(pairs)))
    left = len(pairs)
    bar = tqdm(total=len(pairs), desc="grading", unit="sample", disable=None)  # None: TTY only

    def feed(slot: _Slot) -> None:
        if not slot.ready:
            return
        i = next(todo, None)
        slot.task = i
        if i is not None:
            slot.deadline = time.monotonic() + timeout_s
            slot.conn.send((i, *pairs[i]))

    try:
        while left:
            waiting = [s for s in slots if not s.ready or s.task is not None]
            deadlines = [s.deadline for s in slots if s.task is not None]
            timeout = (
                max(0.0, min(deadlines) - time.monotonic()) if deadlines else STARTUP_TIMEOUT_S
            )
            ready = wait([s.conn for s in waiting], timeout=timeout)
            if not ready and not deadlines:
                raise RuntimeError(f"no grader process started within {STARTUP_TIMEOUT_S}s")
            for k, s in enumerate(slots):
                if not s.ready:
                    if s.conn in ready:
                        if s.conn.recv() != "ready":
                            raise RuntimeError("grader worker sent an unexpected message")
                        s.ready = True
                        feed(s)
                    continue
                if s.task is None:
                    continue
                if s.conn in ready:
                    try:
                        i, status, full, strict = s.conn.recv()
                    except (EOFError, OSError):  # the worker died on this sample
                        i, status, full, strict = s.task, "error: grader process died", False, False
                        s.kill()
                        s = slots[k] = _Slot(ctx, fn, inner)
                elif time.monotonic() >= s.deadline:
                    i, status, full, strict = s.task, "timeout", False, False
                    s.kill()
                    s = slots[k] = _Slot(ctx, fn, inner)
                else:
                    continue
                results[i] = (status, full, strict)
                left -= 1
                bar.update(1)
                feed(s)
    finally:
        bar.close()
        for s in slots:
            if s.proc.is_alive():
                with contextlib.suppress(OSError):
                    s.conn.send(None)
                s.proc.join(timeout=2)
                if s.proc.is_alive():
                    s.kill()
    return results  # type: ignore[return-value]
