"""The soft cross-entropy reported beside the KL (what the study logged as its soft loss).

Checked against a float64 per-position hand computation: xent = −τ²·Σ p_T^τ·log p_S^τ and
xent = kl + τ²·H(p_T^τ), on random logits with masked positions and a fully masked batch row, at
temperature 2; in the reference, the chunked path, and the cached path (full-vocabulary cache:
exact; top-k cache: the (k + 1)-bucket coarsening's cross-entropy, which is ≤ the full one).
"""

from __future__ import annotations

import math

import pytest
import torch

from kdlite.losses import (
    IGNORE_INDEX,
    distill_loss_chunked,
    distill_loss_chunked_cached,
    distill_loss_reference,
)
from kdlite.teacher_cache import topk_logprobs

B, T, H, HT, V = 3, 6, 10, 14, 23
TAU = 2.0


def _case(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, 1] = labels[1, 4] = IGNORE_INDEX
    labels[2] = IGNORE_INDEX  # a fully masked row
    weights = (0.2 + torch.rand(B, T, generator=g)) * (labels != IGNORE_INDEX)
    return {
        "hidden": 1.3 * torch.randn(B, T, H, generator=g),
        "head": 0.5 * torch.randn(V, H, generator=g),
        "t_hidden": 1.1 * torch.randn(B, T, HT, generator=g),
        "t_head": 0.7 * torch.randn(V, HT, generator=g),
        "labels": labels,
        "weights": weights,
    }


def _hand(s_BTV: torch.Tensor, t_BTV: torch.Tensor, w_BT: torch.Tensor, tau: float, k=None):
    """Σ w·kl, Σ w·H, Σ w·xent in float64 Python loops; with k, over the teacher's top-k ids plus
    one rest bucket (the teacher cache's coarsening)."""
    kl_sum = ent_sum = xent_sum = 0.0
    for b in range(s_BTV.shape[0]):
        for t in range(s_BTV.shape[1]):
            w = float(w_BT[b, t])
            if w == 0:
                continue
            s = [float(x) / tau for x in s_BTV[b, t]]
            te = [float(x) / tau for x in t_BTV[b, t]]
            ls = math.log(sum(math.exp(x) for x in s))
            lt = math.log(sum(math.exp(x) for x in te))
            q = [math.exp(x - ls) for x in s]
            p = [math.exp(x - lt) for x in te]
            if k is not None:
                top = sorted(range(len(p)), key=lambda v: -p[v])[:k]
                rest = [v for v in range(len(p)) if v not in top]
                p = [p[v] for v in top] + [sum(p[v] for v in rest)]
                q = [q[v] for v in top] + [sum(q[v] for v in rest)]
            kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)
            ent = -sum(pi * math.log(pi) for pi in p if pi > 0)
            xent = -sum(pi * math.log(qi) for pi, qi in zip(p, q, strict=True))
            kl_sum += w * tau**2 * kl
            ent_sum += w * tau**2 * ent
            xent_sum += w * tau**2 * xent
    return kl_sum, ent_sum, xent_sum


def _logits(c: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return c["hidden"] @ c["head"].T, c["t_hidden"] @ c["t_head"].T


@pytest.mark.parametrize("tau", [1.0, TAU])
def test_reference_soft_ce_is_kl_plus_teacher_entropy(tau):
    c = _case(1)
    s, t = _logits(c)
    kl, ent, xent = _hand(s, t, c["weights"], tau)
    assert xent == pytest.approx(kl + ent, rel=1e-12)  # the identity, in float64
    parts = distill_loss_reference(s, t, c["labels"], c["weights"], lam=0.5, temperature=tau)
    assert parts.soft.item() == pytest.approx(kl, rel=1e-5)
    assert parts.soft_ce.item() == pytest.approx(xent, rel=1e-5)
    assert parts.teacher_entropy.item() == pytest.approx(ent, rel=1e-4)
    assert min(kl, ent) > 0.1 * xent  # both terms matter: neither hides in rounding


@pytest.mark.parametrize("chunk_size", [1, 5, 1024])
def test_chunked_soft_ce_matches_hand_reference(chunk_size):
    c = _case(2)
    s, t = _logits(c)
    _, _, xent = _hand(s, t, c["weights"], TAU)
    hidden = c["hidden"].clone().requires_grad_()
    parts = distill_loss_chunked(
        hidden, c["head"], c["t_hidden"], c["t_head"], c["labels"], c["weights"],
        lam=0.4, temperature=TAU, chunk_size=chunk_size,
    )  # fmt: skip
    assert parts.soft_ce.item() == pytest.approx(xent, rel=1e-5)
    assert not parts.soft_ce.requires_grad
    parts.loss.backward()  # the extra output does not disturb backward
    assert hidden.grad is not None and bool(hidden.grad.abs().sum() > 0)


def test_masked_positions_add_nothing_and_lam0_reports_zero():
    c = _case(3)
    only_row2 = torch.zeros(B, T)
    only_row2[2] = 1.0
    only_row2 = only_row2 * c["weights"]  # row 2 is fully masked: all zero
    s, t = _logits(c)
    for parts in (
        distill_loss_reference(s, t, c["labels"], only_row2, lam=0.5, temperature=TAU),
        distill_loss_chunked(
            c["hidden"],
            c["head"],
            c["t_hidden"],
            c["t_head"],
            c["labels"],
            only_row2,
            lam=0.5,
            temperature=TAU,
        ),  # fmt: skip
    ):
        assert parts.soft_ce.item() == 0.0 and parts.soft.item() == 0.0
    # changing the teacher at masked positions changes nothing
    t2 = t.clone()
    t2[2] = 5 * torch.randn(T, V)
    t2[0, 1] = -t2[0, 1]
    a = distill_loss_reference(s, t, c["labels"], c["weights"], lam=0.5, temperature=TAU)
    b = distill_loss_reference(s, t2, c["labels"], c["weights"], lam=0.5, temperature=TAU)
    assert a.soft_ce.item() == b.soft_ce.item()
    no_teacher = distill_loss_chunked(
        c["hidden"], c["head"], None, None, c["labels"], c["weights"], lam=0.0
    )
    assert no_teacher.soft_ce.item() == 0.0


def _cache(c: dict, k: int, tau: float):
    z = (c["t_hidden"] @ c["t_head"].T).reshape(-1, V)
    ids, logp, rest = topk_logprobs(z, k, tau)
    return ids.reshape(B, T, -1), logp.reshape(B, T, -1), rest.reshape(B, T)


def test_cached_soft_ce_full_vocabulary_is_exact_and_top_k_is_the_bucket_cross_entropy():
    c = _case(4)
    s, t = _logits(c)
    _, ent_full, xent_full = _hand(s, t, c["weights"], TAU)
    full = distill_loss_chunked_cached(
        c["hidden"], c["head"], *_cache(c, V, TAU), c["labels"], c["weights"],
        lam=0.5, temperature=TAU, chunk_size=4,
    )  # fmt: skip
    assert full.soft_ce.item() == pytest.approx(xent_full, rel=1e-5)

    k = 4
    kl_k, ent_k, xent_k = _hand(s, t, c["weights"], TAU, k=k)
    top = distill_loss_chunked_cached(
        c["hidden"], c["head"], *_cache(c, k, TAU), c["labels"], c["weights"],
        lam=0.5, temperature=TAU, chunk_size=4,
    )  # fmt: skip
    assert top.soft.item() == pytest.approx(kl_k, rel=1e-5)
    assert top.soft_ce.item() == pytest.approx(xent_k, rel=1e-5)
    assert top.teacher_entropy.item() == pytest.approx(ent_k, rel=1e-4)
    # the coarsening loses entropy and KL: a lower bound of the full soft cross-entropy
    assert ent_k < ent_full and xent_k < xent_full
