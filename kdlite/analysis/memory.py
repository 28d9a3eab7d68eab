"""Per-GPU and host memory of a distillation run, from the model configs (docs/memory.md).

The steady state of one rank under `trainer=fsdp` (FSDP2 over `world` ranks, bf16-mixed):

- student: fp32 master parameters, fp32 gradients and AdamW's two fp32 moments, each sharded:
  16 bytes per parameter / world;
- teacher: stored in `teacher_dtype` (bf16: 2 bytes per parameter), sharded (/ world) or whole
  (`teacher_sharding=replicate`);
- transient, while a model runs: one decoder layer gathered in bf16 (plus the next one FSDP
  prefetches), and the root group (embeddings, final norm, head) of the model whose loss is being
  computed. kdlite frees the teacher's root group right after the loss and the student's after
  validation; left gathered, a 32B teacher's root would hold ~3.1 GB per GPU for good.
- activations and the loss's logit chunks depend on the tokens per micro-batch: not counted here
  (`python -m kdlite.cli.bench kind=lsp` measures them).

Host memory on rank 0 during a checkpoint save: the full student state (fp32 parameters and both
AdamW moments, 12 bytes per parameter) is gathered to CPU; the frozen teacher is never part of a
checkpoint. Export reads `best.ckpt` memory-mapped on rank 0 only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GB = 1e9


@dataclass(frozen=True)
class ModelSize:
    parameters: int
    layer_parameters: int  # one decoder layer
    root_parameters: int  # embeddings + final norm (+ untied head)


def model_size(config: dict[str, Any]) -> ModelSize:
    """Parameter counts of a Qwen3-layout config dict (`kdlite.models.QWEN3_SHAPES` entry)."""
    h, n_layers, v = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = config.get("head_dim") or h // heads
    attn = h * d * heads * 2 + h * d * kv * 2 + 2 * d  # q, o, k, v projections + q/k norms
    layer = attn + 3 * h * config["intermediate_size"] + 2 * h  # MLP + two RMSNorms
    root = v * h * (1 if config.get("tie_word_embeddings") else 2) + h
    return ModelSize(n_layers * layer + root, layer, root)


@dataclass(frozen=True)
class MemoryEstimate:
    student_state: float  # bytes per rank: params + grads + AdamW moments (fp32, sharded)
    teacher_weights: float  # bytes per rank
    transient: float  # gathered layers and root groups while running (bf16)
    host_checkpoint: float  # rank 0's CPU memory for the full student state at a save

    @property
    def per_gpu(self) -> float:
        return self.student_state + self.teacher_weights + self.transient

    def row(self) -> dict[str, float]:
        return {
            "student state": self.student_state / GB,
            "teacher weights": self.teacher_weights / GB,
            "transient gathers": self.transient / GB,
            "per GPU (no activations)": self.per_gpu / GB,
            "host, rank 0 at a save": self.host_checkpoint / GB,
        }


def shard(n: int, world: int) -> int:
    return math.ceil(n / world)


def estimate(
    student: dict[str, Any],
    teacher: dict[str, Any] | None,
    world: int,
    *,
    teacher_dtype: str = "bfloat16",
    teacher_sharding: str = "shard",
    compute_dtype: str = "bfloat16",
) -> MemoryEstimate:
    s = model_size(student)
    compute = BYTES[compute_dtype]
    student_state = 16 * shard(s.parameters, world)
    transient = compute * (2 * s.layer_parameters + s.root_parameters)
    teacher_weights = 0
    if teacher is not None:
        t = model_size(teacher)
        tb = BYTES[teacher_dtype]
        whole = teacher_sharding == "replicate" or world == 1
        teacher_weights = tb * (t.parameters if whole else shard(t.parameters, world))
        if not whole:  # its layers are gathered while the student's root is held
            transient = max(
                transient,
                compute * s.root_parameters + tb * (2 * t.layer_parameters + t.root_parameters),
            )
    return MemoryEstimate(
        student_state=student_state,
        teacher_weights=teacher_weights,
        transient=transient,
        host_checkpoint=12 * s.parameters,
    )


def study_table(world: int = 8) -> list[tuple[str, MemoryEstimate]]:
    """The estimate for every study pair at `world` GPUs (conf/pair/*.yaml shapes)."""
    from kdlite.models import QWEN3_SHAPES

    pairs = [("32b", s) for s in ("8b", "4b", "1.7b", "0.6b")] + [
        ("8b", s) for s in ("4b", "1.7b", "0.6b")
    ]
    return [(f"{t}→{s}", estimate(QWEN3_SHAPES[s], QWEN3_SHAPES[t], world)) for t, s in pairs]


def markdown(world: int = 8) -> str:
    head = "| pair | student state | teacher weights | transient gathers | per GPU (no activations) | host, rank 0 at a save |"
    lines = [head, "|" + "---|" * 6]
    for name, e in study_table(world):
        lines.append(f"| {name} | " + " | ".join(f"{v:.1f} GB" for v in e.row().values()) + " |")
    return "\n".join(lines)
