"""KD + CE loss of a student against a frozen teacher, as weighted sums over supervised positions.

    loss = Σ_t w_t · (lam · kl_t + (1 − lam) · ce_t),   soft = Σ_t w_t · kl_t,   hard = Σ_t w_t · ce_t
    kl_t = τ² · D(p_T^τ, p_S^τ)  (fp32 log-softmax),   ce_t = −log p_S(label_t) at τ = 1
    soft_ce = Σ_t w_t · xent_t,   xent_t = −τ² · Σ_v p_T^τ(v) · log p_S^τ(v)

D is the `divergence` (docs/divergences.md), p = p_T^τ the teacher's and q = p_S^τ the student's
distribution at temperature τ:
    forward_kl (the default, the study's):  KL(p ‖ q) = Σ p·(log p − log q)
    reverse_kl:                             KL(q ‖ p) = Σ q·(log q − log p)
    jsd (TRL GKD's generalized JSD, β = `jsd_beta`): β·KL(p ‖ m) + (1 − β)·KL(q ‖ m),
        m = β·p + (1 − β)·q for 0 < β < 1; β = 0 is the forward KL, β = 1 the reverse KL
        (TRL's GKDConfig: "beta 0.0: KL divergence, 1.0: inverse KL"). In between the value is
        β·KL(p ‖ q) + O(β²) near 0 and (1 − β)·KL(q ‖ p) + O((1 − β)²) near 1: the end points are
        the KLs by definition, not by continuity.
    tv:                                     ½ Σ |p − q|
Every D is scaled by τ², as the forward KL always was: d(τ²·D)/dz = τ·dD/du with u = z/τ, so the
gradient's size does not shrink as 1/τ² when τ grows (Hinton et al.'s convention).

`soft` is the optimised divergence. `soft_ce`, the cross-entropy against the teacher's
distribution, is the same quantity whatever the divergence: the study's logged soft loss
(docs/mini-replication.md), reported because it compares runs on one yardstick. Only for the
forward KL is it `soft` + τ²·H(p_T^τ) (same gradient as the KL, but it does not go to 0 as the
student matches the teacher, so relative gaps stay of the size the paper's Tables 7-11 show); for
the other divergences it is not what is optimised and `soft_ce − soft` means nothing.

`token_weights` turns a loss normalisation (`sequence` or `token`, docs/design.md §5) into per-token weights
`w_t` built from the *global* counts of the optimizer step, so that summing the loss of the
micro-batches (and ranks) of a step gives exactly the loss of the whole step.

Two implementations of the same function:
- `distill_loss_reference` takes full logits `[B, T, V]`: the readable specification.
- `distill_loss_chunked` takes last hidden states and the LM heads and is what training runs. The
  trade-off is memory against a fused backward. Full fp32 logits for 8,192 positions × 151,669 ids
  take 5.0 GB per copy, and autograd keeps several copies (logits, log-softmax, softmax, the
  teacher's) alive until backward: 20+ GB. The chunked path projects only positions with w > 0,
  1,024 at a time (0.62 GB per fp32 [1024, V] buffer, about four alive at once), and computes the
  gradients w.r.t. the student's hidden states and head *during the forward*, so nothing of size
  [N, V] survives into backward. The price: an fp32 [V, H] accumulator for the head gradient while
  the loss runs (2.5 GB for Qwen3-8B's 151,936 × 4,096 head), the backward is a rescale, and the
  loss cannot be differentiated twice. Matmul FLOPs are those of autograd (three per chunk).

Conventions: labels are pre-shifted (label at position t is the target of position t), -100 is
ignored. With `lam = 0` the teacher is never touched (may be None) and `soft` is reported as 0;
with `lam = 1` the CE is skipped, labels are irrelevant and `hard` is reported as 0 (not computed).
`loss` carries the graph; `soft` and `hard` are detached, for logging. `vocab_size` restricts both
models' logits to the shared tokenizer ids (Qwen3 configs: 151,936 head rows, tokenizer: 151,669),
so padded head rows never receive probability mass.

Shape suffixes: B batch rows, T positions per row, V vocabulary (after the `vocab_size` cut),
H hidden size (the teacher's may differ from the student's), N supervised positions (w > 0) of
the flattened batch, C positions in one chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "DIVERGENCES",
    "IGNORE_INDEX",
    "LOSS_NORMS",
    "LossParts",
    "distill_loss_chunked",
    "distill_loss_chunked_cached",
    "distill_loss_reference",
    "needs_full_teacher",
    "resolve_divergence",
    "token_weights",
]

IGNORE_INDEX = -100
LOSS_NORMS = ("sequence", "token")
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tv")


@dataclass
class LossParts:
    loss: Tensor  # scalar fp32, differentiable
    soft: Tensor  # scalar fp32, detached: Σ w·kl, kl the τ²-scaled divergence (0 when lam = 0)
    hard: Tensor  # scalar fp32, detached: Σ w·ce (0 when lam = 1)
    soft_ce: Tensor  # scalar fp32, detached: Σ w·xent, the teacher cross-entropy (0 when lam = 0)
    divergence: str = "forward_kl"  # what `soft` measures (`jsd` at β = 0 / 1 is stored resolved)

    @property
    def teacher_entropy(self) -> Tensor:
        """Σ w·τ²·H(p_T^τ): what separates the logged soft cross-entropy from the forward KL.

        Only the forward KL is `soft_ce` minus the teacher's entropy; for another divergence the
        difference means nothing, so it is refused rather than returned.
        """
        if self.divergence != "forward_kl":
            raise ValueError(
                f"teacher_entropy = soft_ce − soft holds for the forward KL only, not {self.divergence}"
            )
        return self.soft_ce - self.soft


def resolve_divergence(divergence: str, jsd_beta: float = 0.5) -> tuple[str, float]:
    """(kind, β) actually computed: `jsd` at β = 0 is `forward_kl`, at β = 1 `reverse_kl` (TRL's
    end points); refuses an unknown name or a β outside [0, 1] (NaN included)."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    beta = float(jsd_beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"jsd_beta must be in [0, 1], got {jsd_beta}")
    if divergence == "jsd" and beta == 0.0:
        return "forward_kl", beta
    if divergence == "jsd" and beta == 1.0:
        return "reverse_kl", beta
    return divergence, beta


def needs_full_teacher(divergence: str, jsd_beta: float = 0.5) -> bool:
    """True for the divergences a top-k + rest teacher cache cannot approximate (reverse KL, and
    `jsd` at β = 1, which is it): their coarsening misses r_S·KL(q_rest ‖ p_rest), weighted by the
    *student's* mass outside the top k and blind to the teacher's shape there, so the error does
    not shrink with the teacher's rest mass (docs/divergences.md). Exact only with k = |V|."""
    return resolve_divergence(divergence, jsd_beta)[0] == "reverse_kl"


def token_weights(
    labels_BT: Tensor,
    segment_ids_BT: Tensor,
    loss_norm: str,
    step_examples: int,
    step_tokens: int,
) -> Tensor:
    """Per-token loss weights w_BT (fp32) of one micro-batch, from the step's global counts.

    `sequence`: w = 1 / (supervised tokens of the token's example · step_examples), where an example
    is a (batch row, segment id) pair, so packed rows and padded batches both work.
    `token`: w = 1 / step_tokens. Ignored labels get 0; an example with no supervised token has
    all-zero weights and adds nothing (it still counts in `step_examples` if the caller counts it).
    """
    if loss_norm not in LOSS_NORMS:
        raise ValueError(f"loss_norm must be one of {LOSS_NORMS}, got {loss_norm!r}")
    if labels_BT.shape != segment_ids_BT.shape:
        raise ValueError(
            f"labels {tuple(labels_BT.shape)} != segment_ids {tuple(segment_ids_BT.shape)}"
        )
    supervised_BT = labels_BT != IGNORE_INDEX
    if not bool(supervised_BT.any()):
        return torch.zeros(labels_BT.shape, dtype=torch.float32, device=labels_BT.device)
    if bool((supervised_BT & (segment_ids_BT < 0)).any()):
        raise ValueError("supervised label on a padding position (segment id < 0)")

    if loss_norm == "token":
        if step_tokens <= 0:
            raise ValueError(
                f"step_tokens must be > 0 when tokens are supervised, got {step_tokens}"
            )
        return supervised_BT.float() / float(step_tokens)

    if step_examples <= 0:
        raise ValueError(
            f"step_examples must be > 0 when tokens are supervised, got {step_examples}"
        )
    rows_BT = torch.arange(labels_BT.shape[0], device=labels_BT.device)[:, None].expand_as(
        labels_BT
    )
    pairs_2X = torch.stack([rows_BT.reshape(-1), segment_ids_BT.reshape(-1).long()])
    _, example_X = torch.unique(pairs_2X, dim=1, return_inverse=True)
    n_supervised_E = torch.bincount(example_X, weights=supervised_BT.reshape(-1).double())
    n_supervised_BT = n_supervised_E[example_X].reshape(labels_BT.shape).clamp(min=1.0)
    # float64 so 1/(n·E) rounds once, to the fp32 nearest the exact weight
    return (supervised_BT.double() / (n_supervised_BT * step_examples)).float()


def _check_common(lam: float, temperature: float, labels_BT: Tensor, weights_BT: Tensor) -> None:
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if labels_BT.shape != weights_BT.shape:
        raise ValueError(f"labels {tuple(labels_BT.shape)} != weights {tuple(weights_BT.shape)}")
    if bool((weights_BT < 0).any()):
        raise ValueError("weights must be >= 0")


def _check_labels(labels_N: Tensor, vocab_size: int) -> None:
    if labels_N.numel() and bool(((labels_N < 0) | (labels_N >= vocab_size)).any()):
        raise ValueError(
            f"a position with weight > 0 has a label outside [0, {vocab_size}) "
            "(ignored labels must have weight 0)"
        )


def _resolve_vocab(vocab_size: int | None, student_rows: int, teacher_rows: int | None) -> int:
    if vocab_size is None:
        if teacher_rows is not None and teacher_rows != student_rows:
            raise ValueError(
                f"student has {student_rows} vocabulary rows, teacher {teacher_rows}: "
                "pass vocab_size (the shared tokenizer length)"
            )
        return student_rows
    if vocab_size <= 0 or vocab_size > student_rows or (teacher_rows or vocab_size) < vocab_size:
        raise ValueError(
            f"vocab_size={vocab_size} must be in (0, rows] (student {student_rows}, teacher {teacher_rows})"
        )
    return vocab_size


def distill_loss_reference(
    student_logits_BTV: Tensor,
    teacher_logits_BTV: Tensor | None,
    labels_BT: Tensor,
    weights_BT: Tensor,
    *,
    lam: float,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    divergence: str = "forward_kl",
    jsd_beta: float = 0.5,
) -> LossParts:
    """The specification: the loss from full logits of both models, every position at once."""
    _check_common(lam, temperature, labels_BT, weights_BT)
    kind, beta = resolve_divergence(divergence, jsd_beta)
    teacher_BTV = teacher_logits_BTV if lam > 0 else None  # lam = 0: never read
    if lam > 0 and teacher_BTV is None:
        raise ValueError("lam > 0 needs the teacher's logits")
    teacher_rows = None if teacher_BTV is None else teacher_BTV.shape[-1]
    V = _resolve_vocab(vocab_size, student_logits_BTV.shape[-1], teacher_rows)
    w_BT = weights_BT.float()
    zero = w_BT.new_zeros(())

    soft_BT = xent_BT = zero
    if teacher_BTV is not None:
        tau = temperature
        logq_BTV = F.log_softmax(student_logits_BTV[..., :V].float() / tau, dim=-1)
        logp_BTV = F.log_softmax(teacher_BTV[..., :V].float().detach() / tau, dim=-1)
        soft_BT = tau**2 * _divergence_reference(logp_BTV, logq_BTV, kind, beta)
        xent_BT = -(tau**2) * (logp_BTV.exp() * logq_BTV.detach()).sum(-1)

    hard_BT = zero
    if lam < 1:
        _check_labels(labels_BT[w_BT > 0], V)
        logq1_BTV = F.log_softmax(student_logits_BTV[..., :V].float(), dim=-1)
        safe_labels_BT = labels_BT.clamp(min=0)  # ignored positions have w = 0
        hard_BT = -logq1_BTV.gather(-1, safe_labels_BT[..., None]).squeeze(-1)

    soft = (w_BT * soft_BT).sum()
    hard = (w_BT * hard_BT).sum()
    loss = lam * soft + (1 - lam) * hard
    soft_ce = (w_BT * xent_BT).sum().detach()
    return LossParts(
        loss=loss, soft=soft.detach(), hard=hard.detach(), soft_ce=soft_ce, divergence=kind
    )


def _divergence_reference(logp_XV: Tensor, logq_XV: Tensor, kind: str, beta: float) -> Tensor:
    """D(p, q) per row from log-probs, written as the definitions; autograd differentiates it."""
    if kind == "forward_kl":
        return (logp_XV.exp() * (logp_XV - logq_XV)).sum(-1)
    p_XV, q_XV = logp_XV.exp(), logq_XV.exp()
    if kind == "reverse_kl":
        return (q_XV * (logq_XV - logp_XV)).sum(-1)
    if kind == "jsd":  # log m = log(β·p + (1 − β)·q), as a log-sum-exp (no underflow to log 0)
        logm_XV = torch.logaddexp(logp_XV + math.log(beta), logq_XV + math.log1p(-beta))
        kl_pm = (p_XV * (logp_XV - logm_XV)).sum(-1)
        kl_qm = (q_XV * (logq_XV - logm_XV)).sum(-1)
        return beta * kl_pm + (1 - beta) * kl_qm
    return 0.5 * (q_XV - p_XV).abs().sum(-1)  # tv


def _chunk_terms(
    hidden_CH: Tensor,
    head_VH: Tensor,
    teacher: tuple[Tensor, Tensor] | None,
    labels_C: Tensor,
    lam: float,
    tau: float,
    div: tuple[str, float] = ("forward_kl", 0.0),
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Unweighted kl_C, ce_C, dℓ_C/dz_CV of ℓ = lam·kl + (1 − lam)·ce, and xent_C, all fp32.

    `teacher` is (hidden_CH, head_VH) of the teacher, given exactly when lam > 0. `div` is the
    resolved (divergence, β) of `resolve_divergence`; kl_C is that divergence times τ².

    Logits are matmuls in the hidden dtype (bf16 in training), upcast to fp32. Buffers are
    reused in place: at most four fp32 [C, V] tensors are alive at once for the forward KL, five
    for the generalized JSD.
    """
    z_CV = (hidden_CH @ head_VH.T).float()
    kl_C = ce_C = xent_C = z_CV.new_zeros(z_CV.shape[0])
    grad_CV: Tensor | None = None
    if lam < 1:  # d ce / dz = p_S − onehot(label), at τ = 1
        grad_CV = F.log_softmax(z_CV, dim=-1)
        ce_C = -grad_CV.gather(1, labels_C[:, None]).squeeze(1)
        grad_CV.exp_()
        grad_CV[torch.arange(len(labels_C), device=labels_C.device), labels_C] -= 1.0
        grad_CV.mul_(1 - lam)
    if teacher is not None:  # d τ²·KL(p_T^τ ‖ p_S^τ) / dz = τ·(p_S^τ − p_T^τ)
        zt_CV = (teacher[0] @ teacher[1].T).float()
        logp_CV = F.log_softmax(zt_CV if tau == 1 else zt_CV.div_(tau), dim=-1)
        del zt_CV
        logq_CV = F.log_softmax(z_CV if tau == 1 else z_CV.div_(tau), dim=-1)
        del z_CV
        if div[0] == "forward_kl":
            diff_CV = logp_CV - logq_CV
            p_CV = logp_CV.exp_()
            kl_C = diff_CV.mul_(p_CV).sum(-1).mul_(tau**2)
            del diff_CV
            xent_C = _neg_dot(p_CV, logq_CV).mul_(tau**2)
            soft_CV = logq_CV.exp_().sub_(p_CV).mul_(lam * tau)
        else:  # d τ²·D / dz = τ·q·a (see `_divergence_terms`)
            d_C, xent_C, a_CV, q_CV = _divergence_terms(logp_CV, logq_CV, *div)
            del logp_CV, logq_CV
            kl_C, xent_C = d_C.mul_(tau**2), xent_C.mul_(tau**2)
            soft_CV = a_CV.mul_(q_CV).mul_(lam * tau)
            del q_CV
        grad_CV = soft_CV if grad_CV is None else grad_CV.add_(soft_CV)
    assert grad_CV is not None
    return kl_C, ce_C, grad_CV, xent_C


def _neg_dot(p_CV: Tensor, logq_CV: Tensor) -> Tensor:
    """−Σ_v p·log q per row, as a batched matmul: no [C, V] temporary."""
    return -(p_CV[:, None, :] @ logq_CV[:, :, None]).reshape(-1)


def _dot(a_CV: Tensor, b_CV: Tensor) -> Tensor:
    """Σ_v a·b per row, as a batched matmul: no [C, V] temporary."""
    return (a_CV[:, None, :] @ b_CV[:, :, None]).reshape(-1)


def _divergence_terms(
    logp_XV: Tensor, logq_XV: Tensor, kind: str, beta: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(D_X, xent_X, a_XV, q_XV) of the reverse KL, generalized JSD or TV between the rows of
    p = exp(logp) and q = exp(logq), with dD/du = q·a for q = softmax(u) (no τ factors here).

    Through the softmax, dD/du_j = q_j·(g_j − Σ_v q_v·g_v), g = ∂D/∂q; `a` is the bracket, so no
    term divides by q (which underflows to 0) and the same `a` serves the top-k cache's buckets:
        reverse_kl  g = log q − log p + 1          a = log q − log p − D
        jsd         g = (1 − β)·(log q − log m)    a = (1 − β)·(log q − log m − KL(q ‖ m))
        tv          g = ½·sign(q − p)              a = ½·(sign(q − p) − Σ q·sign(q − p))
    (the JSD's p-side terms cancel: ∂/∂q_v of β·KL(p ‖ m) + (1 − β)·KL(q ‖ m) leaves
    (1 − β)·(log q_v − log m_v)). sign(0) = 0: TV's subgradient at a tie, as autograd's |x|.
    xent = −Σ p·log q. p need not sum to 1 (cached buckets: fp16-stored log-probs).
    Consumes logp_XV and logq_XV: they are overwritten in place.
    """
    if kind == "reverse_kl":
        p_XV = logp_XV.exp()
        xent_X = _neg_dot(p_XV, logq_XV)
        del p_XV
        q_XV = logq_XV.exp()
        a_XV = logq_XV.sub_(logp_XV)
        d_X = _dot(q_XV, a_XV)
        return d_X, xent_X, a_XV.sub_(d_X[:, None]), q_XV
    if kind == "jsd":
        logm_XV = logp_XV.add(math.log(beta))
        torch.logaddexp(logm_XV, logq_XV.add(math.log1p(-beta)), out=logm_XV)
        p_XV = logp_XV.exp()
        xent_X = _neg_dot(p_XV, logq_XV)
        kl_pm_X = _dot(p_XV, logp_XV.sub_(logm_XV))
        del p_XV
        q_XV = logq_XV.exp()
        a_XV = logq_XV.sub_(logm_XV)
        del logm_XV
        kl_qm_X = _dot(q_XV, a_XV)
        d_X = beta * kl_pm_X + (1 - beta) * kl_qm_X
        return d_X, xent_X, a_XV.sub_(kl_qm_X[:, None]).mul_(1 - beta), q_XV
    if kind != "tv":
        raise ValueError(f"no chunk terms for divergence {kind!r}")
    p_XV = logp_XV.exp_()
    xent_X = _neg_dot(p_XV, logq_XV)
    q_XV = logq_XV.exp_()
    diff_XV = p_XV.neg_().add_(q_XV)  # q − p
    d_X = 0.5 * diff_XV.abs().sum(-1)
    sign_XV = diff_XV.sign_()
    return d_X, xent_X, sign_XV.sub_(_dot(q_XV, sign_XV)[:, None]).mul_(0.5), q_XV


def _gather_supervised(
    student_hidden_BTH: Tensor, labels_BT: Tensor, weights_BT: Tensor, lam: float, V: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The positions that carry loss (w > 0), flattened: (keep_N, w_N, labels_N, hidden_NH).

    Only these are projected to the vocabulary. With lam = 1 the labels are never read, so they
    are not checked and are replaced by zeros.
    """
    w_X = weights_BT.reshape(-1).float()
    keep_N = (w_X > 0).nonzero().squeeze(1)
    labels_N = labels_BT.reshape(-1)[keep_N]
    if lam < 1:
        _check_labels(labels_N, V)
    else:
        labels_N = torch.zeros_like(labels_N)  # never read: CE is skipped
    hidden_NH = student_hidden_BTH.reshape(-1, student_hidden_BTH.shape[-1]).index_select(0, keep_N)
    return keep_N, w_X[keep_N], labels_N, hidden_NH


def _chunk_loop(
    ctx: Any,
    hidden_NH: Tensor,
    head_VH: Tensor,
    w_N: Tensor,
    lam: float,
    vocab_size: int,
    chunk_size: int,
    need_hidden_grad: bool,
    need_head_grad: bool,
    terms: Callable[[slice, Tensor, Tensor], tuple[Tensor, Tensor, Tensor, Tensor]],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The forward of both autograd functions: per chunk of positions, `terms` gives the KL, the CE,
    d(loss)/d(logits) and the soft cross-entropy; the weighted sums and the gradients w.r.t. hidden
    and head accumulate here and are stored for backward (nothing of size [N, V] outlives its chunk)."""
    dtype = hidden_NH.dtype
    head_used_VH = head_VH[:vocab_size].to(dtype)
    grad_hidden_NH = torch.zeros_like(hidden_NH) if need_hidden_grad else None
    # fp32 across chunks: a bf16 running sum would lose the small late chunks' contributions
    grad_head_VH = (
        torch.zeros(head_VH.shape, dtype=torch.float32, device=head_VH.device)
        if need_head_grad
        else None
    )
    soft = w_N.new_zeros((), dtype=torch.float32)
    hard = w_N.new_zeros((), dtype=torch.float32)
    soft_ce = w_N.new_zeros((), dtype=torch.float32)
    with torch.autocast(hidden_NH.device.type, enabled=False):
        for start in range(0, hidden_NH.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            h_CH = hidden_NH[rows]
            kl_C, ce_C, grad_CV, xent_C = terms(rows, h_CH, head_used_VH)
            w_C = w_N[rows]
            soft = soft + (w_C * kl_C).sum()
            hard = hard + (w_C * ce_C).sum()
            soft_ce = soft_ce + (w_C * xent_C).sum()
            grad_CV = grad_CV.mul_(w_C[:, None]).to(dtype)
            if grad_hidden_NH is not None:
                grad_hidden_NH[rows] = grad_CV @ head_used_VH
            if grad_head_VH is not None:
                grad_head_VH[:vocab_size] += (grad_CV.T @ h_CH).float()
            del grad_CV
    loss = lam * soft + (1 - lam) * hard
    ctx.save_for_backward(
        grad_hidden_NH,
        None if grad_head_VH is None else grad_head_VH.to(head_VH.dtype),
    )
    ctx.mark_non_differentiable(soft, hard, soft_ce)
    return loss, soft, hard, soft_ce


def _scaled_saved_grads(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """Backward of both functions: the stored gradients times the incoming scalar gradient."""
    grad_hidden_NH, grad_head_VH = ctx.saved_tensors
    if grad_hidden_NH is not None:
        grad_hidden_NH = grad_hidden_NH * grad_loss.to(grad_hidden_NH.dtype)
    if grad_head_VH is not None:
        grad_head_VH = grad_head_VH * grad_loss.to(grad_head_VH.dtype)
    return grad_hidden_NH, grad_head_VH


class _ChunkedDistillLoss(torch.autograd.Function):
    """Loss over the N gathered positions; gradients are computed in forward, rescaled in backward."""

    @staticmethod
    def forward(
        ctx,
        hidden_NH: Tensor,
        head_VH: Tensor,
        teacher_hidden_NH: Tensor | None,
        teacher_head_VH: Tensor | None,
        labels_N: Tensor,
        w_N: Tensor,
        lam: float,
        tau: float,
        vocab_size: int,
        chunk_size: int,
        need_hidden_grad: bool,
        need_head_grad: bool,
        div: tuple[str, float],
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        teacher_head_used_VH = None
        if teacher_hidden_NH is not None and teacher_head_VH is not None:
            teacher_head_used_VH = teacher_head_VH[:vocab_size].to(teacher_hidden_NH.dtype)

        def terms(rows: slice, h_CH: Tensor, head_used_VH: Tensor):
            teacher = None
            if teacher_hidden_NH is not None and teacher_head_used_VH is not None:
                teacher = (teacher_hidden_NH[rows], teacher_head_used_VH)
            return _chunk_terms(h_CH, head_used_VH, teacher, labels_N[rows], lam, tau, div)

        return _chunk_loop(
            ctx, hidden_NH, head_VH, w_N, lam, vocab_size, chunk_size,
            need_hidden_grad, need_head_grad, terms,
        )  # fmt: skip

    @staticmethod
    @once_differentiable  # the stored gradients are constants: no double backward
    def backward(ctx, grad_loss: Tensor, _grad_soft: Tensor, _grad_hard: Tensor, _grad_ce: Tensor):
        return (*_scaled_saved_grads(ctx, grad_loss), *([None] * 12))


def distill_loss_chunked(
    student_hidden_BTH: Tensor,
    student_head_VH: Tensor,
    teacher_hidden_BTH: Tensor | None,
    teacher_head_VH: Tensor | None,
    labels_BT: Tensor,
    weights_BT: Tensor,
    *,
    lam: float,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    chunk_size: int = 1024,
    divergence: str = "forward_kl",
    jsd_beta: float = 0.5,
) -> LossParts:
    """The fast path: same value and gradients as `distill_loss_reference` on the projected logits.

    Gradients flow to `student_hidden_BTH` and `student_head_VH` (a tied embedding included);
    the teacher's tensors never get gradients. With no supervised position the loss is a zero that
    still depends on both student inputs, so backward runs and leaves zero gradients.
    `divergence` / `jsd_beta` choose D as in the module docstring, for every chunk.
    """
    _check_common(lam, temperature, labels_BT, weights_BT)
    div = resolve_divergence(divergence, jsd_beta)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    teacher: tuple[Tensor, Tensor] | None = None  # lam = 0: never read
    if lam > 0:
        if teacher_hidden_BTH is None or teacher_head_VH is None:
            raise ValueError("lam > 0 needs the teacher's hidden states and head")
        teacher = (teacher_hidden_BTH, teacher_head_VH)
    hiddens = {"student": student_hidden_BTH, "teacher": None if teacher is None else teacher[0]}
    for name, hidden in hiddens.items():
        if hidden is not None and hidden.shape[:-1] != labels_BT.shape:
            raise ValueError(
                f"{name} hidden {tuple(hidden.shape)} does not match labels {tuple(labels_BT.shape)}"
            )
    teacher_rows = None if teacher is None else teacher[1].shape[0]
    V = _resolve_vocab(vocab_size, student_head_VH.shape[0], teacher_rows)

    keep_N, w_N, labels_N, hidden_NH = _gather_supervised(
        student_hidden_BTH, labels_BT, weights_BT, lam, V
    )
    teacher_hidden_NH = teacher_head_VH = None
    if teacher is not None:
        with torch.no_grad():
            teacher_hidden_NH = teacher[0].reshape(-1, teacher[0].shape[-1])[keep_N]
        teacher_head_VH = teacher[1].detach()
    grad_on = torch.is_grad_enabled()
    loss, soft, hard, soft_ce = _ChunkedDistillLoss.apply(
        hidden_NH,
        student_head_VH,
        teacher_hidden_NH,
        teacher_head_VH,
        labels_N,
        w_N,
        float(lam),
        float(temperature),
        V,
        int(chunk_size),
        grad_on and hidden_NH.requires_grad,
        grad_on and student_head_VH.requires_grad,
        div,
    )
    return LossParts(loss=loss, soft=soft, hard=hard, soft_ce=soft_ce, divergence=div[0])


# ---- teacher logit cache: the KD term from stored top-k log-probs -------------------------------
#
# A cached position holds the teacher's k largest log-probs log p_T(v), v ∈ K, and the log of the
# remaining mass log r_T = log(1 − Σ_K p_T(v)) (kdlite/teacher_cache.py). The KD term is the exact
# forward KL between the (k + 1)-bucket coarsenings of both distributions (K's ids plus one "rest"
# bucket):
#     kl_t = τ² · [ Σ_K p_T(v)·(log p_T(v) − log q(v)) + r_T·(log r_T − log r_S) ],
#     r_S = Σ_{v∉K} q(v), computed as a log-sum-exp over the ids outside K (no 1 − Σ cancellation).
# By the log-sum inequality it is ≤ the full KL and equals it when K covers the vocabulary.
# The soft cross-entropy reported beside it is that coarsening's, too:
#     xent_t = −τ² · [ Σ_K p_T(v)·log q(v) + r_T·log r_S ] = kl_t + τ²·H_{k+1}(p_T),
# H_{k+1} the entropy of the teacher's (k + 1)-bucket distribution. It is ≤ the full soft CE:
# both the KL and the entropy lose the spread of the teacher's mass inside the rest bucket, the
# entropy by r_T·H(rest mass renormalised) (small when the top k hold nearly all the mass).
# Gradient w.r.t. the student logits z (q = softmax(z/τ), P = Σ_K p_T + r_T, 1 up to storage
# rounding):  dkl/dz_j = τ·(q_j·P − p_T(j)) for j ∈ K,  τ·q_j·(P − r_T/r_S) for j ∉ K.
# Temperature is exact only when the cache was built at the same τ (it stores log softmax(z_T/τ));
# the cache records its τ and the reader refuses a mismatch.
#
# The other divergences are computed the same way, on the (k + 1)-bucket coarsenings P (teacher)
# and Q (student, Q_rest = r_S): D(P, Q) ≤ D(p, q) for every f-divergence (data processing), with
# equality at k = |V|. Gradient: dD/dz_j = τ·q_j·a_b(j), a the bucket factor of
# `_divergence_terms` and b(j) the bucket of id j (itself for j ∈ K, "rest" otherwise). What the
# coarsening drops (docs/divergences.md):
#   forward_kl  r_T·KL(p_rest ‖ q_rest): weighted by the teacher's rest mass
#   jsd, β < 1  at most of order r_T·log(r_S / r_T): vanishes with the teacher's rest mass
#   tv          at most min(r_T, r_S)
#   reverse_kl  r_S·KL(q_rest ‖ p_rest): weighted by the student's rest mass and blind to the
#               teacher's shape inside the rest bucket; refused unless k = |V| (`needs_full_teacher`)


def _cached_chunk_terms(
    hidden_CH: Tensor,
    head_VH: Tensor,
    cached: tuple[Tensor, Tensor, Tensor] | None,
    labels_C: Tensor,
    lam: float,
    tau: float,
    div: tuple[str, float] = ("forward_kl", 0.0),
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Unweighted kl_C, ce_C, dℓ_C/dz_CV and xent_C for cached teacher terms (ids_CK, logp_CK,
    rest_C); kl_C is the resolved divergence `div` of the (k + 1)-bucket coarsening, times τ².

    At τ = 1 one log-softmax serves both the KD and the CE term (the online path computes two).
    At most three fp32 [C, V] buffers are alive at once.
    """
    z_CV = (hidden_CH @ head_VH.T).float()
    rows_C = torch.arange(len(labels_C), device=labels_C.device)
    logq1_CV: Tensor | None = None
    ce_C = kl_C = xent_C = z_CV.new_zeros(z_CV.shape[0])
    if lam < 1 or tau == 1:
        logq1_CV = F.log_softmax(z_CV, dim=-1)
    if lam < 1:
        assert logq1_CV is not None
        ce_C = -logq1_CV.gather(1, labels_C[:, None]).squeeze(1)
    if cached is None:  # lam = 0: CE only
        assert logq1_CV is not None
        grad_CV = logq1_CV.exp_()
        grad_CV[rows_C, labels_C] -= 1.0
        return kl_C, ce_C, grad_CV, xent_C

    ids_CK, logp_CK, rest_C = cached
    shared = tau == 1 and logq1_CV is not None
    logq_CV = logq1_CV if shared else F.log_softmax(z_CV.div_(tau), dim=-1)
    assert logq_CV is not None
    del z_CV
    # ℓ = lam·kl + (1 − lam)·ce: at τ = 1 (shared) the CE's q1 term is folded into the factor of q
    ce_share = (1 - lam) if shared else 0.0
    if div[0] == "forward_kl":
        kl_C, xent_C, grad_CV = _cached_forward_kl(logq_CV, cached, lam, tau, ce_share)
    else:
        kl_C, xent_C, grad_CV = _cached_divergence(logq_CV, cached, lam, tau, ce_share, div)
    if lam < 1:
        if shared:
            grad_CV[rows_C, labels_C] -= 1 - lam
        else:
            assert logq1_CV is not None
            ce_grad_CV = logq1_CV.exp_()
            ce_grad_CV[rows_C, labels_C] -= 1.0
            grad_CV.add_(ce_grad_CV, alpha=1 - lam)
    return kl_C, ce_C, grad_CV, xent_C


def _cached_forward_kl(
    logq_CV: Tensor, cached: tuple[Tensor, Tensor, Tensor], lam: float, tau: float, ce_share: float
) -> tuple[Tensor, Tensor, Tensor]:
    """τ²·KL of the buckets, its soft cross-entropy, and lam·dkl/dz + ce_share·q (in logq_CV)."""
    ids_CK, logp_CK, rest_C = cached
    logq_CK = logq_CV.gather(1, ids_CK)
    log_rest_s_C = logq_CV.scatter(1, ids_CK, float("-inf")).logsumexp(1)
    p_CK = logp_CK.exp()
    rest_t_C = rest_C.exp()
    has_rest_C = rest_t_C > 0  # k = V leaves no rest bucket (log r_T = −inf)
    kl_rest_C = torch.where(has_rest_C, rest_t_C * (rest_C - log_rest_s_C), 0.0)
    kl_C = ((p_CK * (logp_CK - logq_CK)).sum(1) + kl_rest_C) * tau**2
    xent_rest_C = torch.where(has_rest_C, rest_t_C * log_rest_s_C, 0.0)
    xent_C = -((p_CK * logq_CK).sum(1) + xent_rest_C) * tau**2
    ratio_C = torch.where(has_rest_C, (rest_C - log_rest_s_C).exp(), 0.0)
    mass_C = p_CK.sum(1) + rest_t_C
    a_C = lam * tau * mass_C + ce_share
    b_C = lam * tau * ratio_C
    q_CV = logq_CV.exp_()  # in place: at τ = 1 this is also q1
    grad_CV = q_CV
    q_CK = logq_CK.exp()
    grad_CV.mul_((a_C - b_C)[:, None])
    grad_CV.scatter_(1, ids_CK, q_CK * a_C[:, None] - lam * tau * p_CK)
    return kl_C, xent_C, grad_CV


def _cached_divergence(
    logq_CV: Tensor,
    cached: tuple[Tensor, Tensor, Tensor],
    lam: float,
    tau: float,
    ce_share: float,
    div: tuple[str, float],
) -> tuple[Tensor, Tensor, Tensor]:
    """As `_cached_forward_kl` for the other divergences, through `_divergence_terms` on the
    [C, k + 1] bucket log-probs. An empty bucket (the rest at k = |V|, log mass −inf) is floored
    to the smallest fp32 on both sides: its mass is 0 and every 0·log term stays 0, not NaN."""
    ids_CK, logp_CK, rest_C = cached
    logq_CK = logq_CV.gather(1, ids_CK)
    log_rest_s_C = logq_CV.scatter(1, ids_CK, float("-inf")).logsumexp(1)
    floor = torch.finfo(torch.float32).min
    logp_CB = torch.cat([logp_CK, rest_C[:, None]], 1).clamp_(min=floor)
    logq_CB = torch.cat([logq_CK, log_rest_s_C[:, None]], 1).clamp_(min=floor)
    d_C, xent_C, a_CB, _ = _divergence_terms(logp_CB, logq_CB, *div)
    factor_CB = a_CB.mul_(lam * tau).add_(ce_share)
    q_CK = logq_CK.exp()
    grad_CV = logq_CV.exp_().mul_(factor_CB[:, -1:])  # ids outside K: q_j·a_rest
    grad_CV.scatter_(1, ids_CK, q_CK * factor_CB[:, :-1])
    return d_C * tau**2, xent_C * tau**2, grad_CV


class _CachedDistillLoss(torch.autograd.Function):
    """As `_ChunkedDistillLoss`, with the teacher's chunk terms read from the cache."""

    @staticmethod
    def forward(
        ctx,
        hidden_NH: Tensor,
        head_VH: Tensor,
        ids_NK: Tensor | None,
        logp_NK: Tensor | None,
        rest_N: Tensor | None,
        labels_N: Tensor,
        w_N: Tensor,
        lam: float,
        tau: float,
        vocab_size: int,
        chunk_size: int,
        need_hidden_grad: bool,
        need_head_grad: bool,
        div: tuple[str, float],
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:

        def terms(rows: slice, h_CH: Tensor, head_used_VH: Tensor):
            cached = None
            if ids_NK is not None and logp_NK is not None and rest_N is not None:
                cached = (ids_NK[rows], logp_NK[rows], rest_N[rows])
            return _cached_chunk_terms(h_CH, head_used_VH, cached, labels_N[rows], lam, tau, div)

        return _chunk_loop(
            ctx, hidden_NH, head_VH, w_N, lam, vocab_size, chunk_size,
            need_hidden_grad, need_head_grad, terms,
        )  # fmt: skip

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor, _grad_soft: Tensor, _grad_hard: Tensor, _grad_ce: Tensor):
        return (*_scaled_saved_grads(ctx, grad_loss), *([None] * 12))


def distill_loss_chunked_cached(
    student_hidden_BTH: Tensor,
    student_head_VH: Tensor,
    topk_ids_BTK: Tensor | None,
    topk_logprobs_BTK: Tensor | None,
    rest_logmass_BT: Tensor | None,
    labels_BT: Tensor,
    weights_BT: Tensor,
    *,
    lam: float,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    chunk_size: int = 1024,
    divergence: str = "forward_kl",
    jsd_beta: float = 0.5,
) -> LossParts:
    """`distill_loss_chunked` with the teacher read from a top-k cache instead of its hidden states.

    `topk_logprobs_BTK` / `rest_logmass_BT` are the teacher's log softmax(z_T/τ) at the ids
    `topk_ids_BTK` and the log of the remaining mass, at the same τ as `temperature`. With k = V
    (rest = −inf) the value and gradients equal `distill_loss_chunked`'s, for every divergence;
    with k < V the KD term is the divergence of the (k + 1)-bucket coarsening (see the comment
    above), a lower bound of the full one, and the reverse KL (`jsd` at β = 1 included) is refused
    (`needs_full_teacher`). CE, weights, `lam` and `vocab_size` behave exactly as in
    `distill_loss_chunked`; `soft_ce` is the buckets' teacher cross-entropy.
    """
    _check_common(lam, temperature, labels_BT, weights_BT)
    div = resolve_divergence(divergence, jsd_beta)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if student_hidden_BTH.shape[:-1] != labels_BT.shape:
        raise ValueError(
            f"student hidden {tuple(student_hidden_BTH.shape)} does not match labels "
            f"{tuple(labels_BT.shape)}"
        )
    V = _resolve_vocab(vocab_size, student_head_VH.shape[0], None)
    keep_N, w_N, labels_N, hidden_NH = _gather_supervised(
        student_hidden_BTH, labels_BT, weights_BT, lam, V
    )
    ids_NK = logp_NK = rest_N = None
    if lam > 0:
        if topk_ids_BTK is None or topk_logprobs_BTK is None or rest_logmass_BT is None:
            raise ValueError("lam > 0 needs the cached top-k ids, log-probs and rest log-mass")
        if (
            topk_ids_BTK.shape != topk_logprobs_BTK.shape
            or topk_ids_BTK.shape[:-1] != labels_BT.shape
            or rest_logmass_BT.shape != labels_BT.shape
        ):
            raise ValueError(
                f"cached shapes ids {tuple(topk_ids_BTK.shape)}, logprobs "
                f"{tuple(topk_logprobs_BTK.shape)}, rest {tuple(rest_logmass_BT.shape)} do not "
                f"match labels {tuple(labels_BT.shape)} (+ a k axis)"
            )
        K = topk_ids_BTK.shape[-1]
        if K < V and needs_full_teacher(*div):
            raise ValueError(
                f"divergence={divergence} (jsd_beta={jsd_beta}) needs the teacher's whole "
                f"distribution: a top-k cache with k={K} < vocab_size={V} cannot approximate it "
                "(docs/divergences.md)"
            )
        ids_NK = topk_ids_BTK.reshape(-1, K)[keep_N].long()
        if ids_NK.numel() and bool(((ids_NK < 0) | (ids_NK >= V)).any()):
            raise ValueError(f"a cached teacher id is outside [0, {V})")
        logp_NK = topk_logprobs_BTK.reshape(-1, K)[keep_N].float()
        rest_N = rest_logmass_BT.reshape(-1)[keep_N].float()
    grad_on = torch.is_grad_enabled()
    loss, soft, hard, soft_ce = _CachedDistillLoss.apply(
        hidden_NH,
        student_head_VH,
        ids_NK,
        logp_NK,
        rest_N,
        labels_N,
        w_N,
        float(lam),
        float(temperature),
        V,
        int(chunk_size),
        grad_on and hidden_NH.requires_grad,
        grad_on and student_head_VH.requires_grad,
        div,
    )
    return LossParts(loss=loss, soft=soft, hard=hard, soft_ce=soft_ce, divergence=div[0])
