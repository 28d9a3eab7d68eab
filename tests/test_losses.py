"""Loss tests: the reference against brute force, the chunked fast path against the reference.

Inputs are random and non-degenerate: distinct scales for student and teacher, random positive
weights (never all ones, which would hide normalisation bugs), padded head rows beyond vocab_size.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdlite.losses import (
    IGNORE_INDEX,
    distill_loss_chunked,
    distill_loss_reference,
    token_weights,
)

B, T, H, HT, V, V_ROWS = 3, 11, 16, 24, 37, 45  # student/teacher hidden sizes, vocab, head rows


def make_case(seed: int = 0, dtype: torch.dtype = torch.float32, mask_share: float = 0.3) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels_BT = torch.randint(0, V, (B, T), generator=g)
    ignored_BT = torch.rand(B, T, generator=g) < mask_share
    labels_BT[ignored_BT] = IGNORE_INDEX
    weights_BT = (0.1 + torch.rand(B, T, generator=g)) * (~ignored_BT)
    return {
        "hidden_BTH": (1.5 * torch.randn(B, T, H, generator=g)).to(dtype).requires_grad_(),
        "head_VH": (0.4 * torch.randn(V_ROWS, H, generator=g)).to(dtype).requires_grad_(),
        "teacher_hidden_BTH": (1.2 * torch.randn(B, T, HT, generator=g)).to(dtype),
        "teacher_head_VH": (0.5 * torch.randn(V_ROWS, HT, generator=g)).to(dtype),
        "labels_BT": labels_BT,
        "weights_BT": weights_BT,
    }


def run_reference(case: dict, **kw):
    """Reference loss on the logits the chunked path would project (same dtype), plus grads."""
    hidden = case["hidden_BTH"].detach().clone().requires_grad_()
    head = case["head_VH"].detach().clone().requires_grad_()
    teacher = case["teacher_hidden_BTH"] @ case["teacher_head_VH"].T
    parts = distill_loss_reference(
        hidden @ head.T, teacher, case["labels_BT"], case["weights_BT"], **kw
    )
    (0.7 * parts.loss).backward()
    return parts, hidden.grad, head.grad


def run_chunked(case: dict, **kw):
    hidden = case["hidden_BTH"].detach().clone().requires_grad_()
    head = case["head_VH"].detach().clone().requires_grad_()
    parts = distill_loss_chunked(
        hidden,
        head,
        case["teacher_hidden_BTH"],
        case["teacher_head_VH"],
        case["labels_BT"],
        case["weights_BT"],
        **kw,
    )
    (0.7 * parts.loss).backward()
    return parts, hidden.grad, head.grad


def brute_force(s_BTV, t_BTV, labels_BT, w_BT, lam, tau, vocab):
    """Per-position float64 Python loops, straight from the formulas."""
    soft = hard = 0.0
    for b in range(s_BTV.shape[0]):
        for t in range(s_BTV.shape[1]):
            w = float(w_BT[b, t])
            if w == 0:
                continue
            s = [float(x) for x in s_BTV[b, t, :vocab]]
            te = [float(x) for x in t_BTV[b, t, :vocab]]
            zs = sum(math.exp(x / tau) for x in s)
            zt = sum(math.exp(x / tau) for x in te)
            q = [math.exp(x / tau) / zs for x in s]
            p = [math.exp(x / tau) / zt for x in te]
            soft += w * tau**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
            label = int(labels_BT[b, t])
            hard += w * -(s[label] - math.log(sum(math.exp(x) for x in s)))
    return lam * soft + (1 - lam) * hard, soft, hard


# ---- reference --------------------------------------------------------------------------------


@pytest.mark.parametrize("lam,tau", [(0.5, 1.0), (0.3, 2.0), (0.0, 1.0), (1.0, 0.7)])
def test_reference_matches_brute_force(lam, tau):
    c = make_case(1)
    s_BTV = c["hidden_BTH"].detach() @ c["head_VH"].detach().T
    t_BTV = c["teacher_hidden_BTH"] @ c["teacher_head_VH"].T
    parts = distill_loss_reference(
        s_BTV, t_BTV, c["labels_BT"], c["weights_BT"], lam=lam, temperature=tau, vocab_size=V
    )
    loss, soft, hard = brute_force(s_BTV, t_BTV, c["labels_BT"], c["weights_BT"], lam, tau, V)
    assert parts.loss.item() == pytest.approx(loss, rel=1e-5)
    assert parts.soft.item() == pytest.approx(soft if lam > 0 else 0.0, rel=1e-5)
    assert parts.hard.item() == pytest.approx(hard if lam < 1 else 0.0, rel=1e-5)


def test_kl_nonnegative_per_position_and_zero_when_teacher_equals_student():
    c = make_case(2)
    s_BTV = c["hidden_BTH"].detach() @ c["head_VH"].detach().T
    t_BTV = c["teacher_hidden_BTH"] @ c["teacher_head_VH"].T
    for b in range(B):
        for t in range(T):
            one_BT = torch.zeros(B, T)
            one_BT[b, t] = 1.0
            kl = distill_loss_reference(s_BTV, t_BTV, c["labels_BT"], one_BT, lam=1.0).soft
            assert kl.item() > 0
    same = distill_loss_reference(s_BTV, s_BTV.clone(), c["labels_BT"], c["weights_BT"], lam=1.0)
    assert same.soft.item() == 0.0 and same.loss.item() == 0.0
    fast = distill_loss_chunked(
        c["hidden_BTH"], c["head_VH"], c["hidden_BTH"].detach(), c["head_VH"].detach(),
        c["labels_BT"], c["weights_BT"], lam=1.0, chunk_size=4,
    )  # fmt: skip
    assert fast.soft.item() == 0.0


def test_temperature_value_and_logit_gradient_match_manual_formula():
    c = make_case(3)
    lam, tau = 0.4, 2.0
    s_BTV = (c["hidden_BTH"].detach() @ c["head_VH"].detach().T)[..., :V].requires_grad_()
    t_BTV = (c["teacher_hidden_BTH"] @ c["teacher_head_VH"].T)[..., :V]
    w_BT, labels_BT = c["weights_BT"], c["labels_BT"]
    parts = distill_loss_reference(s_BTV, t_BTV, labels_BT, w_BT, lam=lam, temperature=tau)
    parts.loss.backward()

    q_tau, p_tau = torch.softmax(s_BTV.detach() / 2, -1), torch.softmax(t_BTV / 2, -1)
    kl_BT = 4 * (p_tau * (p_tau.log() - q_tau.log())).sum(-1)
    ce_BT = F.cross_entropy(s_BTV.detach().transpose(1, 2), labels_BT, reduction="none")
    assert parts.soft.item() == pytest.approx((w_BT * kl_BT).sum().item(), rel=1e-5)
    assert parts.hard.item() == pytest.approx((w_BT * ce_BT).sum().item(), rel=1e-5)
    # d/dz [τ²·KL(p_T^τ ‖ p_S^τ)] = τ·(p_S^τ − p_T^τ);  d/dz ce = p_S − onehot
    onehot_BTV = F.one_hot(labels_BT.clamp(min=0), V).float()
    expected_BTV = w_BT[..., None] * (
        lam * tau * (q_tau - p_tau) + (1 - lam) * (torch.softmax(s_BTV.detach(), -1) - onehot_BTV)
    )
    torch.testing.assert_close(s_BTV.grad, expected_BTV, rtol=1e-5, atol=1e-7)


# ---- chunked == reference -----------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 1024])
@pytest.mark.parametrize("lam,tau", [(0.5, 1.0), (0.25, 2.0), (0.0, 1.0), (1.0, 1.5)])
def test_chunked_matches_reference_fp32(chunk_size, lam, tau):
    c = make_case(4)
    kw = {"lam": lam, "temperature": tau, "vocab_size": V}
    ref, ref_dh, ref_dw = run_reference(c, **kw)
    fast, dh, dw = run_chunked(c, chunk_size=chunk_size, **kw)
    for a, b in [(fast.loss, ref.loss), (fast.soft, ref.soft), (fast.hard, ref.hard)]:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dh, ref_dh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dw, ref_dw, rtol=1e-5, atol=1e-6)
    assert dw[V:].abs().max() == 0  # padded head rows get nothing


@pytest.mark.parametrize("chunk_size", [3, 16])
def test_chunked_matches_reference_bf16(chunk_size):
    c = make_case(5, dtype=torch.bfloat16)
    kw = {"lam": 0.6, "temperature": 1.0, "vocab_size": V}
    ref, ref_dh, ref_dw = run_reference(c, **kw)
    fast, dh, dw = run_chunked(c, chunk_size=chunk_size, **kw)
    assert fast.loss.dtype == torch.float32
    assert dh.dtype == torch.bfloat16 and dw.dtype == torch.bfloat16
    torch.testing.assert_close(fast.loss, ref.loss, rtol=1e-4, atol=1e-5)
    # bf16 rounds each matmul result (eps 2^-8); both paths sit ~1e-2 from a float64 truth
    # on these grads (max |dw| ~ 1.3), so compare at that scale
    torch.testing.assert_close(dh.float(), ref_dh.float(), rtol=2e-2, atol=1e-2)
    torch.testing.assert_close(dw.float(), ref_dw.float(), rtol=2e-2, atol=1e-2)


def test_teacher_gets_no_gradient_and_no_grad_mode_gives_same_value():
    c = make_case(6)
    teacher_hidden = c["teacher_hidden_BTH"].clone().requires_grad_()
    teacher_head = c["teacher_head_VH"].clone().requires_grad_()
    args = (c["hidden_BTH"], c["head_VH"], teacher_hidden, teacher_head, c["labels_BT"])
    parts = distill_loss_chunked(*args, c["weights_BT"], lam=0.5, vocab_size=V, chunk_size=5)
    parts.loss.backward()
    assert teacher_hidden.grad is None and teacher_head.grad is None
    assert not parts.soft.requires_grad and not parts.hard.requires_grad
    with torch.no_grad():
        again = distill_loss_chunked(*args, c["weights_BT"], lam=0.5, vocab_size=V, chunk_size=5)
    assert again.loss.item() == parts.loss.item()


# ---- vocab_size, lam = 0 / 1, fully masked ----------------------------------------------------


def test_padded_vocab_rows_change_nothing():
    c = make_case(7)
    kw = {"lam": 0.5, "temperature": 1.3, "vocab_size": V}
    ref, ref_dh, _ = run_reference(c, **kw)
    fast, dh, dw = run_chunked(c, chunk_size=5, **kw)
    poisoned = dict(c)
    head, teacher_head = c["head_VH"].detach().clone(), c["teacher_head_VH"].clone()
    head[V:] = 50 * torch.randn(V_ROWS - V, H)
    teacher_head[V:] = -50 * torch.randn(V_ROWS - V, HT)
    poisoned["head_VH"], poisoned["teacher_head_VH"] = head, teacher_head
    ref2, ref2_dh, _ = run_reference(poisoned, **kw)
    fast2, dh2, dw2 = run_chunked(poisoned, chunk_size=5, **kw)
    assert ref2.loss.item() == pytest.approx(ref.loss.item(), rel=1e-6)
    assert fast2.loss.item() == pytest.approx(fast.loss.item(), rel=1e-6)
    torch.testing.assert_close(ref2_dh, ref_dh)
    torch.testing.assert_close(dh2, dh)
    torch.testing.assert_close(dw2, dw)
    # and without the cut the padded rows do matter (the test above is not vacuous)
    uncut = distill_loss_reference(
        poisoned["hidden_BTH"] @ head.T,
        poisoned["teacher_hidden_BTH"] @ teacher_head.T,
        c["labels_BT"], c["weights_BT"], lam=0.5,
    )  # fmt: skip
    assert abs(uncut.loss.item() - ref.loss.item()) > 1.0


def test_lam0_never_touches_teacher():
    c = make_case(8)
    nan_logits = torch.full((B, T, V_ROWS), float("nan"))
    s_BTV = c["hidden_BTH"] @ c["head_VH"].T
    with_none = distill_loss_reference(s_BTV, None, c["labels_BT"], c["weights_BT"], lam=0.0)
    with_nan = distill_loss_reference(s_BTV, nan_logits, c["labels_BT"], c["weights_BT"], lam=0.0)
    assert with_none.loss.item() == with_nan.loss.item() == with_none.hard.item()
    assert with_none.soft.item() == 0.0
    args = (c["hidden_BTH"], c["head_VH"])
    fast_none = distill_loss_chunked(*args, None, None, c["labels_BT"], c["weights_BT"], lam=0.0)
    fast_nan = distill_loss_chunked(
        *args, torch.full((B, T, HT), float("nan")), torch.full((V_ROWS, HT), float("nan")),
        c["labels_BT"], c["weights_BT"], lam=0.0,
    )  # fmt: skip
    assert fast_none.loss.item() == fast_nan.loss.item()
    assert fast_none.loss.item() == pytest.approx(with_none.loss.item(), rel=1e-6)
    with pytest.raises(ValueError, match="teacher"):
        distill_loss_reference(s_BTV, None, c["labels_BT"], c["weights_BT"], lam=0.1)
    with pytest.raises(ValueError, match="teacher"):
        distill_loss_chunked(*args, None, None, c["labels_BT"], c["weights_BT"], lam=0.1)


def test_lam1_makes_labels_irrelevant():
    c = make_case(9)
    other = dict(c)
    other["labels_BT"] = torch.randint(-500, 500, (B, T))  # even invalid ids at weighted positions
    for run in (run_reference, lambda case, **kw: run_chunked(case, chunk_size=4, **kw)):
        a, a_dh, a_dw = run(c, lam=1.0, vocab_size=V)
        b, b_dh, b_dw = run(other, lam=1.0, vocab_size=V)
        assert a.loss.item() == b.loss.item() and a.hard.item() == b.hard.item() == 0.0
        torch.testing.assert_close(a_dh, b_dh, rtol=0, atol=0)
        torch.testing.assert_close(a_dw, b_dw, rtol=0, atol=0)


def test_ignored_label_with_weight_is_refused():
    c = make_case(10)
    labels_BT = c["labels_BT"].clone()
    labels_BT[0, 0] = IGNORE_INDEX
    weights_BT = c["weights_BT"].clone()
    weights_BT[0, 0] = 0.5
    s_BTV = c["hidden_BTH"] @ c["head_VH"].T
    with pytest.raises(ValueError, match="label"):
        distill_loss_reference(s_BTV, None, labels_BT, weights_BT, lam=0.0)
    with pytest.raises(ValueError, match="label"):
        distill_loss_chunked(
            c["hidden_BTH"], c["head_VH"], None, None, labels_BT, weights_BT, lam=0.0
        )


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_fully_masked_batch_is_zero_with_zero_grads(lam):
    c = make_case(11)
    c["labels_BT"] = torch.full((B, T), IGNORE_INDEX)
    c["weights_BT"] = torch.zeros(B, T)
    for run in (run_reference, lambda case, **kw: run_chunked(case, chunk_size=4, **kw)):
        parts, dh, dw = run(c, lam=lam, vocab_size=V)
        for x in (parts.loss, parts.soft, parts.hard):
            assert x.item() == 0.0
        assert dh is not None and dw is not None
        assert dh.abs().max() == 0 and dw.abs().max() == 0
        assert torch.isfinite(dh).all() and torch.isfinite(dw).all()


# ---- token weights --------------------------------------------------------------------------


def packed_batch():
    # row 0 packs examples 0 (2 supervised) and 1 (1 supervised); row 1 packs example 0
    # (2 supervised, a different example from row 0's segment 0), example 1 with nothing
    # supervised (cropped away), then padding (segment -1).
    segment_ids_BT = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, -1, -1]])
    labels_BT = torch.tensor([[-100, 5, 6, -100, 7, -100], [3, 4, -100, -100, -100, -100]])
    return labels_BT, segment_ids_BT


def test_token_weights_sequence_by_hand():
    labels_BT, segment_ids_BT = packed_batch()
    w_BT = token_weights(labels_BT, segment_ids_BT, "sequence", step_examples=5, step_tokens=10)
    a, b = 1 / (2 * 5), 1 / (1 * 5)
    expected = torch.tensor([[0, a, a, 0, b, 0], [a, a, 0, 0, 0, 0]], dtype=torch.float32)
    assert w_BT.dtype == torch.float32
    assert torch.equal(w_BT, expected)


def test_token_weights_token_by_hand():
    labels_BT, segment_ids_BT = packed_batch()
    w_BT = token_weights(labels_BT, segment_ids_BT, "token", step_examples=5, step_tokens=10)
    expected = torch.tensor([[0, 1, 1, 0, 1, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.float32) / 10
    assert torch.equal(w_BT, expected)


def test_token_weights_edge_cases():
    labels_BT, segment_ids_BT = packed_batch()
    nothing_BT = torch.full_like(labels_BT, IGNORE_INDEX)
    for norm in ("sequence", "token"):
        w_BT = token_weights(nothing_BT, segment_ids_BT, norm, step_examples=0, step_tokens=0)
        assert torch.equal(w_BT, torch.zeros(2, 6))
    bad_BT = labels_BT.clone()
    bad_BT[1, 5] = 9  # supervised label on padding
    with pytest.raises(ValueError, match="padding"):
        token_weights(bad_BT, segment_ids_BT, "sequence", 5, 10)
    with pytest.raises(ValueError, match="loss_norm"):
        token_weights(labels_BT, segment_ids_BT, "mean", 5, 10)
    with pytest.raises(ValueError, match="step_tokens"):
        token_weights(labels_BT, segment_ids_BT, "token", 5, 0)


# ---- split invariance, tied head ------------------------------------------------------------


def packed_step(seed: int):
    """4 packed rows of 2-3 examples each, random supervision."""
    g = torch.Generator().manual_seed(seed)
    segment_ids_BT = torch.tensor(
        [[0] * 4 + [1] * 7, [0] * 6 + [1] * 3 + [-1] * 2, [0] * 3 + [1] * 3 + [2] * 5, [0] * 11]
    )
    labels_BT = torch.randint(0, V, (4, T), generator=g)
    labels_BT[(torch.rand(4, T, generator=g) < 0.4) | (segment_ids_BT < 0)] = IGNORE_INDEX
    return labels_BT, segment_ids_BT


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd", "tv"])
@pytest.mark.parametrize("loss_norm", ["sequence", "token"])
@pytest.mark.parametrize("path", ["reference", "chunked"])
def test_split_into_micro_batches_adds_up(loss_norm, path, divergence):
    labels_BT, segment_ids_BT = packed_step(12)
    step_tokens = int((labels_BT != IGNORE_INDEX).sum())
    supervised_BT = labels_BT != IGNORE_INDEX
    rows_BT = torch.arange(4)[:, None].expand(4, T)
    step_examples = len(
        {
            (int(r), int(s))
            for r, s in zip(rows_BT[supervised_BT], segment_ids_BT[supervised_BT], strict=True)
        }
    )
    g = torch.Generator().manual_seed(13)
    hidden = torch.randn(4, T, H, generator=g).requires_grad_()
    head = (0.4 * torch.randn(V_ROWS, H, generator=g)).requires_grad_()
    teacher_hidden = torch.randn(4, T, HT, generator=g)
    teacher_head = 0.5 * torch.randn(V_ROWS, HT, generator=g)

    def loss_of(rows):
        w_BT = token_weights(
            labels_BT[rows], segment_ids_BT[rows], loss_norm, step_examples, step_tokens
        )
        kw = {"lam": 0.5, "temperature": 1.5, "vocab_size": V, "divergence": divergence}
        if path == "reference":
            s_BTV, t_BTV = hidden[rows] @ head.T, teacher_hidden[rows] @ teacher_head.T
            return distill_loss_reference(s_BTV, t_BTV, labels_BT[rows], w_BT, **kw).loss
        return distill_loss_chunked(
            hidden[rows], head, teacher_hidden[rows], teacher_head, labels_BT[rows], w_BT,
            chunk_size=3, **kw,
        ).loss  # fmt: skip

    whole = loss_of([0, 1, 2, 3])
    whole_dh, whole_dw = torch.autograd.grad(whole, (hidden, head))
    parts = [loss_of([0, 2]), loss_of([1]), loss_of([3])]
    split_dh, split_dw = torch.autograd.grad(sum(parts), (hidden, head))
    torch.testing.assert_close(sum(parts), whole, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(split_dh, whole_dh, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(split_dw, whole_dw, rtol=1e-5, atol=1e-7)
    if loss_norm == "sequence":  # every example weighs 1/step_examples in total
        w_BT = token_weights(labels_BT, segment_ids_BT, loss_norm, step_examples, step_tokens)
        assert w_BT.sum().item() == pytest.approx(1.0, rel=1e-6)


def test_tied_head_gets_gradient_from_both_uses():
    g = torch.Generator().manual_seed(14)
    ids_BT = torch.randint(0, V_ROWS, (B, T), generator=g)
    mix_HH = torch.randn(H, H, generator=g) / 4
    c = make_case(15)

    def grads(loss_fn):
        emb = torch.nn.Embedding(V_ROWS, H)
        with torch.no_grad():
            emb.weight.copy_(
                0.5 * torch.randn(V_ROWS, H, generator=torch.Generator().manual_seed(16))
            )
        hidden_BTH = torch.tanh(emb(ids_BT) @ mix_HH)
        loss_fn(hidden_BTH, emb.weight).backward()
        return emb.weight.grad

    kw = {"lam": 0.5, "vocab_size": V}
    args = (c["labels_BT"], c["weights_BT"])
    teacher_BTV = c["teacher_hidden_BTH"] @ c["teacher_head_VH"].T
    ref = grads(lambda h, w: distill_loss_reference(h @ w.T, teacher_BTV, *args, **kw).loss)
    fast = grads(
        lambda h, w: (
            distill_loss_chunked(
                h, w, c["teacher_hidden_BTH"], c["teacher_head_VH"], *args, chunk_size=4, **kw
            ).loss
        )
    )
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-7)
    # rows >= V are never projected, so only the embedding lookup at weighted positions reaches them
    looked_up = torch.zeros(V_ROWS, dtype=torch.bool)
    looked_up[ids_BT[c["weights_BT"] > 0]] = True  # the toy model is position-wise
    assert (fast[V:].abs().sum(-1) > 0).tolist() == looked_up[V:].tolist()
    assert fast[:V].abs().sum() > 0
