"""Shared test fixtures: an isolated kdlite cache per session, offline Hub, and the two tokenizers.

Every test session gets its own KDLITE_CACHE (a pytest tmp dir), so no test depends on or pollutes
a previous run's cache; the embedded tokenizer is therefore built once per session (~1 s) and
reloaded from that cache afterwards. The real Qwen3 tokenizer (151,669 ids, ~1 s to load) is only
available where ../shared/qwen3-tokenizer (or $KDLITE_QWEN3_TOKENIZER) exists; its tests skip
elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# huggingface_hub reads HF_HUB_OFFLINE when it is imported, which can happen while test modules
# are collected, before any fixture runs: set it at import time too.
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDLITE_CACHE", str(tmp_path_factory.mktemp("kdlite-cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="session")
def embedded_tokenizer(_isolated_cache):
    from kdlite.data.tokenizer import embedded_tokenizer as build

    return build()


def qwen3_tokenizer_path() -> Path:
    return Path(
        os.environ.get("KDLITE_QWEN3_TOKENIZER", REPO.parent / "shared" / "qwen3-tokenizer")
    )


@pytest.fixture(scope="session")
def qwen3_tokenizer():
    path = qwen3_tokenizer_path()
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"real Qwen3 tokenizer not found at {path} (set KDLITE_QWEN3_TOKENIZER)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
