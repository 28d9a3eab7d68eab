"""Student -> a self-contained Hugging Face folder that `AutoModelForCausalLM` and vLLM load.

bf16 safetensors, the tokenizer with its chat template, and a generation config whose EOS list is
`kdlite.chat.STOP_TOKENS` (`<|im_end|>`, then `<|endoftext|>`, as in Qwen3's own generation
config): Qwen3-*-Base checkpoints end text with `<|endoftext|>`, but a distilled student answers in
the chat layout and must stop at the end of its turn. Sampling defaults are the study's evaluation
protocol (temperature 0.6, top-p 0.95).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlite.chat import stop_token_ids


def export_student(
    lm: nn.Module,
    tokenizer: Any,
    out_dir: str | Path,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    info: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Write `lm` (or `state_dict` in its layout) to `out_dir` in HF format."""
    from transformers import GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if state_dict is None:
        state_dict = lm.state_dict()
    # A fresh copy in the export dtype receives the weights: the live module may be sharded or in
    # fp32 master precision, and must not be changed by exporting.
    config: Any = copy.deepcopy(lm.config)
    stops = stop_token_ids(tokenizer)
    config.eos_token_id = stops[0] if len(stops) == 1 else stops
    config.pad_token_id = tokenizer.pad_token_id
    fresh: Any = type(lm)._from_config(config, dtype=dtype)  # type: ignore[attr-defined]  # HF class
    missing, unexpected = fresh.load_state_dict(
        {k: v.detach().to("cpu") for k, v in state_dict.items()}, strict=False
    )
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"student weights do not fit its config: missing {missing}, unexpected {unexpected}"
        )
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    GenerationConfig(
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=0.6,
        top_p=0.95,
        top_k=0,
    ).save_pretrained(out)
    (out / "kdlite_export.json").write_text(json.dumps(info or {}, indent=1, default=str))
    _readable_like_other_files(out.glob("*.safetensors"))
    return out


def _readable_like_other_files(files: Any) -> None:
    """safetensors creates its files with mode 0600; give them the mode every other file of the
    export gets (0666 minus the process umask, 0644 by default), so a group that can read the
    config and tokenizer can read the weights too."""
    mask = os.umask(0)
    os.umask(mask)
    for file in files:
        file.chmod(0o666 & ~mask)


def best_student_state(module: Any, trainer: Any, best_path: str) -> dict[str, torch.Tensor]:
    """The best checkpoint's student weights (or the current ones), keyed like the HF model;
    {} on ranks other than 0 when a best checkpoint exists (only rank 0 writes the export)."""
    prefix = "student.lm."
    if best_path and Path(best_path).exists():
        if not trainer.is_global_zero:
            return {}
        # Memory-mapped: an 8B student's fp32 checkpoint is ~33 GB; only the pages used are read.
        ckpt = torch.load(best_path, map_location="cpu", weights_only=True, mmap=True)
        state = ckpt["state_dict"]
    elif trainer.world_size > 1:  # a collective: every rank takes part
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(
            module, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    else:
        state = module.state_dict()
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def export_trained_student(
    module: Any, trainer: Any, tokenizer: Any, run_dir: Path, best_path: str
) -> tuple[Path | None, str | None]:
    """A finished run's student -> `<run_dir>/export`. Returns the folder and which weights it
    holds: the best checkpoint, or the final weights and why (no validation ran, so there is no
    best.ckpt); (None, None) on ranks other than 0. Every rank calls it (see best_student_state)."""
    from kdlite.run_files import git_revision

    state = best_student_state(module, trainer, best_path)
    if not trainer.is_global_zero:
        return None, None
    if best_path and Path(best_path).exists():
        weights = "checkpoints/best.ckpt (lowest val/loss)"
    else:
        weights = f"final weights at step {trainer.global_step} (no validation ran: no best.ckpt)"
    out = export_student(
        module.student.lm,
        tokenizer,
        run_dir / "export",
        state_dict=state,
        info={"run_dir": str(run_dir), "checkpoint": weights, "git": git_revision()},
    )
    print(f"kdlite: exported the student to {out} from the {weights}")
    return out, weights


def export_initial_model(overrides: list[str], out_dir: str | Path, role: str = "student") -> Path:
    """Export a model of the pair as a run starts from it: the study's un-distilled baseline row
    (`role=student`), or the teacher that teaches (`role=teacher`), for `evaluate.py`.

    For Hub models that is the checkpoint itself; for the tiny shapes it is the shipped weights
    (`init=base`/`reasoning`) or the seeded random initialisation every run of the same `seed`
    starts from (`init=random`).
    """
    from kdlite.config import compose_train, model_spec
    from kdlite.data.tokenizer import load_tokenizer
    from kdlite.models import load_model

    if role not in ("student", "teacher"):
        raise ValueError(f"role={role!r}: expected 'student' or 'teacher'")
    cfg = compose_train(overrides)
    tokenizer = load_tokenizer(cfg.pair.tokenizer)
    spec = model_spec(cfg.pair[role])
    lm = load_model(spec, vocab_size=len(tokenizer), seed=cfg.seed)
    info = {"kind": f"initial {role}", "overrides": overrides, "init": spec.init}
    return export_student(lm, tokenizer, out_dir, info=info)
