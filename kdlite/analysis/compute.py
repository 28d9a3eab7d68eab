"""Compute profile of one distillation step per LSP: peak memory, step time, tokens/s, FLOPs
(the study's Figure 6 as a table and a plot).

One step = teacher forward under no_grad + student forward + loss + student backward, on `batch`
rows of `floor(lsp * seq_len)` tokens (the crop is what LSP saves; random token ids and random
weights suffice, compute does not depend on values). No optimizer step: AdamW's state is a fixed
2x the student's parameters whatever the LSP, so it shifts memory, not the LSP trend; the paper's
68.2/36.6 GiB are per GPU under 8-way FSDP with that state, so compare ratios, not GiB.

Loss: `kdlite.losses.distill_loss_chunked` on last hidden states (what training runs; it projects
only the T-1 positions that have a label, so the analytic count uses `head_tokens = T - 1` per row),
or `loss=full`: `kdlite.losses.distill_loss_reference` on both models' full logits (every position
projected); the table says which ran.

Timing: `time_steps` is the one harness of kdlite's measurements (this profile and
`python -m kdlite.cli.bench`): untimed warm-up calls, then timed calls with their peak memory.

Memory: on CUDA, `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats` (weights,
gradients and activations: the absolute peak). On CPU tracemalloc cannot see torch's allocator, so a
thread samples the process RSS from /proc/self/statm every millisecond during the step and reports
the growth of its peak over the RSS before the step (activations and fresh gradient buffers; the
weights are already resident). Sampling can miss a peak shorter than ~1 ms, and freed memory the
allocator keeps makes later steps read lower; read the CPU numbers as a trend.
"""

from __future__ import annotations

import functools
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from kdlite.analysis.flops import step_flops

LOSS_CHUNKED = "kdlite.losses.distill_loss_chunked"
LOSS_FULL = "kdlite.losses.distill_loss_reference (full logits)"


@dataclass(frozen=True)
class ProfileRow:
    lsp: float
    seq_len: int  # tokens per row after the crop
    batch: int
    step_time_s: float  # median over timed steps
    tokens_per_s: float
    flops: int  # analytic, causal attention, one step
    peak_memory_bytes: int
    memory_kind: str
    loss_impl: str
    counted_flops: int | None = None  # FlopCounterMode, when asked (full-square attention)


def pair_shapes(pair: str) -> tuple[str, str]:
    """`tiny` -> tiny-teacher/tiny-student; `8b_4b` -> 8b/4b (the names of `QWEN3_SHAPES`)."""
    if pair == "tiny":
        return "tiny-teacher", "tiny-student"
    teacher, _, student = pair.partition("_")
    if not student:
        raise ValueError(f"pair {pair!r} is not `tiny` or `<teacher>_<student>` like 8b_4b")
    return teacher, student


def build_pair(pair: str, vocab_size: int | None, dtype: torch.dtype, device: torch.device):
    """Random-weight teacher and student of a pair (kdlite.models), teacher frozen in eval mode."""
    from kdlite.models import random_model

    t_shape, s_shape = pair_shapes(pair)
    teacher = random_model(t_shape, vocab_size=vocab_size, dtype=dtype, seed=0, device=device)
    student = random_model(s_shape, vocab_size=vocab_size, dtype=dtype, seed=1, device=device)
    teacher.eval().requires_grad_(False)
    student.train()
    return teacher, student


def _loss_fn(prefer_chunked: bool):
    """(loss of hidden states and heads, its name): the chunked loss training runs, or the
    reference on full `[T, V]` logits of both models (`kdlite.losses`, fp32 log-softmax)."""
    from kdlite.losses import distill_loss_chunked, distill_loss_reference

    def chunked(s_hidden, s_head, t_hidden, t_head, labels, weights, lam, vocab):
        return distill_loss_chunked(
            s_hidden, s_head, t_hidden, t_head, labels, weights, lam=lam, vocab_size=vocab
        ).loss

    def full(s_hidden, s_head, t_hidden, t_head, labels, weights, lam, vocab):
        t_logits = None if t_hidden is None else t_hidden @ t_head[:vocab].T
        s_logits = s_hidden @ s_head[:vocab].T
        return distill_loss_reference(
            s_logits, t_logits, labels, weights, lam=lam, vocab_size=vocab
        ).loss

    return (chunked, LOSS_CHUNKED) if prefer_chunked else (full, LOSS_FULL)


def _hidden(model, input_ids):
    return model.get_decoder()(input_ids=input_ids, use_cache=False).last_hidden_state


def train_step(teacher, student, input_ids, lam: float, loss_fn) -> torch.Tensor:
    """Teacher forward (no grad) + student forward/backward on one batch; returns the loss."""
    labels = torch.full_like(input_ids, -100)
    labels[:, :-1] = input_ids[:, 1:]
    weights = (labels != -100).float()
    weights = weights / weights.sum()
    vocab = min(student.config.vocab_size, teacher.config.vocab_size)
    t_hidden = None
    if lam > 0:
        with torch.no_grad():
            t_hidden = _hidden(teacher, input_ids)
    s_hidden = _hidden(student, input_ids)
    loss = loss_fn(
        s_hidden,
        student.get_output_embeddings().weight,
        t_hidden,
        teacher.get_output_embeddings().weight,
        labels,
        weights,
        lam,
        vocab,
    )
    loss.backward()
    return loss.detach()


class RssPeak:
    """Peak resident set size sampled by a thread (Linux /proc; ru_maxrss elsewhere)."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.peak = 0
        self._stop = threading.Event()

    def rss(self) -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self.page
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval_s)

    def __enter__(self) -> RssPeak:
        self.start = self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def time_steps(
    step: Callable[[], Any],
    *,
    steps: int,
    warmup: int,
    device: torch.device,
    between: Callable[[], Any] | None = None,
) -> tuple[list[float], int]:
    """`warmup` untimed calls of `step`, then `steps` timed ones -> (seconds of each timed call,
    the largest peak memory of a timed call). Peak memory: on CUDA `max_memory_allocated` after a
    reset (the absolute peak; the device is synchronised around each call), on CPU the growth of the
    sampled peak RSS during the call (`RssPeak`, a trend). `between` runs after every call, untimed
    (e.g. the gradients' reset of a step without an optimizer)."""
    cuda = device.type == "cuda"
    for _ in range(warmup):
        step()
        if between is not None:
            between()
    times, peaks = [], []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            step()
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
            peaks.append(torch.cuda.max_memory_allocated(device))
        else:
            with RssPeak() as rss:
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            peaks.append(rss.growth)
        if between is not None:
            between()
    return times, max(peaks)


def count_step_flops(teacher, student, input_ids, lam: float, loss_fn) -> int:
    """Matmul FLOPs of one step as torch's FlopCounterMode sees them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        train_step(teacher, student, input_ids, lam, loss_fn)
    student.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def profile_lsps(
    teacher,
    student,
    lsps: list[float],
    seq_len: int,
    *,
    batch: int = 1,
    steps: int = 3,
    warmup: int = 1,
    lam: float = 0.5,
    prefer_chunked: bool = True,
    count_flops: bool = False,
    seed: int = 0,
) -> list[ProfileRow]:
    """Profile one step at each LSP on the given models (already on their device)."""
    loss_fn, loss_impl = _loss_fn(prefer_chunked)
    device = next(student.parameters()).device
    cuda = device.type == "cuda"
    vocab = min(student.config.vocab_size, teacher.config.vocab_size)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for lsp in lsps:
        T = max(2, int(lsp * seq_len))
        ids = torch.randint(0, vocab, (batch, T), generator=gen).to(device)
        times, peak = time_steps(
            functools.partial(train_step, teacher, student, ids, lam, loss_fn),
            steps=steps,
            warmup=warmup,
            device=device,
            between=lambda: student.zero_grad(set_to_none=True),
        )
        step_time = statistics.median(times)
        flops = step_flops(
            teacher.config if lam > 0 else None,
            student.config,
            T,
            batch=batch,
            head_tokens=T - 1,
        )["total"]
        counted = count_step_flops(teacher, student, ids, lam, loss_fn) if count_flops else None
        rows.append(
            ProfileRow(
                lsp=lsp,
                seq_len=T,
                batch=batch,
                step_time_s=step_time,
                tokens_per_s=batch * T / step_time,
                flops=flops,
                peak_memory_bytes=peak,
                memory_kind="cuda max_memory_allocated" if cuda else "CPU peak RSS growth",
                loss_impl=loss_impl,
                counted_flops=counted,
            )
        )
    return rows


def markdown(rows: list[ProfileRow], pair: str) -> str:
    from kdlite.analysis import paper

    paper_mem = paper.PEAK_MEMORY_GIB if pair == paper.COMPUTE_PAIR else {}
    full = next((r for r in rows if r.lsp == 1.0), None)
    lines = [
        f"Compute profile, pair `{pair}`; memory = {rows[0].memory_kind}; loss = {rows[0].loss_impl}.",
        "",
        "| lsp | tokens/row | batch | peak mem (MiB) | mem / lsp 1.0 | paper GiB (Fig. 6) "
        "| paper ratio | step time (s) | tokens/s | TFLOP/step (analytic) | TFLOP/step (counter) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = (
            r.peak_memory_bytes / full.peak_memory_bytes
            if full and full.peak_memory_bytes
            else None
        )
        p_gib = paper_mem.get(r.lsp)
        p_ratio = p_gib / paper_mem[1.0] if p_gib is not None and 1.0 in paper_mem else None
        lines.append(
            f"| {r.lsp} | {r.seq_len} | {r.batch} | {r.peak_memory_bytes / 2**20:,.1f} | "
            f"{'' if ratio is None else f'{ratio:.2f}'} | {'' if p_gib is None else p_gib} | "
            f"{'' if p_ratio is None else f'{p_ratio:.2f}'} | {r.step_time_s:.4f} | "
            f"{r.tokens_per_s:,.0f} | {r.flops / 1e12:.4g} | "
            f"{'' if r.counted_flops is None else f'{r.counted_flops / 1e12:.4g}'} |"
        )
    lines.append("")
    lines.append(
        "Analytic FLOPs count causal attention (half the T x T work). FlopCounterMode charges "
        "attention the full square where it sees it (eager attention, CUDA SDPA kernels) and not "
        "at all for CPU SDPA (torch 2.13 has no formula for that op), so the counter column differs "
        "from the analytic one by the attention term; the test checks the two agree exactly with "
        "eager attention and `causal=False`."
    )
    return "\n".join(lines) + "\n"


def plot(rows: list[ProfileRow], pair: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdlite.analysis import paper

    lsps = [r.lsp for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(lsps, [r.peak_memory_bytes / 2**30 for r in rows], "o-", label="ours")
    if pair == paper.COMPUTE_PAIR:
        xs = sorted(paper.PEAK_MEMORY_GIB)
        axes[0].plot(xs, [paper.PEAK_MEMORY_GIB[x] for x in xs], "x--", label="paper (8xH100 FSDP)")
    axes[0].set_ylabel(f"GiB ({rows[0].memory_kind})")
    axes[0].legend(fontsize=7)
    axes[1].plot(lsps, [r.step_time_s for r in rows], "o-")
    axes[1].set_ylabel("step time (s)")
    axes[2].plot(lsps, [r.flops / 1e12 for r in rows], "o-")
    axes[2].set_ylabel("TFLOP / step (analytic)")
    for ax in axes:
        ax.set_xlabel("LSP")
    fig.suptitle(f"Compute per step vs LSP, {pair} (Figure 6)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
