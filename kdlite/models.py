"""The one place that knows Hugging Face model classes.

Builds the teacher and the student of a pair: from a Hub id or a local folder (`from_pretrained`),
or with random weights from a named Qwen3 shape (`QWEN3_SHAPES`: the study's five sizes and the
tiny pair of the embedded default). `HiddenLM` wraps a causal LM so that its forward returns the
final (normed) hidden states instead of `[B, T, 151,936]` logits: the loss projects only the
supervised positions, chunk by chunk (kdlite/losses.py). Being the root module under FSDP, the
wrapper keeps the output head in the root shard group, which stays unsharded from forward to
backward, so `head_weight` can be read right after the forward.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Qwen3 shapes from the released configs (docs/paper.md, Setup). head_dim 128, vocab 151,936 for all five.
_QWEN3_COMMON: dict[str, Any] = {
    "vocab_size": 151_936,
    "head_dim": 128,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "max_position_embeddings": 40_960,
    "hidden_act": "silu",
}


def _shape(hidden: int, layers: int, heads: int, kv: int, inter: int, tied: bool) -> dict[str, Any]:
    return {
        **_QWEN3_COMMON,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "intermediate_size": inter,
        "tie_word_embeddings": tied,
    }


# The tiny pair: about 0.79M (teacher) and 0.33M (student) non-embedding parameters, so the whole
# embedded default (bootstrap + distillation) runs on 2 CPU cores in minutes. The vocabulary is
# set from the embedded tokenizer at build time.
TINY_COMMON: dict[str, Any] = {
    "rms_norm_eps": 1e-6,
    "rope_theta": 10_000.0,
    "max_position_embeddings": 4096,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
}

QWEN3_SHAPES: dict[str, dict[str, Any]] = {
    "0.6b": _shape(1024, 28, 16, 8, 3072, True),
    "1.7b": _shape(2048, 28, 16, 8, 6144, True),
    "4b": _shape(2560, 36, 32, 8, 9728, True),
    "8b": _shape(4096, 36, 32, 8, 12288, False),
    "32b": _shape(5120, 64, 64, 8, 25600, False),
    "tiny-teacher": {
        **TINY_COMMON,
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "intermediate_size": 384,
    },
    "tiny-student": {
        **TINY_COMMON,
        "hidden_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 24,
        "intermediate_size": 288,
    },
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(ValueError):
    """A model that cannot be resolved or built; raised before any training work."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: `name` (Hub id or local folder) or a `shape`, whose weights are
    random (`init="random"`) or, for the tiny shapes, shipped in `kdlite/assets/<shape>-<init>`."""

    name: str | None = None
    revision: str | None = None
    shape: str | None = None
    init: str = "random"

    def asset(self) -> Path | None:
        """The folder of the shipped weights this spec names, or None (random or `name`)."""
        if self.shape is None or self.init == "random":
            return None
        return asset_dir(self.shape, self.init)

    def location(self) -> str:
        """What `evaluate.py model=...` loads for this model: a name, a folder, or a bare shape."""
        return str(self.asset() or self.name or self.shape)


def check_tokenizers(
    tokenizer: Any, tokenizer_name: str, specs: dict[str, ModelSpec | None]
) -> None:
    """Refuse models (`{"student": spec, "teacher": spec or None}`) whose tokenizer's vocabulary
    differs from `tokenizer`'s, before any compute: logit distillation compares the two models'
    distributions id by id. Named models only: random-init shapes take the pair's tokenizer."""
    from kdlite.data.tokenizer import load_tokenizer, vocab_fingerprint
    from kdlite.errors import ConfigError

    # The id -> token map must match; EOS may differ (Qwen3-*-Base ends with <|endoftext|>).
    want = vocab_fingerprint(tokenizer)
    for role, spec in specs.items():
        if spec is None or spec.shape is not None or not spec.name:
            continue
        try:
            theirs = load_tokenizer(spec.name, spec.revision)
        except Exception as err:  # noqa: BLE001 - any failure here is a resolution failure
            raise ModelLoadError(
                f"cannot load the {role}'s tokenizer {spec.name!r}: {err}"
            ) from err
        if vocab_fingerprint(theirs) != want:
            raise ConfigError(
                f"the {role} {spec.name!r} uses a different tokenizer than the pair's "
                f"({tokenizer_name!r}); logit distillation needs one shared vocabulary"
            )


# Weights shipped with the package for the tiny shapes (`kdlite.cli.pretrain`, `make tiny-models`).
ASSETS = Path(__file__).parent / "assets"
# beside every shipped tiny model's weights: its recipe, tokenizer fingerprint, loss, wall time
# (written by `python -m kdlite.cli.pretrain`)
RECIPE_FILE = "kdlite_base.json"
# `<init>-restate`: the pair whose traces' answer sections restate the think block's conclusion
# (`experiment=replication`, docs/mini-replication.md §8-9); the plain names are the defaults.
BASE_INITS = ("base", "base-restate")  # pre-trained bases (what `pair.rehearsal` can replay)
INITS = ("random", *BASE_INITS, "reasoning", "reasoning-restate")


def asset_dir(shape: str, init: str) -> Path:
    """The folder of shipped `init` weights for a tiny `shape`; a clear error when there is none."""
    if init not in INITS:
        raise ModelLoadError(f"unknown init {init!r} for shape {shape!r}; known: {list(INITS)}")
    folder = ASSETS / f"{shape}-{init}"
    if not (folder / "model.safetensors").is_file():
        raise ModelLoadError(
            f"shape {shape!r} with init={init!r} needs shipped weights in {folder}, which is "
            f"missing; rebuild them with `make tiny-models`, or use `init=random`"
        )
    return folder


def asset_fingerprint(shape: str, init: str) -> str:
    """sha1 of the shipped weights, so caches keyed on a model change when they are rebuilt."""
    data = (asset_dir(shape, init) / "model.safetensors").read_bytes()
    return hashlib.sha1(data).hexdigest()[:12]


def qwen3_config(shape: str, vocab_size: int | None = None, **overrides: Any):
    from transformers import Qwen3Config

    if shape not in QWEN3_SHAPES:
        raise ModelLoadError(f"unknown model shape {shape!r}; known: {sorted(QWEN3_SHAPES)}")
    kwargs = dict(QWEN3_SHAPES[shape])
    if vocab_size is not None:
        kwargs["vocab_size"] = vocab_size
    kwargs.update(overrides)
    return Qwen3Config(**kwargs)


def random_model(
    shape: str,
    vocab_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """A Qwen3ForCausalLM with random weights in one of `QWEN3_SHAPES` (no download).

    `device` builds the weights there directly (an 8B model initialised on a CPU and then moved takes
    minutes; on the GPU, seconds); None leaves torch's default device."""
    from transformers import Qwen3ForCausalLM

    config = qwen3_config(shape, vocab_size)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = Qwen3ForCausalLM._from_config(
            config, attn_implementation=attn_implementation, dtype=dtype
        )
    return model


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def load_model(
    spec: ModelSpec,
    *,
    vocab_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    seed: int | None = None,
) -> nn.Module:
    """Build the model a spec names. Random-init shapes take the tokenizer's vocab when given."""
    if (folder := spec.asset()) is not None:
        return _load_asset(folder, vocab_size, dtype, attn_implementation)
    if spec.shape is not None:
        # Real shapes keep their padded 151,936-row vocabulary (the loss restricts logits to the
        # tokenizer); the tiny shapes are sized to the tokenizer.
        tiny = spec.shape.startswith("tiny")
        return random_model(
            spec.shape,
            vocab_size=vocab_size if tiny else None,
            dtype=dtype,
            attn_implementation=attn_implementation,
            seed=seed,
        )
    if not spec.name:
        raise ModelLoadError("a model spec needs `name` (Hub id or local folder) or `shape`")
    from transformers import AutoModelForCausalLM

    name = str(Path(spec.name).expanduser()) if _looks_local(spec.name) else spec.name
    if _looks_local(spec.name) and not Path(name).is_dir():
        raise ModelLoadError(f"model folder {name!r} does not exist")
    try:
        return AutoModelForCausalLM.from_pretrained(
            name, revision=spec.revision, dtype=dtype, attn_implementation=attn_implementation
        )
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            "HF_HUB_OFFLINE=1 is set, so only the local cache is searched. "
            if offline
            else "The Hub could not be reached or has no such repository. "
        )
        raise ModelLoadError(
            f"cannot load model {spec.name!r} (revision {spec.revision}): {hint}"
            f"Download it once (`hf download {spec.name}`) or point the config at a "
            f"local folder, e.g. `pair.student.name=/models/Qwen3-4B-Base`. Cause: {err}"
        ) from err


def _load_asset(
    folder: Path, vocab_size: int | None, dtype: torch.dtype, attn_implementation: str
) -> nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, attn_implementation=attn_implementation
    )
    if vocab_size is not None and model.config.vocab_size != vocab_size:
        raise ModelLoadError(
            f"{folder}: {model.config.vocab_size} vocabulary rows, but the tokenizer has "
            f"{vocab_size} ids; the shipped weights belong to the embedded tokenizer "
            f"(`pair.tokenizer=embedded`), or rebuild them with `make tiny-models`"
        )
    return model


def decoder_layer_class(model: nn.Module) -> type[nn.Module]:
    """The transformer block class, for FSDP wrapping and activation checkpointing."""
    decoder: Any = model.get_decoder()  # type: ignore[operator]  # an HF PreTrainedModel method
    return type(decoder.layers[0])


class HiddenLM(nn.Module):
    """A causal LM whose forward returns the last hidden states (after the final norm)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: Any = None,
    ) -> torch.Tensor:
        decoder: Any = self.lm.get_decoder()  # type: ignore[operator]  # HF method
        out = decoder(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            use_cache=False,
        )
        return out.last_hidden_state

    @property
    def head_weight(self) -> torch.Tensor:
        head: Any = self.lm.get_output_embeddings()  # type: ignore[operator]  # HF method
        return head.weight

    @property
    def config(self):
        return self.lm.config


def count_parameters(model: nn.Module, non_embedding: bool = False) -> int:
    total = sum(p.numel() for p in model.parameters())
    if non_embedding:
        embeddings: Any = model.get_input_embeddings()  # type: ignore[operator]  # HF method
        total -= embeddings.weight.numel()
    return total
