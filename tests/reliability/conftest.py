"""The reliability suite: what a user's bad rows, files, configs, evaluation inputs and faults
(kills, unwritable paths, truncated or planted files) lead to. Every test asserts one exact
outcome: a named error before any model loads, a counted skip with its reason, or an identical
result after the fault.

Groups: `test_bad_rows.py` (per dataset layout), `test_bad_files.py`, `test_bad_configs.py`,
`test_bad_eval_inputs.py`, `test_faults.py`. Small inputs live in `tests/fixtures/reliability/`.
"""

from __future__ import annotations

from pathlib import Path

import pytest


class Loaded(AssertionError):
    """Raised by `no_model_load` when something loads a model."""


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: the errors under test must come first."""

    def boom(*a, **k):
        raise Loaded("a model was loaded before the error")

    import kdlite.module as module_mod

    monkeypatch.setattr(module_mod, "load_model", boom)
    monkeypatch.setattr("kdlite.models.load_model", boom)
    return boom


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, embedded_tokenizer) -> Path:
    """An HF folder: a 1-layer random Qwen3 on the embedded tokenizer, for evaluation runs."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    tok = embedded_tokenizer
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      head_dim=16, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                      pad_token_id=tok.pad_token_id)  # fmt: skip
    path = tmp_path_factory.mktemp("tiny-model")
    Qwen3ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path
