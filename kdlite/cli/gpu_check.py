"""`python -m kdlite.cli.gpu_check [out=gpu-check.json dry=false]` (`make gpu-check`): the one script to run once on a CUDA machine.

In about 12 minutes on one or more GPUs it runs, each with its own time limit, and records in one
JSON file (default `gpu-check.json`) with the machine, versions and each step's outcome:

1. the `gpu`-marked tests (tests/gpu: bf16 chunked loss against the fp32 reference at the real
   151,669-id vocabulary, flex_attention packed forward+backward with isolation, FSDP2 over all
   visible GPUs when there are several, a bf16 training run of the tiny pair; and the compute
   profile at the 8B -> 4B shape);
2. `python -m kdlite.cli.bench mode=gpu`: kdlite's training step against the naive baseline in the
   same process at the 4B -> 1.7B Qwen3 shape, random weights, T = 4,096 (printed, not appended:
   copy the section into BENCHMARKS.md);
3. a vLLM smoke generation with the exported tiny student, when vLLM is installed.

Without a CUDA device (or with `dry=true`) nothing runs on a GPU: the script checks that each step
composes (the tests collect, the bench's GPU setup builds, evaluate's config composes), records
each step as skipped with the reason, and exits 0. CI runs it that way.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlite.cli._args import arg, argv_or_sys, parse_keys

REPO = Path(__file__).resolve().parents[2]
GPU_TESTS = ["tests/gpu", "tests/analysis/test_compute.py"]


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("torch", "transformers", "lightning", "vllm", "liger-kernel", "hydra-core"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict[str, Any]:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "gpus": gpus,
        "versions": _versions(),
    }


def _run(cmd: list[str], timeout: float, log: Path) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        rc = 124
        parts = [
            p.decode(errors="replace") if isinstance(p, bytes) else p or ""
            for p in (err.stdout, err.stderr)
        ]
        out = "".join(parts) + f"\n[timed out after {timeout:.0f} s]"
    log.write_text(f"$ {' '.join(cmd)}\n{out}")
    tail = "\n".join(out.strip().splitlines()[-15:])
    return {
        "command": " ".join(cmd),
        "returncode": rc,
        "seconds": round(time.perf_counter() - started, 1),
        "tail": tail,
        "log": str(log),
        "status": "passed" if rc == 0 else ("timed out" if rc == 124 else "failed"),
    }


def step_tests(cuda: bool, logs: Path) -> dict[str, Any]:
    py = sys.executable
    if not cuda:
        r = _run(
            [py, "-m", "pytest", "-q", "--collect-only", "-m", "gpu", *GPU_TESTS],
            120,
            logs / "tests.log",
        )
        collected = "collected" in r["tail"] or "tests collected" in r["tail"]
        return {
            **r,
            "status": "skipped: no CUDA device (tests collected)"
            if r["returncode"] == 0 and collected
            else r["status"],
        }
    return _run([py, "-m", "pytest", "-q", "-m", "gpu", "-rs", *GPU_TESTS], 300, logs / "tests.log")


def step_bench(cuda: bool, logs: Path) -> dict[str, Any]:
    if not cuda:
        from kdlite.cli.bench import setup_for

        s = setup_for("gpu")
        return {
            "status": "skipped: no CUDA device (GPU bench setup builds)",
            "setup": {
                "student": s.student_shape,
                "teacher": s.teacher_shape,
                "seq_lens": list(s.seq_lens),
            },
        }
    cmd = [sys.executable, "-m", "kdlite.cli.bench", "mode=gpu", "seq_lens=4096", "append=false"]
    return _run(cmd, 420, logs / "bench.log")  # 15 timed variants at 4k took > 290 s on an H200


def step_vllm(cuda: bool, logs: Path, work: Path) -> dict[str, Any]:
    from importlib.util import find_spec

    from hydra import compose, initialize_config_dir

    import kdlite.eval.config  # noqa: F401 - registers evaluate's schema
    from kdlite.eval.run import check_config

    overrides = ["backend=vllm", "bench=synthetic", "n_samples=1", "max_new_tokens=64"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        check_config(compose("eval", overrides=overrides))  # raises on a bad value
    if find_spec("vllm") is None:
        return {"status": "skipped: vLLM is not installed (pip install -e .[vllm])"}
    if not cuda:
        return {"status": "skipped: no CUDA device"}
    export = work / "tiny-student"
    first = _run(
        [sys.executable, "-m", "kdlite.cli.export", f"out={export}"], 120, logs / "export.log"
    )
    if first["returncode"]:
        return first
    cmd = [sys.executable, "evaluate.py", f"model={export}", *overrides, f"out_dir={work / 'eval'}"]
    return _run(cmd, 240, logs / "vllm.log")


@dataclass
class Keys:
    out: str = arg("gpu-check.json", "results file (JSON); logs go to the folder of its stem")
    dry: bool = arg(False, "compose and skip every GPU step")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    prog = "python -m kdlite.cli.gpu_check"
    args = parse_keys(Keys, argv_or_sys(argv), prog=prog, doc=__doc__)
    import torch

    cuda = torch.cuda.is_available() and not args.dry
    out = Path(args.out).resolve()
    work = out.with_suffix("")
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine(), "cuda": cuda, "steps": {}}
    for name, step in (
        ("gpu_tests", lambda: step_tests(cuda, logs)),
        ("bench_gpu", lambda: step_bench(cuda, logs)),
        ("vllm_smoke", lambda: step_vllm(cuda, logs, work)),
    ):
        print(f"kdlite gpu-check: {name} ...", flush=True)
        try:
            results["steps"][name] = step()
        except Exception as err:  # noqa: BLE001 - one broken step must not lose the others
            results["steps"][name] = {"status": f"failed: {type(err).__name__}: {err}"}
        print(f"kdlite gpu-check: {name}: {results['steps'][name]['status']}", flush=True)
        out.write_text(json.dumps(results, indent=1))
    print(f"kdlite gpu-check: results in {out}")
    return results


if __name__ == "__main__":
    main()
