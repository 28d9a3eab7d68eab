"""Typed schema of `conf/eval.yaml` (registered with Hydra's ConfigStore as `eval_schema`).

Unknown keys fail at compose time, and so does an unknown benchmark (`bench` is a config group, so
Hydra lists the available ones). Protocol keys at the top level (`n_samples`, `temperature`, ...)
default to null, meaning "each benchmark's own protocol" from `conf/bench/<name>.yaml`: the study's
for AIME (64 samples x 32,768 tokens = ~2M generated tokens per problem set, GPU only) and a CPU-sized
one for the embedded synthetic set (4 samples x 512 tokens). A value given at the top level applies
to every benchmark of the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

BACKENDS = ("auto", "transformers", "vllm")
SOURCES = ("hub", "synthetic", "jsonl")
PROMPTS = ("aime", "plain")


@dataclass
class BenchConfig:
    name: str = "???"
    source: str = "???"  # hub | synthetic | jsonl
    hub_id: str | None = None
    revision: str | None = None  # pin a Hub dataset commit
    split: str = "train"
    path: str | None = None  # jsonl file
    size: int | None = (
        None  # synthetic: problems generated; hub/jsonl: keep the first `size` (null = all)
    )
    seed: int = 0  # synthetic generator seed
    min_steps: int = 2  # synthetic: only problems of at least this many steps (2 = all)
    prompt: str = "aime"  # aime = lighteval's AIME user prompt; plain = the problem text itself
    n_samples: int = 64
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0  # 0 = no top-k
    max_new_tokens: int = 32768


@dataclass
class EvalLoggerConfig:
    """W&B logging of the scores (kdlite/wandb_run.py). null = only models whose training run
    used W&B (their run is resumed by its stored id); true = every model; false = none."""

    wandb: bool | None = None
    project: str = "kdlite"
    entity: str | None = None
    group: str | None = None  # the group of `eval` runs (models without a training W&B run)
    tags: list[str] = field(default_factory=list)
    mode: str | None = (
        None  # null = the training run's mode (offline for eval runs); online | offline
    )


@dataclass
class EvalConfig:
    # run dir | HF folder | Hub id, or a list of them; null = runs/default, unless `sweep` is set
    model: Any = None
    sweep: Any = None  # a sweep directory (or a list): every finished run under it
    backend: str = "auto"  # auto = vllm if importable and CUDA is visible, else transformers
    n_samples: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int | None = None
    seed: int = 0
    batch_size: int = 16  # transformers backend: sequences per generate() call
    dtype: str = "auto"  # auto = bfloat16 on CUDA, float32 on CPU
    grade_workers: int = 2
    grade_timeout_s: float = 20.0
    out_dir: str = (
        "runs/eval"  # results of models that are not run dirs: <out_dir>/<slug>/eval/<bench>/
    )
    # Filled by the `bench` config group: `bench=aime24` or `bench=[aime24,aime25]` composes
    # conf/bench/<name>.yaml into benches.<name> (fields overridable: benches.aime24.revision=...).
    benches: dict[str, BenchConfig] = field(default_factory=dict)
    logger: EvalLoggerConfig = field(default_factory=EvalLoggerConfig)


ConfigStore.instance().store(name="eval_schema", node=EvalConfig)
