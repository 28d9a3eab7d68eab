import pytest
import torch

from kdlite.analysis.compute import (
    LOSS_CHUNKED,
    LOSS_FULL,
    _loss_fn,
    count_step_flops,
    markdown,
    pair_shapes,
    profile_lsps,
)
from kdlite.analysis.flops import forward_flops, step_flops
from kdlite.models import QWEN3_SHAPES, random_model

VOCAB = 256


@pytest.fixture(scope="module")
def eager_pair():
    kw = {"vocab_size": VOCAB, "attn_implementation": "eager"}
    teacher = random_model("tiny-teacher", seed=0, **kw).eval().requires_grad_(False)
    student = random_model("tiny-student", seed=1, **kw).train()
    return teacher, student


@pytest.mark.parametrize("prefer_chunked", [True, False])
def test_analytic_flops_equal_torch_flop_counter(eager_pair, prefer_chunked):
    # Eager attention runs QK^T and AV as bmm, which the counter sees (CPU SDPA it does not);
    # it charges the full T x T square, hence causal=False. Tolerance: exact up to 0.1%.
    teacher, student = eager_pair
    loss_fn, _ = _loss_fn(prefer_chunked)
    T = 48
    ids = torch.randint(0, VOCAB, (2, T), generator=torch.Generator().manual_seed(0))
    counted = count_step_flops(teacher, student, ids, lam=0.5, loss_fn=loss_fn)
    # The chunked loss projects only positions with a label (T - 1 per row); the full-logits
    # reference projects every position.
    head_tokens = T - 1 if prefer_chunked else T
    analytic = step_flops(
        teacher.config, student.config, T, batch=2, causal=False, head_tokens=head_tokens
    )
    assert counted == pytest.approx(analytic["total"], rel=1e-3)


def test_flops_scale_with_sequence_and_causal_half():
    cfg = QWEN3_SHAPES["8b"]
    full, half = forward_flops(cfg, 4096), forward_flops(cfg, 2048)
    assert 2.0 < full / half < 2.2  # linear terms halve, attention quarters
    assert forward_flops(cfg, 4096, causal=False) > full
    parts = step_flops(QWEN3_SHAPES["8b"], QWEN3_SHAPES["4b"], 4096)
    assert parts["total"] == parts["teacher_forward"] + 3 * parts["student_forward"]
    # ~2 * params * tokens for the forward of an 8B model: 2 * 7.6e9 * 4096 ~ 6.2e13, plus attention
    assert 6e13 < parts["teacher_forward"] < 8e13


def test_pair_shapes():
    assert pair_shapes("tiny") == ("tiny-teacher", "tiny-student")
    assert pair_shapes("32b_1.7b") == ("32b", "1.7b")
    with pytest.raises(ValueError):
        pair_shapes("qwen")


def test_profiler_runs_on_cpu(tmp_path):
    from kdlite.cli.bench import main

    out = main(
        f"kind=lsp pair=tiny lsp=0.5,1.0 seq_len=64 steps=1 warmup=0 vocab={VOCAB} out={tmp_path}".split()
    )
    assert (tmp_path / "profile.png").read_bytes()[:4] == b"\x89PNG"
    text = out.read_text()
    assert "CPU peak RSS growth" in text and LOSS_CHUNKED in text
    assert "| 0.5 | 32 |" in text and "| 1.0 | 64 |" in text


def test_profile_rows_flops_halve(eager_pair):
    teacher, student = eager_pair
    rows = profile_lsps(teacher, student, [0.5, 1.0], 64, steps=1, warmup=0, prefer_chunked=False)
    assert [r.seq_len for r in rows] == [32, 64]
    assert rows[0].loss_impl == LOSS_FULL
    assert 0.45 < rows[0].flops / rows[1].flops < 0.55
    assert all(r.step_time_s > 0 and r.tokens_per_s > 0 for r in rows)
    assert "| 0.5 | 32 | 1 |" in markdown(rows, "tiny")


@pytest.mark.gpu
def test_profile_real_shapes_on_gpu():
    # 8B->4B in bf16 with random weights: ~24 GB of weights, fits one 80 GB GPU at 2,048 tokens.
    from kdlite.analysis.compute import build_pair

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    teacher, student = build_pair("8b_4b", None, torch.bfloat16, torch.device("cuda"))
    rows = profile_lsps(teacher, student, [0.5, 1.0], 2048, steps=2, warmup=1)
    assert rows[0].memory_kind == "cuda max_memory_allocated"
    assert rows[0].peak_memory_bytes < rows[1].peak_memory_bytes
    assert rows[0].step_time_s < rows[1].step_time_s
    print(markdown(rows, "8b_4b"))
