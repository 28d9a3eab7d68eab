"""Length filter, order-free seeded split, shrinking, and the manifest."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass

import pytest

from kdlite.data.example import DataError
from kdlite.data.select import manifest_dict, select, write_manifest
from kdlite.data.sources import load_examples
from kdlite.data.spec import DataSpec


@dataclass(frozen=True)
class Item:  # the two attributes of `Rendered` that selection reads
    source_id: str
    input_ids: list[int]


def items(n: int, length: int = 3) -> list[Item]:
    """`n` distinct items (identical tokens would be one example: select() drops duplicates)."""
    return [Item(f"d:{i}:x", [1000 + i] + [1] * (length - 1)) for i in range(n)]


def ids(selected) -> list[str]:
    return [item.source_id for item in selected]


def test_length_filter_is_strict():
    data = [Item("a", [1, 2, 3]), Item("b", [1, 2, 3, 4]), Item("c", [1] * 5), Item("d", [])]
    sel = select(data, max_tokens=4, train_size=1, val_size=1, seed=0)
    assert (sel.n_input, sel.n_too_long, sel.n_kept) == (4, 2, 2)
    assert sorted(ids(sel.train) + ids(sel.val)) == ["a", "d"]


def test_split_is_pinned_and_order_free():
    data = items(8)
    sel = select(data, max_tokens=10, train_size=4, val_size=2, seed=0)
    # Pinned: sha256("0:d:i:x") rank order. Changes here change every run's data.
    assert ids(sel.val) == ["d:6:x", "d:2:x"]
    assert ids(sel.train) == ["d:4:x", "d:3:x", "d:0:x", "d:7:x"]
    for shuffle_seed in range(5):
        shuffled = data[:]
        random.Random(shuffle_seed).shuffle(shuffled)
        again = select(shuffled, max_tokens=10, train_size=4, val_size=2, seed=0)
        assert (ids(again.val), ids(again.train)) == (ids(sel.val), ids(sel.train))


def test_seed_changes_the_split_and_val_is_stable_across_train_sizes():
    data = items(50)
    a = select(data, max_tokens=10, train_size=10, val_size=5, seed=0)
    b = select(data, max_tokens=10, train_size=10, val_size=5, seed=1)
    assert ids(a.val) != ids(b.val)
    bigger = select(data, max_tokens=10, train_size=30, val_size=5, seed=0)
    assert ids(bigger.val) == ids(a.val)
    assert ids(bigger.train)[:10] == ids(a.train)
    assert not set(ids(bigger.train)) & set(ids(bigger.val))


def test_shrinks_in_proportion_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="kdlite.data.select"):
        sel = select(items(10), max_tokens=10, train_size=8, val_size=4, seed=0)
    assert (len(sel.train), len(sel.val)) == (7, 3)
    assert (sel.train_size, sel.val_size) == (8, 4)
    assert "train/val shrunk from 8/4 to 7/3" in caplog.text


def test_small_data_keeps_one_val_example():
    sel = select(items(2), max_tokens=10, train_size=100, val_size=1, seed=0)
    assert (len(sel.train), len(sel.val)) == (1, 1)
    sel = select(items(1), max_tokens=10, train_size=100, val_size=1, seed=0)
    assert (len(sel.train), len(sel.val)) == (1, 0)
    sel = select(items(3), max_tokens=10, train_size=5, val_size=0, seed=0)
    assert (len(sel.train), len(sel.val)) == (3, 0)


def test_no_training_examples_is_an_error():
    with pytest.raises(DataError, match="no training examples: 3 items, 3 of them >= max_tokens=3"):
        select(items(3, length=3), max_tokens=3, train_size=2, val_size=1, seed=0)


def test_duplicate_source_ids_are_an_error():
    with pytest.raises(DataError, match=r"duplicate source ids .*\['a'\]"):
        select(
            [Item("a", [1]), Item("a", [2]), Item("b", [3])],
            max_tokens=9,
            train_size=1,
            val_size=1,
            seed=0,
        )


class Rendered:  # stand-in for render(): one token per character of the prompt
    def __init__(self, example):
        self.source_id = example.source_id
        self.input_ids = [ord(c) for c in example.prompt]


def test_manifest(tmp_path, data_dir):
    loaded = load_examples(DataSpec("synthetic1", path=str(data_dir / "synthetic1.jsonl")))
    rendered = [Rendered(e) for e in loaded.examples]
    # prompts are "Solve: what is N times 3?" (25 chars; 26 for N = 11): max_tokens=26 drops one
    sel = select(rendered, max_tokens=26, train_size=2, val_size=1, seed=0)
    manifest = manifest_dict(loaded, sel)
    assert {k: manifest[k] for k in ("dataset", "hf_config", "split", "revision")} == {
        "dataset": "synthetic1",
        "hf_config": None,
        "split": "train",
        "revision": None,
    }
    assert manifest["location"] == str(data_dir / "synthetic1.jsonl")
    assert manifest["counts"] == {
        "rows_read": 11,
        "rows_filtered": 2,
        "rows_rejected": 4,
        "examples": 5,
        "too_long": 1,
        "duplicates": 0,
        "kept": 4,
        "train": 2,
        "val": 1,
    }
    assert manifest["filtered"] == {"task_type_filtered": 2}
    assert manifest["rejected"] == {
        "duplicate_think": 1,
        "empty_cot": 1,
        "missing_field": 1,
        "unclosed_think": 1,
    }
    assert manifest["first_rejected"][1] == {"row": 4, "reason": "missing_field: llm_response"}
    assert manifest["selection"] == {"max_tokens": 26, "seed": 0, "train_size": 2, "val_size": 1}
    assert manifest["val_ids"] == ids(sel.val) and manifest["train_ids"] == ids(sel.train)
    assert len(manifest["train_ids"]) == 2 and manifest["val_ids"][0].startswith("synthetic1:")
    assert "synthetic1:10:" not in " ".join(manifest["train_ids"] + manifest["val_ids"])

    path = write_manifest(tmp_path / "run" / "manifest.json", loaded, sel)
    assert json.loads(path.read_text()) == manifest
