"""`loss.divergence`: reverse KL, generalized JSD and TV beside the forward KL (docs/divergences.md).

Every value and gradient is checked against a float64 reference written here from the definitions,
as explicit sums over the vocabulary (Python loops; autograd differentiates those sums, not the
library's formulas): the full-logits reference, the chunked fast path and the top-k cache path.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_training import _first_step_grads, curve, make_cfg

from kdlite.losses import (
    DIVERGENCES,
    IGNORE_INDEX,
    distill_loss_chunked,
    distill_loss_chunked_cached,
    distill_loss_reference,
    needs_full_teacher,
)
from kdlite.teacher_cache import topk_logprobs

B, T, H, HT, V, V_ROWS = 2, 5, 8, 12, 19, 23
BETA = 0.3  # asymmetric: a swapped β (or swapped p, q in the mixture) changes the value
CASES = [("forward_kl", BETA), ("reverse_kl", BETA), ("jsd", BETA), ("tv", BETA)]


def _case(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, V, (B, T), generator=g)
    ignored = torch.rand(B, T, generator=g) < 0.3
    labels[ignored] = IGNORE_INDEX
    return {
        "hidden": 1.5 * torch.randn(B, T, H, generator=g),
        "head": 0.4 * torch.randn(V_ROWS, H, generator=g),
        "t_hidden": 1.2 * torch.randn(B, T, HT, generator=g),
        "t_head": 0.6 * torch.randn(V_ROWS, HT, generator=g),
        "labels": labels,
        "weights": (0.1 + torch.rand(B, T, generator=g)) * (~ignored),
    }


# ---- the float64 hand reference -----------------------------------------------------------------
def _log_softmax_row(z: list, tau: float) -> list:
    """log softmax(z / τ) of float64 scalar tensors, one id at a time (a shift by the max, no
    gradient through it: the value does not depend on the shift)."""
    top = max(float(x.detach()) for x in z)
    logz = torch.log(sum(torch.exp((x - top) / tau) for x in z))
    return [(x - top) / tau - logz for x in z]


def _hand_d(logp: list, logq: list, kind: str, beta: float):
    """D(p, q) as a sum over the vocabulary, one term per id."""
    total = 0.0
    for lp, lq in zip(logp, logq, strict=True):
        p, q = torch.exp(lp), torch.exp(lq)
        if kind == "forward_kl":
            total = total + p * (lp - lq)
        elif kind == "reverse_kl":
            total = total + q * (lq - lp)
        elif kind == "jsd":
            m = beta * p + (1 - beta) * q
            total = total + beta * p * (lp - torch.log(m)) + (1 - beta) * q * (lq - torch.log(m))
        else:
            total = total + 0.5 * torch.abs(q - p)
    return total


def _bucket(logps: list, ids: list) -> list:
    """The (k + 1)-bucket coarsening: the ids' log-probs, then log(mass of every other id)."""
    rest = [lp for v, lp in enumerate(logps) if v not in ids]
    if not rest:
        return [logps[v] for v in ids]
    return [logps[v] for v in ids] + [torch.logsumexp(torch.stack(rest), 0)]


def hand_loss(s_BTV, t_BTV, labels, w, *, lam, tau, kind, beta, k=None):
    """(loss, soft, soft_ce) in float64; s_BTV may require grad. k: the cache's top-k buckets."""
    loss = soft = xent = 0.0
    for b in range(B):
        for t in range(T):
            wt = float(w[b, t])
            if wt == 0:
                continue
            s_row = [s_BTV[b, t, v] for v in range(V)]
            logq = _log_softmax_row(s_row, tau)
            logp = _log_softmax_row([t_BTV[b, t, v].detach() for v in range(V)], tau)
            if k is not None:
                ids = sorted(range(V), key=lambda v: -float(logp[v]))[:k]
                logp, logq = _bucket(logp, ids), _bucket(logq, ids)
            d = tau**2 * _hand_d(logp, logq, kind, beta)
            x = -(tau**2) * sum(torch.exp(lp) * lq for lp, lq in zip(logp, logq, strict=True))
            ce = -_log_softmax_row(s_row, 1.0)[int(labels[b, t])] if lam < 1 else 0.0
            loss = loss + wt * (lam * d + (1 - lam) * ce)
            soft, xent = soft + wt * float(d.detach()), xent + wt * float(x.detach())
    return loss, soft, xent


def hand_grads(c: dict, **kw):
    hidden = c["hidden"].double().requires_grad_()
    head = c["head"].double().requires_grad_()
    t_BTV = c["t_hidden"].double() @ c["t_head"].double().T
    loss, soft, xent = hand_loss(hidden @ head.T, t_BTV, c["labels"], c["weights"], **kw)
    loss.backward()
    return float(loss.detach()), soft, xent, hidden.grad, head.grad


# ---- the three implementations ------------------------------------------------------------------
def run(path: str, c: dict, *, k: int | None = None, chunk_size: int = 3, **kw):
    hidden = c["hidden"].clone().requires_grad_()
    head = c["head"].clone().requires_grad_()
    if path == "reference":
        t_BTV = c["t_hidden"] @ c["t_head"].T
        parts = distill_loss_reference(hidden @ head.T, t_BTV, c["labels"], c["weights"], **kw)
    elif path == "chunked":
        parts = distill_loss_chunked(
            hidden, head, c["t_hidden"], c["t_head"], c["labels"], c["weights"],
            chunk_size=chunk_size, **kw,
        )  # fmt: skip
    else:
        t_NV = (c["t_hidden"] @ c["t_head"].T)[..., :V].reshape(-1, V)
        ids, logp, rest = topk_logprobs(t_NV, k or V, kw.get("temperature", 1.0))
        K = ids.shape[-1]
        parts = distill_loss_chunked_cached(
            hidden, head, ids.reshape(B, T, K), logp.reshape(B, T, K), rest.reshape(B, T),
            c["labels"], c["weights"], chunk_size=chunk_size, **kw,
        )  # fmt: skip
    parts.loss.backward()
    return parts, hidden.grad, head.grad


def _close(got, want, rtol=2e-5, atol=1e-6):
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol)


# ---- values and gradients -----------------------------------------------------------------------
@pytest.mark.parametrize("path", ["reference", "chunked", "cached_full"])
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("kind,beta", CASES)
def test_value_and_gradients_match_the_float64_hand_reference(kind, beta, tau, path):
    c = _case(1)
    kw = {"lam": 0.6, "temperature": tau, "vocab_size": V, "divergence": kind, "jsd_beta": beta}
    loss, soft, xent, dh, dw = hand_grads(c, lam=0.6, tau=tau, kind=kind, beta=beta)
    parts, got_dh, got_dw = run(path.removesuffix("_full"), c, **kw)
    assert parts.loss.item() == pytest.approx(loss, rel=2e-5)
    assert parts.soft.item() == pytest.approx(soft, rel=2e-5)
    assert parts.soft_ce.item() == pytest.approx(xent, rel=2e-5)  # the same yardstick for all
    assert parts.divergence == kind
    _close(got_dh, dh)
    _close(got_dw, dw)


@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("kind,beta", [c for c in CASES if not needs_full_teacher(*c)])
def test_top_k_cache_is_the_bucket_divergence_and_a_lower_bound(kind, beta, tau):
    c = _case(2)
    k = 4
    kw = {"lam": 1.0, "temperature": tau, "vocab_size": V, "divergence": kind, "jsd_beta": beta}
    loss, soft, xent, dh, dw = hand_grads(c, lam=1.0, tau=tau, kind=kind, beta=beta, k=k)
    parts, got_dh, got_dw = run("cached", c, k=k, chunk_size=4, **kw)
    assert parts.soft.item() == pytest.approx(soft, rel=2e-5)
    assert parts.soft_ce.item() == pytest.approx(xent, rel=2e-5)
    _close(got_dh, dh)
    _close(got_dw, dw)
    full, _, _ = run("chunked", c, **kw)
    assert 0 < parts.soft.item() < full.soft.item()  # data processing: coarsening loses


@pytest.mark.parametrize("kind,beta", [("reverse_kl", 0.5), ("jsd", 1.0)])
def test_reverse_kl_from_a_top_k_cache_is_refused(kind, beta):
    c = _case(3)
    kw = {"lam": 0.5, "vocab_size": V, "divergence": kind, "jsd_beta": beta}
    with pytest.raises(ValueError, match=r"k=4 < vocab_size=19"):
        run("cached", c, k=4, **kw)
    full, _, _ = run("cached", c, k=V, **kw)  # k = |V|: exact, allowed
    assert full.soft.item() > 0


# ---- masked rows ----------------------------------------------------------------------------------
MASKED = [
    (kind, beta, path)
    for kind, beta in CASES
    for path in ("reference", "chunked", "cached_full", "cached")
    if not (path == "cached" and needs_full_teacher(kind, beta))  # refused, tested above
]


@pytest.mark.parametrize("kind,beta,path", MASKED)
def test_masked_rows_are_a_finite_zero_with_zero_gradient(kind, beta, path):
    c = _case(4)
    c["hidden"][0] *= 1e3  # extreme logits on the masked row: nothing may leak from them
    c["weights"][0] = 0.0
    c["labels"][0] = IGNORE_INDEX
    k = 4 if path == "cached" else None
    kw = {"lam": 0.5, "vocab_size": V, "divergence": kind, "jsd_beta": beta, "temperature": 2.0}
    parts, dh, dw = run(path.removesuffix("_full"), c, k=k, **kw)
    assert torch.isfinite(parts.loss) and parts.loss.item() > 0
    assert torch.isfinite(dh).all() and torch.isfinite(dw).all()
    assert dh[0].abs().max().item() == 0.0
    c["weights"][1] = 0.0  # the whole batch masked
    c["labels"][1] = IGNORE_INDEX
    parts, dh, dw = run(path.removesuffix("_full"), c, k=k, **kw)
    assert parts.loss.item() == 0.0 and parts.soft.item() == 0.0 and parts.soft_ce.item() == 0.0
    assert dh.abs().max().item() == 0.0 and dw.abs().max().item() == 0.0


# ---- the JSD's β convention ---------------------------------------------------------------------
@pytest.mark.parametrize("path", ["reference", "chunked"])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_jsd_end_points_are_the_two_kls(tau, path):
    """TRL's convention: β = 0 is KL(teacher ‖ student), β = 1 is KL(student ‖ teacher)."""
    c = _case(5)
    kw = {"lam": 0.7, "temperature": tau, "vocab_size": V}
    for beta, kl in ((0.0, "forward_kl"), (1.0, "reverse_kl")):
        jsd, jsd_dh, jsd_dw = run(path, c, divergence="jsd", jsd_beta=beta, **kw)
        ref, ref_dh, ref_dw = run(path, c, divergence=kl, **kw)
        assert jsd.divergence == kl
        assert jsd.loss.item() == ref.loss.item() and jsd.soft.item() == ref.soft.item()
        assert torch.equal(jsd_dh, ref_dh) and torch.equal(jsd_dw, ref_dw)
    fwd = run(path, c, divergence="forward_kl", **kw)[0].soft.item()
    rev = run(path, c, divergence="reverse_kl", **kw)[0].soft.item()
    gap = abs(fwd - rev)
    assert gap > 0.1 * fwd  # the two ends differ: the orientation check below can fail
    # Near the ends the mixture formula itself leans the same way: JSD_β ≈ β·KL(p ‖ q) as β → 0
    # and ≈ (1 − β)·KL(q ‖ p) as β → 1 (the end points are the limits of JSD_β / β, / (1 − β)).
    # The β → 1 side converges slowly (its next term grows with χ²(q ‖ p)), hence the smaller ε.
    near0 = run(path, c, divergence="jsd", jsd_beta=1e-4, **kw)[0].soft.item() / 1e-4
    near1 = run(path, c, divergence="jsd", jsd_beta=1 - 1e-5, **kw)[0].soft.item() / 1e-5
    assert abs(near0 - fwd) < 0.1 * gap
    assert abs(near1 - rev) < 0.1 * gap


def test_bad_divergence_settings_are_refused():
    c = _case(6)
    with pytest.raises(ValueError, match="divergence must be one of"):
        run("chunked", c, lam=0.5, divergence="kl")
    for beta in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="jsd_beta must be in"):
            run("reference", c, lam=0.5, divergence="jsd", jsd_beta=beta)
    assert set(DIVERGENCES) == {k for k, _ in CASES}


def test_teacher_entropy_is_refused_for_other_divergences():
    c = _case(7)
    fwd = run("chunked", c, lam=1.0, vocab_size=V)[0]
    assert fwd.teacher_entropy.item() > 0
    tv = run("chunked", c, lam=1.0, vocab_size=V, divergence="tv")[0]
    assert tv.soft_ce.item() == pytest.approx(fwd.soft_ce.item(), rel=1e-6)  # same yardstick
    with pytest.raises(ValueError, match="forward KL only"):
        _ = tv.teacher_entropy


# ---- config, teacher cache, end to end ------------------------------------------------------------
def test_config_key_is_validated_by_name(tmp_path):
    from hydra.errors import ConfigCompositionException

    from kdlite.config import ConfigError, validate

    cfg = make_cfg(tmp_path / "r", "loss.divergence=jsd", "loss.jsd_beta=0.25")
    assert cfg.loss.divergence.value == "jsd" and cfg.loss.jsd_beta == 0.25
    assert make_cfg(tmp_path / "r").loss.divergence.value == "forward_kl"  # the study's default
    with pytest.raises(ConfigCompositionException, match="divergence"):
        make_cfg(tmp_path / "r", "loss.divergence=kl")
    for bad in ("1.5", "nan"):
        with pytest.raises(ConfigError, match="loss.jsd_beta"):
            validate(make_cfg(tmp_path / "r", f"loss.jsd_beta={bad}"))


@pytest.mark.parametrize("mode", ["cache", "auto"])
def test_teacher_cache_refuses_the_reverse_kl_by_its_keys(tmp_path, embedded_tokenizer, mode):
    from kdlite.config import ConfigError
    from kdlite.teacher_cache import divergence_refusal, select_for_run

    n = len(embedded_tokenizer)
    for overrides in (["loss.divergence=reverse_kl"], ["loss.divergence=jsd", "loss.jsd_beta=1"]):
        cfg = make_cfg(tmp_path / "r", f"teacher={mode}", "teacher_cache_k=64", *overrides)
        why = divergence_refusal(cfg, n)
        assert "teacher_cache_k=64" in why and overrides[-1].split("=")[0] in why
        if mode == "cache":
            with pytest.raises(ConfigError, match=r"teacher=cache: loss\.divergence="):
                select_for_run(cfg, embedded_tokenizer, datamodule=None)
        else:  # a sweep's auto: the online teacher, never the cache (not even looked up)
            assert select_for_run(cfg, embedded_tokenizer, datamodule=None) is None
        assert divergence_refusal(cfg, 64) == ""  # k covers the vocabulary: exact, allowed
    for allowed in ("forward_kl", "tv", "jsd"):
        cfg = make_cfg(tmp_path / "r", f"teacher={mode}", f"loss.divergence={allowed}")
        assert divergence_refusal(cfg, n) == ""


@pytest.mark.parametrize("divergence", ["reverse_kl", "jsd", "tv"])
def test_a_tiny_run_trains_with_each_divergence(tmp_path, divergence):
    from kdlite.training import train

    run = tmp_path / divergence
    train(make_cfg(run, f"loss.divergence={divergence}", "optim.max_steps=2", "export=false",
                   "trainer.val_check_interval=2"))  # fmt: skip
    soft, xent, loss = (
        curve(run, "train/soft"),
        curve(run, "train/soft_ce"),
        curve(run, "train/loss"),
    )
    hard = curve(run, "train/hard")
    assert sorted(loss) == [0, 1]
    for step in loss:
        assert all(math.isfinite(c[step]) for c in (soft, xent, loss, hard))
        assert soft[step] > 0 and loss[step] == pytest.approx(0.5 * soft[step] + 0.5 * hard[step])
    assert math.isfinite(curve(run, "val/soft")[1])


@pytest.mark.parametrize("divergence", ["reverse_kl", "jsd", "tv"])
def test_first_step_gradient_does_not_depend_on_the_micro_batch_split(tmp_path, divergence):
    """As tests/test_training.py checks for the forward KL: one step of 8 examples as one
    micro-batch of 8 or four of 2 gives the same gradient."""

    common = [f"loss.divergence={divergence}", "lsp=0.5", "supervise=cot_a"]
    whole = _first_step_grads(tmp_path / "a", *common, "batch.micro_examples=8")
    split = _first_step_grads(tmp_path / "b", *common, "batch.micro_examples=2")
    assert whole.keys() == split.keys()
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for g in whole.values())


def test_bench_times_every_divergence_against_the_forward_kl(tmp_path, monkeypatch):
    from dataclasses import replace

    from kdlite.cli import bench

    tiny = replace(
        bench.setup_for("cpu"), vocab_rows=256, vocab_size=250, seq_lens=(24,), packed=(2, 12),
        steps=1, warmup=0,
    )  # fmt: skip
    monkeypatch.setattr(bench, "setup_for", lambda mode: tiny)
    out = tmp_path / "BENCHMARKS.md"
    results = bench.main(["kind=divergences", f"out={out}"])
    assert sorted({r.variant for r in results}) == sorted(DIVERGENCES)
    assert len(results) == 3 * len(DIVERGENCES) and all(r.times_s[0] > 0 for r in results)
    text = out.read_text()
    assert "kind=divergences" in text and "| 1 × 24 | forward_kl |" in text
    assert text.count("| 2 × 12 packed |") == len(DIVERGENCES)
