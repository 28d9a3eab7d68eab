"""`make gpu-check` on a machine without CUDA: every step composes, is skipped with its reason,
and the results file says so (CI runs this; the real run needs a GPU)."""

from __future__ import annotations

import json

import pytest
import torch

from kdlite.cli import gpu_check


def test_gpu_check_composes_and_skips_cleanly_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: run `make gpu-check` for real")
    results = gpu_check.main([f"out={tmp_path / 'gpu-check.json'}"])
    written = json.loads((tmp_path / "gpu-check.json").read_text())
    assert written == json.loads(json.dumps(results))
    steps = written["steps"]
    assert set(steps) == {"gpu_tests", "bench_gpu", "vllm_smoke"}
    assert steps["gpu_tests"]["status"] == "skipped: no CUDA device (tests collected)"
    assert "test_fsdp_over_all_visible_gpus_matches_one_gpu" in steps["gpu_tests"]["tail"]
    assert steps["bench_gpu"]["setup"]["seq_lens"][-1] == 4096
    assert steps["bench_gpu"]["setup"]["teacher"] == "4b"
    assert steps["vllm_smoke"]["status"].startswith("skipped:")
    assert written["machine"]["versions"]["torch"].startswith(torch.__version__.split("+")[0])
