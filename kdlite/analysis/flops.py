"""Analytic FLOP count of a Qwen3 decoder, per sequence, for the compute profile (Figure 6).

Counts matrix multiplies only (2 FLOPs per multiply-add), which is what dominates and what
`torch.utils.flop_counter.FlopCounterMode` counts: per layer the q/k/v/o projections (GQA: k and v
have `num_key_value_heads` heads), attention scores QK^T and the weighted sum AV, and the SwiGLU MLP
(gate, up, down); then the LM head over the vocabulary. Norms, RoPE, softmax, SiLU and the
embedding lookup are ignored (under 1% at every Qwen3 shape for T <= 32k).

`causal=True` (the default, for reporting) counts half of the T x T attention work, the part a
causal kernel needs; `causal=False` counts the full square, which is what FlopCounterMode charges an
SDPA call whatever its mask, so tests compare against that. Training step = teacher forward
(1x, no grad) + student forward (1x) + student backward (2x: grads w.r.t. activations and weights).
`head_tokens` lets the LM-head term count only the positions projected to the vocabulary (the
chunked loss projects supervised positions only).
"""

from __future__ import annotations

from typing import Any


def _get(config: Any, key: str) -> Any:
    return config[key] if isinstance(config, dict) else getattr(config, key)


def forward_flops(
    config: Any, seq_len: int, *, causal: bool = True, head_tokens: int | None = None
) -> int:
    """FLOPs of one forward pass over one sequence of `seq_len` tokens.

    `config` is a Qwen3Config or a dict of its kwargs (e.g. `QWEN3_SHAPES[...]`)."""
    T = int(seq_len)
    H = _get(config, "hidden_size")
    L = _get(config, "num_hidden_layers")
    n_heads = _get(config, "num_attention_heads")
    n_kv = _get(config, "num_key_value_heads")
    head_dim = _get(config, "head_dim") or H // n_heads
    inter = _get(config, "intermediate_size")
    vocab = _get(config, "vocab_size")
    q_dim, kv_dim = n_heads * head_dim, n_kv * head_dim
    projections = 2 * T * H * (q_dim + 2 * kv_dim) + 2 * T * q_dim * H
    # QK^T and AV: 2 * T * T * head_dim each, per head; causal keeps T(T+1)/2 of the T^2 pairs.
    pairs = T * (T + 1) // 2 if causal else T * T
    attention = 2 * 2 * pairs * head_dim * n_heads
    mlp = 3 * 2 * T * H * inter
    head = 2 * (T if head_tokens is None else int(head_tokens)) * H * vocab
    return L * (projections + attention + mlp) + head


def step_flops(
    teacher_config: Any | None,
    student_config: Any,
    seq_len: int,
    *,
    batch: int = 1,
    causal: bool = True,
    head_tokens: int | None = None,
) -> dict[str, int]:
    """FLOPs of one training step on `batch` sequences: teacher fwd + student fwd + 2x student bwd."""
    teacher = (
        0
        if teacher_config is None
        else batch * forward_flops(teacher_config, seq_len, causal=causal, head_tokens=head_tokens)
    )
    student_fwd = batch * forward_flops(
        student_config, seq_len, causal=causal, head_tokens=head_tokens
    )
    return {
        "teacher_forward": teacher,
        "student_forward": student_fwd,
        "student_backward": 2 * student_fwd,
        "total": teacher + 3 * student_fwd,
    }
