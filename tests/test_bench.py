"""`kdlite.cli.bench`: the variants compute the same step, and the CLI writes a report."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from kdlite.cli import bench


@pytest.fixture(scope="module")
def tiny_setup():
    return replace(
        bench.setup_for("cpu"),
        vocab_rows=256,
        vocab_size=250,
        seq_lens=(24,),
        packed=(2, 12),
        steps=2,
        warmup=0,
    )


@pytest.mark.parametrize("workload", [0, 1, 2])
def test_naive_and_bare_steps_give_the_same_update(tiny_setup, workload):
    # SGD with lr 1 turns the parameter change into the gradient, so the two steps must agree.
    s = tiny_setup
    teacher, student = bench.build_models(s, torch.device("cpu"))
    w = bench.workloads(s)[workload]
    after = {}
    for name, make in (("naive", bench.naive_step), ("bare", bench.bare_step)):
        model = copy.deepcopy(student)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        make(teacher, model, opt, s, 0.5, torch.device("cpu"))(w.micro_batches)
        after[name] = dict(model.named_parameters())
    moved = 0.0
    for key, p0 in student.named_parameters():
        torch.testing.assert_close(after["bare"][key], after["naive"][key], rtol=1e-4, atol=1e-6)
        moved += float((after["bare"][key] - p0).abs().sum())
    assert moved > 0


def test_workloads_pack_isolated_examples(tiny_setup):
    ws = {w.name: w for w in bench.workloads(tiny_setup)}
    packed, separate = ws["2 × 12 packed"], ws["2 × 12 separate"]
    assert len(packed.micro_batches) == 1 and len(separate.micro_batches) == 2
    assert packed.micro_batches[0]["segment_ids_BT"].tolist() == [[0] * 12 + [1] * 12]
    assert all(b["step_examples"] == 2 for b in separate.micro_batches)
    assert packed.tokens == separate.tokens == 24


def test_cli_appends_a_dated_report(tmp_path, tiny_setup, monkeypatch):
    monkeypatch.setattr(bench, "setup_for", lambda mode: tiny_setup)
    out = tmp_path / "BENCHMARKS.md"
    args = ["steps=1", "warmup=0", f"out={out}"]
    results = bench.main([*args, "variants=naive,bare,cached,lightning,liger"])
    by_variant = {r.variant: r for r in results if r.workload == "1 × 24"}
    for variant in ("naive", "bare", "cached", "lightning"):
        r = by_variant[variant]
        assert r.error is None, r.error
        assert r.times_s and all(t > 0 for t in r.times_s) and r.flops > 0
    assert by_variant["cached"].flops < by_variant["bare"].flops  # no teacher forward
    text = out.read_text()
    assert text.startswith("# kdlite benchmarks")
    assert "## " in text and "mode=cpu" in text and "torch " in text
    assert "| 2 × 12 packed | bare |" in text and "Targets" in text
    bench.main([*args, "variants=bare"])
    assert out.read_text().count("## ") == 2
