"""Fixtures for the evaluation tests: a tiny random Qwen3 exported like a run, composed eval configs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[2] / "conf"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_tokenizer) -> Path:
    """An HF folder: 2-layer random Qwen3 (vocab = the embedded tokenizer) + tokenizer + template."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    tok = embedded_tokenizer
    cfg = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
    )
    path = tmp_path_factory.mktemp("tiny-model")
    Qwen3ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def run_dir(tmp_path, tiny_model_dir) -> Path:
    """A run directory as train(cfg) leaves it: config.yaml + export/."""
    run = tmp_path / "runs" / "demo"
    shutil.copytree(tiny_model_dir, run / "export")
    (run / "config.yaml").write_text("lsp: 1.0\n")
    return run


@pytest.fixture
def compose_eval():
    from hydra import compose, initialize_config_dir

    import kdlite.eval.config  # noqa: F401  (registers eval_schema)

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("eval", overrides=list(overrides))

    return _compose
