"""Bad files: a named error before any model loads, or a cache that can never serve stale rows."""

from __future__ import annotations

import json
import os

import pytest
from reliability_helpers import make_cfg, own_row, write_jsonl

import kdlite.training as training_mod
from kdlite.data.datamodule import DataSpec, DistillDataModule, Knobs
from kdlite.data.example import DataError
from kdlite.data.sources import load_examples, source_content
from kdlite.data.tokenizer import TokenizerNotFoundError, load_tokenizer
from kdlite.models import ModelLoadError


@pytest.mark.parametrize("indent", [None, 1])
def test_json_array_in_a_jsonl_file_says_so(tmp_path, indent):
    """Before: "columns found: []" (every line bad JSON) or `not_an_object` for the whole file."""
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps([own_row(i) for i in range(1, 5)], indent=indent) + "\n")
    with pytest.raises(DataError, match=r"holds one JSON array.*rows\.json.*\.json file"):
        load_examples(DataSpec("jsonl", path=str(path)))
    # ... and the advice works: the same bytes as .json load.
    path.rename(tmp_path / "rows.json")
    assert len(load_examples(DataSpec("jsonl", path=str(tmp_path / "rows.json"))).examples) == 4


def test_truncated_parquet_file_is_named(tmp_path):
    """Before: pyarrow's ArrowInvalid ("magic bytes not found"), no file named in a folder of many."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "shards"
    folder.mkdir()
    for i in range(2):
        table = pa.Table.from_pylist([own_row(10 * i + j) for j in range(1, 6)])
        pq.write_table(table, folder / f"part-{i}.parquet")
    cut = folder / "part-1.parquet"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with pytest.raises(DataError, match=r"part-1\.parquet: not a readable Parquet file"):
        load_examples(DataSpec("jsonl", path=str(folder)))


def _module(path, tokenizer) -> DistillDataModule:
    spec = DataSpec(name="jsonl", path=str(path), train_size=8, val_size=2, max_tokens=4096)
    return DistillDataModule(spec, tokenizer, Knobs(examples_per_step=2, micro_examples=2))


def _selected_texts(dm: DistillDataModule, tokenizer) -> set[str]:
    return {tokenizer.decode(it.input_ids) for it in dm.train_items + dm.val_items}


def test_data_file_edited_in_place_is_never_served_from_the_old_cache(tmp_path, embedded_tokenizer):
    """Before: the second run trained on the old rows (0 of 25 selected examples existed in the
    edited file) and the manifest fingerprint did not change."""
    path = write_jsonl(tmp_path / "data.jsonl", [own_row(i) for i in range(11, 21)])
    first = _module(path, embedded_tokenizer)
    first.prepare_data()
    first.setup()
    stat = path.stat()
    write_jsonl(path, [own_row(i) for i in range(21, 31)])  # same path, same size, new rows
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the mtime restored
    second = _module(path, embedded_tokenizer)
    second.prepare_data()
    second.setup()
    assert second.cache_path != first.cache_path
    texts = _selected_texts(second, embedded_tokenizer)
    assert all(any(f"{i} + {i}" in t for i in range(21, 31)) for t in texts)
    assert not any(f"What is {i} + {i}?" in t for t in texts for i in range(11, 21))
    assert second.manifest["fingerprint"] != first.manifest["fingerprint"]
    assert second.manifest["content"]["sha256"] == second.manifest["fingerprint"]
    assert second.manifest["content"]["files"][0][0] == "data.jsonl"
    # Unchanged bytes are served from the cache (no re-render), even after a `touch`.
    os.utime(path)
    third = _module(path, embedded_tokenizer)
    assert third.cache_path == second.cache_path


def test_source_content_tells_hub_revisions_and_embedded_apart(monkeypatch):
    sha = "a" * 40
    pinned = source_content(DataSpec("bespoke", revision=sha))
    assert pinned == {"kind": "hub", "id": "bespokelabs/Bespoke-Stratos-17k",
                      "revision": sha, "resolved": True}  # fmt: skip
    other = source_content(DataSpec("bespoke", revision="b" * 40))
    assert other != pinned
    # offline with nothing cached: unresolved, and said so
    branch = source_content(DataSpec("bespoke", path="org/not-cached-anywhere"))
    assert branch["resolved"] is False and branch["revision"] is None
    assert source_content(DataSpec("synthetic"))["kind"] == "embedded"


def test_hub_branch_resolves_to_the_cached_commit(tmp_path, monkeypatch):
    """Offline, a branch is the commit the local Hub cache holds (what `datasets` would read)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    refs = tmp_path / "datasets--org--name" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("c" * 40)
    assert source_content(DataSpec("jsonl", path="org/name"))["revision"] == "c" * 40
    (refs / "main").write_text("d" * 40)  # the cache moved to a new commit: a new key
    assert source_content(DataSpec("jsonl", path="org/name"))["revision"] == "d" * 40


def test_tokenizer_folder_without_a_tokenizer_says_so(tmp_path):
    """Before: an empty tokenizer was built from config.json, then "'<think>' is 0 tokens"."""
    from kdlite.models import ASSETS

    folder = tmp_path / "model-only"
    folder.mkdir()
    (folder / "config.json").write_text((ASSETS / "tiny-student-base" / "config.json").read_text())
    with pytest.raises(TokenizerNotFoundError, match=r"model-only.*has no tokenizer"):
        load_tokenizer(str(folder))


def test_tokenizer_folder_without_a_tokenizer_fails_training_before_models(
    tmp_path, no_model_load, monkeypatch
):
    monkeypatch.setattr(
        "kdlite.data.sources.load_examples", lambda *a, **k: pytest.fail("data loaded")
    )
    folder = tmp_path / "empty"
    folder.mkdir()
    # named by the resource check that runs before anything loads (kdlite/resources.py)
    with pytest.raises(
        (TokenizerNotFoundError, ModelLoadError),
        match=r"no tokenizer.* in that folder|has no tokenizer",
    ):
        training_mod.train(make_cfg(tmp_path / "r", f"pair.tokenizer={folder}"))
