"""`python -m kdlite.cli.bench [kind=step|lsp] [mode=cpu|gpu] [key=value ...]`: kdlite's timings.

`kind=step` (default): kdlite's training step against a naive baseline, one process, a dated
section appended to BENCHMARKS.md (`append=false`: printed only). `kind=lsp`: the compute profile
of one distillation step per LSP with random weights (`kdlite.analysis.compute`, the study's
Figure 6), written to `<out>/profile.md` and `<out>/profile.png`; on CUDA with real shapes, e.g.
`pair=8b_4b seq_len=4096 lsp=0.5,1.0`, the weights alone are 24 GB in bf16: use one large GPU.
Both time with the same harness (`kdlite.analysis.compute.time_steps`).

kind=step:

One random-weight Qwen3-shaped pair, the same micro-batches, one optimizer step per measured step
(AdamW; fused on CUDA), run by each variant in turn:
- `naive`: HF forward of both models to full `[T, V]` logits + `distill_loss_reference` (fp32
  log-softmax over the whole vocabulary) + backward + AdamW — what one writes first;
- `bare`: `HiddenLM` + `distill_loss_chunked` (only supervised positions projected, 1,024 at a time);
- `cached`: `bare` with the teacher read from a top-k teacher cache (`kdlite.teacher_cache`, k=64),
  so no teacher forward (cache built once before timing, not counted);
- `lightning`: the real `DistillModule.training_step` under `trainer.fit` (logging, hooks,
  accumulation), timed from one optimizer step's start to the next: its gap to `bare` is
  Lightning's overhead;
- `liger`: Liger's fused linear JSD (beta=0: forward KL) + fused linear CE, when installed.
Workloads: single rows of each `seq_lens` length, n short examples packed in one row (attention
isolated by the mask of `kdlite.data.packing`), and the same examples as n separate micro-batches.

Reported per (workload, variant): step time p10/p50/p90, tokens/s at p50, peak memory, analytic
model TFLOP/s (`kdlite.analysis.flops`; teacher forward excluded for `cached`) and MFU against a
matmul measured in the same run (fp32 on CPU, bf16 on CUDA). Peak memory: CUDA
`max_memory_allocated` (weights + grads + optimizer state + activations), on CPU the growth of the
peak RSS during the step (`kdlite.analysis.compute.RssPeak`; a trend, not an absolute).

CPU mode keeps the Qwen3 tiny pair's layers but a 32,768-id vocabulary so that the vocabulary
projection weighs as it does at real shapes (Qwen3-1.7B: 151,936 × 2,048 head, ~20% of the forward
FLOPs at 4k tokens; here ~60%): its ratios show the direction, not the GPU sizes. It runs in about
a minute on 2 cores. GPU mode uses the 4B (bf16) → 1.7B (fp32 master, bf16 autocast) shapes at
512…4096 tokens and 4 × 1024 packed with flex_attention.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlite.analysis.compute import RssPeak, time_steps
from kdlite.analysis.flops import step_flops
from kdlite.cli._args import UsageError, arg, argv_or_sys, parse_keys
from kdlite.data.packing import attention_mask_for, pack
from kdlite.data.supervision import IGNORE_INDEX, Supervised
from kdlite.losses import (
    distill_loss_chunked,
    distill_loss_chunked_cached,
    distill_loss_reference,
    token_weights,
)
from kdlite.models import HiddenLM, qwen3_config, random_model

VARIANTS = ("naive", "bare", "cached", "lightning", "liger")
CACHE_K = 64


@dataclass(frozen=True)
class Setup:
    mode: str
    teacher_shape: str
    student_shape: str
    vocab_rows: int  # head rows of both models
    vocab_size: int  # tokenizer length: the loss cuts logits to it
    teacher_dtype: torch.dtype
    autocast: torch.dtype | None  # student compute dtype (master weights stay fp32)
    attention: str
    seq_lens: tuple[int, ...]
    packed: tuple[int, int]  # (examples, tokens each)
    steps: int
    warmup: int


def setup_for(mode: str) -> Setup:
    if mode == "cpu":
        return Setup(
            "cpu", "tiny-teacher", "tiny-student", 32_768, 32_768, torch.float32, None, "sdpa",
            (256, 512, 1024), (4, 256), steps=3, warmup=1,
        )  # fmt: skip
    return Setup(
        "gpu", "4b", "1.7b", 151_936, 151_669, torch.bfloat16, torch.bfloat16, "flex_attention",
        (512, 1024, 2048, 4096), (4, 1024), steps=10, warmup=3,
    )  # fmt: skip


# ---- workloads ---------------------------------------------------------------------------------
@dataclass
class Workload:
    name: str
    micro_batches: list[dict[str, Any]]
    lengths: list[int]  # tokens of each example (for the analytic FLOPs)

    @property
    def tokens(self) -> int:
        return sum(self.lengths)


def _item(n: int, vocab: int, gen: torch.Generator, source_id: str) -> Supervised:
    ids = torch.randint(0, vocab, (n,), generator=gen).tolist()
    return Supervised(ids, ids[1:] + [IGNORE_INDEX], source_id)


def _batch(items: Sequence[Supervised], step_items: Sequence[Supervised]) -> dict[str, Any]:
    batch: dict[str, Any] = dict(pack(items))
    batch["step_examples"] = len(step_items)
    batch["step_tokens"] = sum(it.n_supervised for it in step_items)
    batch["n_weighted_examples"] = len(items)
    batch["source_ids"] = [it.source_id for it in items]
    return batch


def workloads(s: Setup, seed: int = 0) -> list[Workload]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for T in s.seq_lens:
        item = _item(T, s.vocab_size, gen, f"row-{T}")
        out.append(Workload(f"1 × {T}", [_batch([item], [item])], [T]))
    n, length = s.packed
    items = [_item(length, s.vocab_size, gen, f"short-{length}-{i}") for i in range(n)]
    out.append(Workload(f"{n} × {length} packed", [_batch(items, items)], [length] * n))
    out.append(
        Workload(f"{n} × {length} separate", [_batch([it], items) for it in items], [length] * n)
    )
    return out


# ---- the models --------------------------------------------------------------------------------
def build_models(s: Setup, device: torch.device) -> tuple[nn.Module, nn.Module]:
    def make(shape: str, dtype: torch.dtype, seed: int) -> nn.Module:
        return random_model(
            shape, s.vocab_rows, dtype, attn_implementation=s.attention, seed=seed, device=device
        )

    teacher = make(s.teacher_shape, s.teacher_dtype, 0).eval().requires_grad_(False)
    student = make(s.student_shape, torch.float32, 1).train()
    return teacher, student


def _optimizer(student: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(student.parameters(), lr=1e-5, fused=device.type == "cuda" or None)


def _mask(batch: dict[str, Any], s: Setup, device: torch.device) -> Any:
    segments = batch["segment_ids_BT"]
    if not bool((segments != 0).any()):
        return None  # one example per row: plain causal attention is exact
    dtype = s.autocast or torch.float32
    return attention_mask_for(segments.to(device), s.attention, dtype=dtype)


def _weights(batch: dict[str, Any]) -> torch.Tensor:
    return token_weights(
        batch["labels_BT"],
        batch["segment_ids_BT"],
        "sequence",
        step_examples=batch["step_examples"],
        step_tokens=batch["step_tokens"],
    )


def _autocast(s: Setup, device: torch.device):
    return torch.autocast(device.type, dtype=s.autocast, enabled=s.autocast is not None)


def _on_device(batch: dict[str, Any], s: Setup, device: torch.device):
    """A micro-batch's model inputs, loss labels and weights, and attention mask on `device`."""
    ids = batch["input_ids_BT"].to(device)
    pos = batch["position_ids_BT"].to(device)
    labels, w = batch["labels_BT"].to(device), _weights(batch).to(device)
    return ids, pos, labels, w, _mask(batch, s, device)


# ---- step functions: one optimizer step over a workload's micro-batches -------------------------
StepFn = Callable[[list[dict[str, Any]]], None]


def naive_step(teacher, student, opt, s: Setup, lam: float, device) -> StepFn:
    def step(micro_batches: list[dict[str, Any]]) -> None:
        for batch in micro_batches:
            ids, pos, labels, w, mask = _on_device(batch, s, device)
            with _autocast(s, device):
                with torch.no_grad():
                    t_logits = teacher(input_ids=ids, position_ids=pos, attention_mask=mask).logits
                s_logits = student(input_ids=ids, position_ids=pos, attention_mask=mask).logits
            parts = distill_loss_reference(
                s_logits, t_logits, labels, w, lam=lam, vocab_size=s.vocab_size
            )
            parts.loss.backward()
            del t_logits, s_logits, parts
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bare_step(
    teacher, student, opt, s: Setup, lam: float, device, cache=None, **loss_options: Any
) -> StepFn:
    t_lm, s_lm = HiddenLM(teacher), HiddenLM(student)

    def step(micro_batches: list[dict[str, Any]]) -> None:
        for batch in micro_batches:
            ids, pos, labels, w, mask = _on_device(batch, s, device)
            with _autocast(s, device):
                hidden = s_lm(ids, pos, mask)
                if cache is not None:
                    topk_ids, topk_logp, rest = cache.lookup(batch, device=device)
                    parts = distill_loss_chunked_cached(
                        hidden, s_lm.head_weight, topk_ids, topk_logp, rest, labels, w,
                        lam=lam, vocab_size=s.vocab_size, **loss_options,
                    )  # fmt: skip
                else:
                    with torch.no_grad():
                        t_hidden = t_lm(ids, pos, mask)
                    parts = distill_loss_chunked(
                        hidden, s_lm.head_weight, t_hidden, t_lm.head_weight, labels, w,
                        lam=lam, vocab_size=s.vocab_size, **loss_options,
                    )  # fmt: skip
            parts.loss.backward()
            del hidden, parts
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def liger_step(teacher, student, opt, s: Setup, lam: float, device) -> StepFn:
    """Liger's fused linear losses on the hidden states (GPU only; API of liger-kernel ≥ 0.5)."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss, LigerFusedLinearJSD

    jsd = LigerFusedLinearJSD(jsd_beta=0.0)  # beta = 0: forward KL(teacher ‖ student)
    ce = LigerFusedLinearCrossEntropyLoss(reduction="sum")
    t_lm, s_lm = HiddenLM(teacher), HiddenLM(student)
    V = s.vocab_size

    def step(micro_batches: list[dict[str, Any]]) -> None:
        for batch in micro_batches:
            ids = batch["input_ids_BT"].to(device)
            pos = batch["position_ids_BT"].to(device)
            labels = batch["labels_BT"].to(device)
            w = _weights(batch).to(device)
            mask = _mask(batch, s, device)
            keep = (w.reshape(-1) > 0).nonzero().squeeze(1)
            with _autocast(s, device):
                with torch.no_grad():
                    t_h = t_lm(ids, pos, mask).reshape(-1, teacher.config.hidden_size)[keep]
                h = s_lm(ids, pos, mask).reshape(-1, student.config.hidden_size)[keep]
                # Liger averages over positions; with all-supervised equal-length rows this is
                # the sequence-normalised loss up to a constant factor (speed is what is compared).
                t_w = t_lm.head_weight[:V].to(t_h.dtype)
                soft = jsd(h, s_lm.head_weight[:V], t_h, t_w, None)  # rows already supervised-only
                hard = ce(s_lm.head_weight[:V], h, labels.reshape(-1)[keep]) / max(1, len(keep))
                loss = lam * soft + (1 - lam) * hard
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


# ---- timing --------------------------------------------------------------------------------------
@dataclass
class Result:
    workload: str
    variant: str
    tokens: int
    times_s: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    flops: int = 0
    error: str | None = None

    def pct(self, q: float) -> float:
        xs = sorted(self.times_s)
        return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]

    @property
    def p50(self) -> float:
        return statistics.median(self.times_s)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.p50


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step: StepFn, w: Workload, s: Setup, device: torch.device) -> tuple[list[float], int]:
    return time_steps(lambda: step(w.micro_batches), steps=s.steps, warmup=s.warmup, device=device)


def time_lightning(
    teacher, student, w: Workload, s: Setup, lam: float, device: torch.device
) -> tuple[list[float], int]:
    """`trainer.fit` of the real DistillModule on the workload's micro-batches, repeated."""
    import lightning as L
    from torch.utils.data import DataLoader

    from kdlite.models import ModelSpec
    from kdlite.module import DistillModule, LossSettings, ModelSettings, OptimSettings

    module = DistillModule(
        ModelSettings(
            student=ModelSpec(shape=s.student_shape),
            teacher=ModelSpec(shape=s.teacher_shape),
            attention=s.attention,
        ),
        LossSettings(lam=lam, temperature=1.0, loss_norm="sequence", vocab_size=s.vocab_size),
        OptimSettings(lr=1e-5, warmup_ratio=0.0, fused=device.type == "cuda"),
    )
    module.student = HiddenLM(student)  # the same weights as the naive baseline
    module.set_teacher(HiddenLM(teacher))
    accumulate = len(w.micro_batches)
    n_steps = s.warmup + s.steps + 1
    starts: list[float] = []
    peak: dict[str, Any] = {}

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx % accumulate:
                return
            _sync(device)
            starts.append(time.perf_counter())
            if len(starts) == s.warmup + 1:  # first timed step
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                else:
                    peak["rss"] = RssPeak().__enter__()

    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if s.autocast is not None else "32-true",
        max_steps=n_steps,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[Clock()],
    )
    batches: list[dict[str, Any]] = w.micro_batches * n_steps
    loader: DataLoader[Any] = DataLoader(batches, batch_size=None, collate_fn=_identity)  # type: ignore[arg-type]
    trainer.fit(module, train_dataloaders=loader)
    _sync(device)
    starts.append(time.perf_counter())  # end of the last step (fit returns right after it)
    if device.type == "cuda":
        peak_bytes = torch.cuda.max_memory_allocated(device)
    else:
        rss = peak["rss"]
        rss.__exit__(None, None, None)
        peak_bytes = rss.growth
    timed = starts[s.warmup + 1 :]
    times = [b - a for a, b in zip(starts[s.warmup :], timed, strict=False)]
    module.student = None
    module.set_teacher(None)
    # Lightning's teardown moved the models to the CPU; the next variants share them
    student.to(device)
    teacher.to(device)
    return times, peak_bytes


def _identity(x: Any) -> Any:
    return x


def _build_cache(teacher, w: Workload, s: Setup, device, folder: Path):
    from kdlite.teacher_cache import CacheSpec, TeacherCache, build_cache

    rows = []
    for batch in w.micro_batches:
        for sid, seg in zip(batch["source_ids"], range(len(batch["source_ids"])), strict=True):
            keep = batch["segment_ids_BT"][0] == seg
            rows.append((sid, batch["input_ids_BT"][0, keep].tolist()))
    spec = CacheSpec(
        teacher="bench", data=w.name, k=CACHE_K, vocab_size=s.vocab_size, teacher_dtype="bench"
    )
    with _autocast(s, device):
        build_cache(HiddenLM(teacher), rows, folder, spec, device=device)
    return TeacherCache(folder)


def matmul_peak(device: torch.device) -> tuple[float, str]:
    """FLOP/s of a large square matmul (fp32 on CPU, bf16 on CUDA): the MFU denominator."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best, f"{str(dtype).removeprefix('torch.')} {n}×{n} matmul"


def _flops(s: Setup, w: Workload, with_teacher: bool) -> int:
    t_cfg = qwen3_config(s.teacher_shape, s.vocab_rows) if with_teacher else None
    s_cfg = qwen3_config(s.student_shape, s.vocab_rows)
    return sum(step_flops(t_cfg, s_cfg, n)["total"] for n in w.lengths)


def run(
    s: Setup, variants: Sequence[str], lam: float = 0.5, device: torch.device | None = None
) -> list[Result]:
    device = device or torch.device("cuda" if s.mode == "gpu" else "cpu")
    teacher, student = build_models(s, device)
    results = []
    with tempfile.TemporaryDirectory(prefix="kdlite-bench-") as tmp:
        for w in workloads(s):
            for variant in variants:
                r = Result(w.name, variant, w.tokens, flops=_flops(s, w, variant != "cached"))
                opt = None
                try:
                    if variant == "lightning":
                        r.times_s, r.peak_bytes = time_lightning(
                            teacher, student, w, s, lam, device
                        )
                    else:
                        opt = _optimizer(student, device)
                        if variant == "naive":
                            step = naive_step(teacher, student, opt, s, lam, device)
                        elif variant == "bare":
                            step = bare_step(teacher, student, opt, s, lam, device)
                        elif variant == "cached":
                            folder = Path(tmp) / w.name.replace(" ", "_")
                            cache = _build_cache(teacher, w, s, device, folder)
                            step = bare_step(teacher, student, opt, s, lam, device, cache=cache)
                        elif variant == "liger":
                            step = liger_step(teacher, student, opt, s, lam, device)
                        else:
                            raise ValueError(f"unknown variant {variant!r}")
                        r.times_s, r.peak_bytes = time_step(step, w, s, device)
                except ImportError as err:
                    r.error = f"skipped ({err.name or err} not installed)"
                except Exception as err:  # noqa: BLE001 - one failing variant must not end the run
                    r.error = f"failed: {type(err).__name__}: {str(err)[:120]}"
                del opt
                student.zero_grad(set_to_none=True)
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                results.append(r)
                print(_line(r), file=sys.stderr, flush=True)
    return results


def _line(r: Result) -> str:
    if r.error:
        return f"{r.workload:>18} {r.variant:>10}: {r.error}"
    return (
        f"{r.workload:>18} {r.variant:>10}: p50 {r.p50 * 1e3:8.1f} ms  "
        f"{r.tokens_per_s:9,.0f} tok/s  peak {r.peak_bytes / 2**20:8.1f} MiB"
    )


# ---- report --------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [
        f"CPU {cpu}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads",
        f"torch {torch.__version__}",
    ]
    try:
        import transformers

        parts.append(f"transformers {transformers.__version__}")
    except ImportError:
        pass
    if device.type == "cuda":
        parts.insert(0, f"GPU {torch.cuda.get_device_name(device)}")
    return "; ".join(parts)


def markdown(s: Setup, results: list[Result], peak: tuple[float, str], machine: str) -> str:
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    mem_kind = (
        "cuda max_memory_allocated" if s.mode == "gpu" else "growth of peak RSS during the step"
    )
    lines = [
        f"## {now} — `python -m kdlite.cli.bench mode={s.mode}`",
        "",
        f"Machine: {machine}.",
        f"Pair: {s.teacher_shape} (teacher, {str(s.teacher_dtype).removeprefix('torch.')}) → "
        f"{s.student_shape} (student, fp32 master"
        f"{', bf16 autocast' if s.autocast else ''}); vocabulary {s.vocab_rows:,} rows, "
        f"loss over {s.vocab_size:,}; attention {s.attention}; lam 0.5; AdamW; "
        f"{s.warmup} warm-up + {s.steps} timed steps. "
        f"MFU against {peak[1]} = {peak[0] / 1e12:.3f} TFLOP/s measured in this run. "
        f"Peak memory: {mem_kind}.",
        "",
        "| workload | variant | step p10 / p50 / p90 (ms) | tokens/s | × naive | peak mem (MiB) "
        "| × naive | model TFLOP/s | MFU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    naive = {r.workload: r for r in results if r.variant == "naive" and not r.error}
    for r in results:
        if r.error:
            lines.append(f"| {r.workload} | {r.variant} | {r.error} | | | | | | |")
            continue
        base = naive.get(r.workload)
        speed = f"{r.tokens_per_s / base.tokens_per_s:.2f}" if base else ""
        mem = f"{r.peak_bytes / base.peak_bytes:.2f}" if base and base.peak_bytes > 0 else ""
        tflops = r.flops / r.p50 / 1e12
        lines.append(
            f"| {r.workload} | {r.variant} | {r.pct(0.1) * 1e3:.1f} / {r.p50 * 1e3:.1f} / "
            f"{r.pct(0.9) * 1e3:.1f} | {r.tokens_per_s:,.0f} | {speed} | "
            f"{r.peak_bytes / 2**20:,.1f} | {mem} | {tflops:.4g} | {tflops * 1e12 / peak[0]:.1%} |"
        )
    lines += ["", *targets(s, results), ""]
    return "\n".join(lines)


def targets(s: Setup, results: list[Result]) -> list[str]:
    """The issue's targets, read off this run (they are stated for the GPU shapes)."""
    get = {(r.workload, r.variant): r for r in results if not r.error}
    longest = f"1 × {max(s.seq_lens)}"
    n, length = s.packed
    out = [f"Targets ({'GPU shapes' if s.mode == 'gpu' else 'stated for GPU; CPU direction'}):"]
    naive, bare = get.get((longest, "naive")), get.get((longest, "bare"))
    for variant in ("bare", "lightning"):
        r = get.get((longest, variant))
        if naive and r:
            mem = r.peak_bytes / naive.peak_bytes if naive.peak_bytes > 0 else float("nan")
            out.append(
                f"- {variant} at {max(s.seq_lens)} tokens: {r.tokens_per_s / naive.tokens_per_s:.2f}× "
                f"naive tokens/s (target ≥ 1.7), {mem:.2f}× naive peak memory (target ≤ 0.65)"
            )
    row = get.get((f"1 × {n * length}", "bare"))
    packed = get.get((f"{n} × {length} packed", "bare"))
    separate = get.get((f"{n} × {length} separate", "bare"))
    if row and packed:
        out.append(
            f"- bare, {n} × {length} packed: {packed.tokens_per_s / row.tokens_per_s:.2f}× the "
            f"tokens/s of one {n * length}-token row (target ≥ 1.0)"
            + (
                f"; as separate micro-batches {separate.tokens_per_s / row.tokens_per_s:.2f}×"
                if separate
                else ""
            )
        )
    if bare and (lit := get.get((longest, "lightning"))):
        out.append(
            f"- Lightning overhead at {max(s.seq_lens)} tokens: step p50 "
            f"{(lit.p50 / bare.p50 - 1):+.1%} vs the bare step"
        )
    return out


PROG = "python -m kdlite.cli.bench"
STEP_ONLY = ("mode", "seq_lens", "packed", "variants", "append")
LSP_ONLY = ("pair", "lsp", "seq_len", "batch", "seed", "vocab", "device", "dtype", "loss",
            "count_flops")  # fmt: skip


@dataclass
class Keys:
    kind: str = arg("step", "step: training step vs the naive baseline; lsp: one step per LSP; "
                    "divergences: each loss.divergence's step vs the forward KL",
                    choices=("step", "lsp", "divergences"))  # fmt: skip
    steps: int | None = arg(None, "timed steps per measurement (null: per mode; lsp: 3)")
    warmup: int | None = arg(None, "untimed steps first (null: per mode; lsp: 1)")
    lam: float = arg(0.5, "the loss's KD weight")
    out: str | None = arg(None, "step: Markdown file appended to (null: BENCHMARKS.md); "
                          "lsp: output folder (null: profile)")  # fmt: skip
    mode: str = arg("cpu", "step: CPU shapes or the GPU ones (4B -> 1.7B)", choices=("cpu", "gpu"))
    seq_lens: list[int] | None = arg(None, "step: row lengths, e.g. 256,512 (null: per mode)",
                                     commas=True)  # fmt: skip
    packed: str | None = arg(None, "step: NxL short examples packed, e.g. 4x256 (null: per mode)")
    variants: list[str] = arg(list(VARIANTS), "step: variants to time", commas=True)
    append: bool = arg(True, "step: append the section to `out` (false: print only)")
    pair: str = arg("tiny", "lsp: tiny | <teacher>_<student> of kdlite.models.QWEN3_SHAPES")
    lsp: list[float] = arg([0.25, 0.5, 1.0], "lsp: LSP values", commas=True)
    seq_len: int = arg(512, "lsp: uncropped tokens per row")
    batch: int = arg(1, "lsp: rows per step")
    seed: int = arg(0, "lsp: token ids' seed")
    vocab: int | None = arg(None, "lsp: vocabulary (null: 512 for tiny, 151,936 otherwise)")
    device: str = arg("auto", "lsp: device", choices=("auto", "cpu", "cuda"))
    dtype: str = arg("auto", "lsp: weights' dtype (auto: float32 on CPU, bfloat16 on CUDA)")
    loss: str = arg("chunked", "lsp: the chunked loss or the full-logits reference",
                    choices=("chunked", "full"))  # fmt: skip
    count_flops: bool = arg(False, "lsp: also count FLOPs with torch's FlopCounterMode")


def main(argv: list[str] | None = None) -> list[Result] | Path:
    """The step benchmark's results, or the compute profile's Markdown file (kind=lsp)."""
    words = argv_or_sys(argv)
    args = parse_keys(Keys, words, prog=PROG, doc=__doc__)
    other = STEP_ONLY if args.kind == "lsp" else LSP_ONLY
    given = [w for w in words if w.partition("=")[0] in other]
    if given:
        raise UsageError(PROG, f"{', '.join(given)}: not a key of kind={args.kind} (see --help)")
    if args.kind == "lsp":
        return profile(args)
    return bench_step(args, words)


def bench_step(args: Keys, words: Sequence[str] = ()) -> list[Result]:
    s = setup_for(args.mode)
    changes: dict[str, Any] = {}
    if args.seq_lens:
        changes["seq_lens"] = tuple(args.seq_lens)
    if args.packed:
        n, _, length = args.packed.partition("x")
        if not (n.isdigit() and length.isdigit()):
            raise UsageError(PROG, f"packed={args.packed}: expected NxL, e.g. 4x256")
        changes["packed"] = (int(n), int(length))
    if args.steps:
        changes["steps"] = args.steps
    if args.warmup is not None:
        changes["warmup"] = args.warmup
    if changes:
        from dataclasses import replace

        s = replace(s, **changes)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise UsageError(PROG, f"variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    if s.mode == "gpu" and not torch.cuda.is_available():
        sys.exit("mode=gpu needs a CUDA device")
    device = torch.device("cuda" if s.mode == "gpu" else "cpu")
    if args.kind == "divergences":
        out = Path(args.out or "BENCHMARKS.md") if args.append else None
        return divergence_main(s, args.lam, device, out, words)
    peak = matmul_peak(device)
    results = run(s, args.variants, lam=args.lam, device=device)
    text = markdown(s, results, peak, machine_info(device))
    print(text)
    if args.append:
        out = Path(args.out or "BENCHMARKS.md")
        head = (
            ""
            if out.exists()
            else "# kdlite benchmarks\n\n`python -m kdlite.cli.bench` appends a section per run.\n\n"
        )
        with out.open("a") as fh:
            fh.write(head + text + "\n")
    return results


def profile(args: Keys) -> Path:
    """kind=lsp: the compute profile (kdlite.analysis.compute) -> `<out>/profile.md` and `.png`."""
    from kdlite.analysis.compute import build_pair, plot, profile_lsps
    from kdlite.analysis.compute import markdown as profile_markdown

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise UsageError(PROG, f"dtype={dtype}: not a torch dtype (e.g. float32, bfloat16)")
    vocab = args.vocab if args.vocab is not None else (512 if args.pair == "tiny" else None)
    try:
        teacher, student = build_pair(args.pair, vocab, getattr(torch, dtype), torch.device(device))
    except (ValueError, KeyError) as err:
        raise UsageError(PROG, f"pair={args.pair}: {err}") from None
    rows = profile_lsps(
        teacher,
        student,
        args.lsp,
        args.seq_len,
        batch=args.batch,
        steps=3 if args.steps is None else args.steps,
        warmup=1 if args.warmup is None else args.warmup,
        lam=args.lam,
        prefer_chunked=args.loss == "chunked",
        count_flops=args.count_flops,
        seed=args.seed,
    )
    out = Path(args.out or "profile")
    out.mkdir(parents=True, exist_ok=True)
    table = profile_markdown(rows, args.pair)
    (out / "profile.md").write_text(f"# kdlite compute profile\n\n{table}")
    plot(rows, args.pair, out / "profile.png")
    print(table)
    print(f"wrote {out / 'profile.md'} and {out / 'profile.png'}")
    return out / "profile.md"


# ---- loss.divergence: each divergence's step against the forward KL (docs/divergences.md) ------
DIVERGENCE_RUNS = (("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("tv", 0.5))


def run_divergences(s: Setup, lam: float, device: torch.device) -> list[tuple[Result, list[float]]]:
    """The `bare` step (online teacher, chunked loss) once per divergence: same models, batches and
    process, the divergences interleaved step by step so that a machine whose load drifts slows
    them alike. Each Result (variant = the divergence) comes with its steps' process CPU seconds
    (all threads): on shared cores the wall time counts waiting, the CPU time only the work."""
    teacher, student = build_models(s, device)
    out = []
    for w in workloads(s):
        steps = {
            name: bare_step(
                teacher, student, _optimizer(student, device), s, lam, device,
                divergence=name, jsd_beta=beta,
            )
            for name, beta in DIVERGENCE_RUNS
        }  # fmt: skip
        for _ in range(s.warmup):
            for step in steps.values():
                step(w.micro_batches)
        timed: dict[str, tuple[Result, list[float]]] = {
            name: (Result(w.name, name, w.tokens), []) for name in steps
        }
        for _ in range(s.steps):
            for name, step in steps.items():
                _sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                step(w.micro_batches)
                _sync(device)
                timed[name][0].times_s.append(time.perf_counter() - t0)
                timed[name][1].append(time.process_time() - c0)
        for r, cpu in timed.values():
            print(_line(r), f" cpu p50 {statistics.median(cpu) * 1e3:.1f} ms", file=sys.stderr)
            out.append((r, cpu))
        del steps
        student.zero_grad(set_to_none=True)
        gc.collect()
    return out


def divergence_markdown(
    s: Setup, lam: float, results: list[tuple[Result, list[float]]], machine: str, command: str
) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {now} — loss.divergence: each divergence's training step vs the forward KL",
        "",
        f"Command: `{command}`. Machine: {machine}.",
        f"The `bare` step (online teacher, `distill_loss_chunked`, AdamW) of {s.teacher_shape} → "
        f"{s.student_shape}, vocabulary {s.vocab_size:,}, lam {lam}, jsd β = 0.5; one process, the "
        f"same models and micro-batches, the divergences interleaved step by step; {s.warmup} "
        f"warm-up + {s.steps} timed steps each. CPU = the process's CPU seconds per step (all "
        "threads), which waiting on shared cores does not inflate.",
        "",
        "| workload | divergence | wall p10 / p50 / p90 (ms) | × forward_kl wall | CPU p50 (ms) "
        "| × forward_kl CPU |",
        "|---|---|---|---|---|---|",
    ]
    base = {r.workload: (r, statistics.median(c)) for r, c in results if r.variant == "forward_kl"}
    for r, cpu in results:
        b_wall, b_cpu = base[r.workload][0].p50, base[r.workload][1]
        c50 = statistics.median(cpu)
        lines.append(
            f"| {r.workload} | {r.variant} | {r.pct(0.1) * 1e3:.1f} / {r.p50 * 1e3:.1f} / "
            f"{r.pct(0.9) * 1e3:.1f} | {r.p50 / b_wall:.2f} | {c50 * 1e3:.1f} | {c50 / b_cpu:.2f} |"
        )
    return "\n".join([*lines, ""])


def divergence_main(
    s: Setup, lam: float, device: torch.device, out: Path | None, argv: Sequence[str]
) -> list[Result]:
    """kind=divergences: time, print the table, append it to `out` (None: print only)."""
    results = run_divergences(s, lam, device)
    command = f"{PROG} " + " ".join(argv)
    text = divergence_markdown(s, lam, results, machine_info(device), command)
    print(text)
    if out is not None:
        with out.open("a") as fh:
            fh.write(text + "\n")
    return [r for r, _ in results]


if __name__ == "__main__":
    main()
