"""Which weights to evaluate and where their results go.

A model is a run directory (`runs/<name>`: evaluates `<run>/export`, results in `<run>/eval/<bench>/`
beside the run's metrics so the report finds them), a local HF folder, or a Hub id (results in
`<out_dir>/<slug>/eval/<bench>/`, with no `config.yaml`, so the report treats it as a baseline).
Everything here runs before generation: a missing folder or a tokenizer without a chat template is
an `EvalError` in a second instead of a crash after the model is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kdlite import chat
from kdlite.eval.benchmarks import EvalError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelRef:
    spec: str  # what the user wrote
    path: str  # what from_pretrained / vLLM loads
    kind: str  # "run" | "hf"
    results_root: Path  # results of bench b go to results_root / b

    def results_dir(self, bench: str) -> Path:
        return self.results_root / bench


def slug(spec: str) -> str:
    return re.sub(r"[^\w.-]+", "__", spec.strip().strip("./")) or "model"


def resolve_model(spec: str, out_dir: str | Path) -> ModelRef:
    spec = str(spec)
    p = Path(spec).expanduser()
    train_hint = (
        "; run `python train.py` first to create it" if spec.rstrip("/").startswith("runs") else ""
    )
    if p.is_dir():
        if (p / "export").is_dir():
            if not (p / "export" / "config.json").is_file():
                raise EvalError(f"{p}/export has no config.json: the run's export is incomplete")
            return ModelRef(spec, str(p / "export"), "run", p / "eval")
        if (p / "config.json").is_file():
            return ModelRef(spec, str(p), "hf", Path(out_dir) / slug(spec) / "eval")
        if (p / "config.yaml").is_file():
            raise EvalError(f"run directory {p} has no export/ (did training finish?){train_hint}")
        raise EvalError(
            f"{p} is neither a run directory (with export/) nor an HF model folder (config.json)"
        )
    first = spec.split("/")[0]
    looks_local = (
        spec.startswith((".", "/", "~"))
        or spec.count("/") != 1
        or first == "runs"
        or Path(first).is_dir()
    )
    if looks_local or not _HUB_ID.match(spec):
        raise EvalError(f"model folder not found: {p}{train_hint}")
    return ModelRef(spec, spec, "hf", Path(out_dir) / slug(spec) / "eval")


def load_eval_tokenizer(ref: ModelRef):
    """The model's tokenizer; it must carry a chat template (prompts are rendered with it)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(ref.path)
    except Exception as e:
        raise EvalError(
            f"cannot load the tokenizer of {ref.spec} ({ref.path}): {type(e).__name__}: {e}. "
            "A Hub id needs network or the model in the local HF cache (HF_HUB_OFFLINE=1 is set?)."
        ) from e
    if not getattr(tok, "chat_template", None):
        raise EvalError(
            f"{ref.spec} has no chat template: the protocol renders every prompt with the model's own "
            "template (thinking on). Base models need one copied into tokenizer_config.json."
        )
    return tok


def stop_token_ids(tok) -> list[int]:
    """`kdlite.chat.stop_token_ids`, the list the export writes into a student's generation
    config; a tokenizer with no stop token at all is an EvalError before anything loads."""
    try:
        return chat.stop_token_ids(tok)
    except ValueError as err:
        raise EvalError(str(err)) from None


def chat_prompt_ids(tok, user_text: str) -> list[int]:
    """The user turn through the model's chat template, generation prompt added, thinking on."""
    text = tok.apply_chat_template(
        [{"role": "user", "content": user_text}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=True,
    )
    return tok(text, add_special_tokens=False)["input_ids"]
