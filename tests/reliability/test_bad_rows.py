"""Bad rows, per dataset layout: each is skipped and counted by reason, never a crash or a silent
change of what is trained."""

from __future__ import annotations

import copy
import json

import pytest
from reliability_helpers import DATA_FIXTURES, FIXTURES, own_row, write_jsonl

from kdlite.data.example import DataError, Example, RowRejected
from kdlite.data.render import control_tokens, render
from kdlite.data.select import select
from kdlite.data.sources import load_examples
from kdlite.data.spec import DataSpec

# One good row per layout, from the layout fixtures (their row 0 is accepted).
LAYOUTS = {
    "openthoughts": "openthoughts.jsonl",
    "synthetic1": "synthetic1.jsonl",
    "nemotron": "nemotron.jsonl",
    "jsonl": "own.jsonl",
}


def _good_row(name: str) -> dict:
    line = (DATA_FIXTURES / LAYOUTS[name]).read_text().splitlines()[0]
    return json.loads(line)


def _with_text(row: dict, name: str, suffix: str) -> dict:
    """`row` with `suffix` appended to its answer text, wherever the layout keeps the answer."""
    row = copy.deepcopy(row)
    if name == "openthoughts":
        turn = row["conversations"][1]
        turn["value"] = turn["value"].replace("<|end_of_solution|>", f"{suffix}<|end_of_solution|>")
    elif name == "synthetic1":
        row["llm_response"] += suffix
    elif name == "nemotron":
        row["output"] += suffix
    else:
        row["answer"] += suffix
    return row


def _distinct(row: dict, name: str, i: int) -> dict:
    return _with_text(row, name, f" (copy {i})")


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_non_utf8_byte_and_lone_surrogate_are_counted_bad_encoding(tmp_path, name):
    """Before: UnicodeDecodeError (a 0xFF byte) or UnicodeEncodeError (`\\ud800`) killed the run."""
    good = _good_row(name)
    rows = [json.dumps(_distinct(good, name, i)).encode() for i in range(4)]
    surrogate = json.dumps(_with_text(good, name, " \\ud800 tail")).replace("\\\\ud800", "\\ud800")
    assert "\\ud800" in surrogate  # a JSON escape of a lone surrogate, as some exporters write
    raw = json.dumps(_with_text(good, name, " BYTE")).encode().replace(b"BYTE", b"\xff")
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join([rows[0], raw, rows[1], surrogate.encode(), *rows[2:]]) + b"\n")
    loaded = load_examples(DataSpec(name, path=str(path)))
    assert dict(loaded.counter.reasons) == {"bad_encoding": 2}
    assert [int(e.source_id.split(":")[1]) for e in loaded.examples] == [0, 2, 4, 5]
    assert "not valid UTF-8" in " ".join(msg for _, msg in loaded.counter.first_bad)


def test_bad_encoding_fixture_and_json_array_file(tmp_path):
    loaded = load_examples(DataSpec("jsonl", path=str(FIXTURES / "bad_encoding.jsonl")))
    assert dict(loaded.counter.reasons) == {"bad_encoding": 2}
    assert [int(e.source_id.split(":")[1]) for e in loaded.examples] == [0, 2, 4, 5]
    # The same bytes in a .json file holding one list of rows: counted the same way.
    array = tmp_path / "rows.json"
    lines = (FIXTURES / "bad_encoding.jsonl").read_bytes().strip().split(b"\n")
    array.write_bytes(b"[" + b",\n".join(lines) + b"]")
    loaded = load_examples(DataSpec("jsonl", path=str(array)))
    assert dict(loaded.counter.reasons) == {"bad_encoding": 2} and len(loaded.examples) == 4


# ---- control tokens ---------------------------------------------------------------------------
QWEN3_CONTROL = ("<tool_call>", "<|vision_start|>", "<|fim_prefix|>", "<|box_start|>",
                 "<|object_ref_start|>", "</tool_response>", "<|im_end|>", "<|endoftext|>")  # fmt: skip


@pytest.mark.parametrize("tag", QWEN3_CONTROL)
@pytest.mark.parametrize("field", ["prompt", "cot", "answer"])
def test_every_qwen3_control_token_in_text_is_rejected_and_counted(qwen3_tokenizer, tag, field):
    """Before: `<tool_call>`, `<|vision_start|>`, ... in a prompt or trace became control ids."""
    texts = {"prompt": "What is 1 + 2?", "cot": "1 + 2 = 3.", "answer": "\\boxed{3}"}
    texts[field] = f"{texts[field]} {tag} more"
    example = Example(**texts, source_id="x:0:abc")
    with pytest.raises(RowRejected) as err:
        render(example, qwen3_tokenizer)
    assert err.value.reason == "reserved_token_in_text" and tag in str(err.value)


def test_every_added_token_of_the_tokenizer_counts(embedded_tokenizer):
    """A tokenizer with an extra markup token (as Qwen3 has 26 control tokens, not 5)."""
    tok = copy.deepcopy(embedded_tokenizer)
    tok.add_tokens(["<tool_call>"])
    tok.add_special_tokens({"additional_special_tokens": ["<|box_start|>"]})
    assert {"<tool_call>", "<|box_start|>"} <= set(control_tokens(tok))
    for tag in ("<tool_call>", "<|box_start|>"):
        ex = Example("What is 1 + 2?", f"1 + 2 {tag} = 3.", "\\boxed{3}", "x:0:abc")
        with pytest.raises(RowRejected, match="reserved_token_in_text"):
            render(ex, tok)
    # plain text that merely looks alike stays allowed
    ok = Example("What is <b> 1 + 2?", "1 + 2 = 3, tool_call.", "\\boxed{3}", "x:0:abc")
    assert render(ok, tok).input_ids


def test_control_tokens_counted_in_the_manifest(tmp_path, embedded_tokenizer):
    from kdlite.data.datamodule import DataSpec, DistillDataModule, Knobs

    tok = copy.deepcopy(embedded_tokenizer)
    tok.add_tokens(["<tool_call>"])
    rows = [own_row(i) for i in range(1, 13)]
    rows[3]["cot"] += " <tool_call>{}</tool_call>"
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    spec = DataSpec(name="jsonl", path=str(path), train_size=8, val_size=2, max_tokens=4096)
    dm = DistillDataModule(spec, tok, Knobs(examples_per_step=2, micro_examples=2))
    dm.prepare_data()
    dm.setup()
    assert dm.manifest["rejected"] == {"reserved_token_in_text": 1}
    assert dm.manifest["counts"]["train"] + dm.manifest["counts"]["val"] == 10


# ---- shapes users of these datasets hit -------------------------------------------------------
@pytest.mark.parametrize(
    "name,file", [("synthetic1", "synthetic1_prompt_messages.jsonl"),
                  ("jsonl", "own_prompt_messages.jsonl")]
)  # fmt: skip
def test_prompt_as_a_list_of_messages_is_read(name, file):
    """Before: counted `non_string` (the prompt was a list): a revision that switched to message
    lists lost every row."""
    loaded = load_examples(DataSpec(name, path=str(FIXTURES / file)))
    assert [int(e.source_id.split(":")[1]) for e in loaded.examples] == [0, 1, 2]
    assert dict(loaded.counter.reasons) == {"wrong_roles": 1}
    assert loaded.examples[1].prompt.startswith("What is 2 ")  # the system turn is dropped


def test_extra_columns_of_a_newer_revision_are_ignored():
    loaded = load_examples(
        DataSpec("synthetic1", path=str(FIXTURES / "synthetic1_extra_columns.jsonl"))
    )
    assert len(loaded.examples) == 4 and not loaded.counter.rejected


def test_renamed_fields_between_revisions_are_named(tmp_path):
    """`conversations` renamed to `messages`: refused with both column lists, in JSONL and in a
    Hub-style saved dataset (schema known before any row is read)."""
    path = FIXTURES / "openthoughts_renamed.jsonl"
    with pytest.raises(DataError, match=r"\['conversations'\] not found.*'messages'"):
        load_examples(DataSpec("openthoughts", path=str(path)))
    import datasets

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    saved = tmp_path / "hub_copy"
    datasets.Dataset.from_list(rows).save_to_disk(str(saved))
    with pytest.raises(DataError, match=r"\['conversations'\] not found.*'messages'"):
        load_examples(DataSpec("openthoughts", path=str(saved)))


def test_100k_token_row_is_counted_too_long_not_a_crash(tmp_path, embedded_tokenizer):
    """A 100k-token trace: rendered, measured and dropped by the length filter (counted)."""
    from kdlite.data.datamodule import DataSpec, DistillDataModule, Knobs

    rows = [own_row(i) for i in range(1, 11)]
    rows[4]["cot"] = " ".join(["7"] * 50_000)  # digits are one token each, spaces another
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    spec = DataSpec(name="jsonl", path=str(path), train_size=6, val_size=2, max_tokens=4096)
    dm = DistillDataModule(spec, embedded_tokenizer, Knobs(examples_per_step=2, micro_examples=2))
    dm.prepare_data()
    dm.setup()
    assert dm.manifest["counts"]["too_long"] == 1
    assert dm.manifest["counts"]["kept"] == 9
    assert "jsonl:4:" not in " ".join(dm.manifest["train_ids"] + dm.manifest["val_ids"])
    assert max(len(it.input_ids) for it in dm.train_items) < 4096


def test_duplicates_are_counted_and_never_cross_train_and_val(embedded_tokenizer):
    """Before: a file where every row appears twice put 2 val examples in train, uncounted."""
    examples = []
    for i in range(20):
        row = own_row(i + 1)
        for copy_no in range(2):  # every row twice, at different indices
            idx = 2 * i + copy_no
            examples.append(
                Example(row["prompt"], row["cot"], row["answer"], f"jsonl:{idx}:{i:012d}")
            )
    rendered = [render(e, embedded_tokenizer) for e in examples]
    sel = select(rendered, max_tokens=4096, train_size=15, val_size=5, seed=0)
    assert sel.n_duplicates == 20
    train_tokens = {tuple(r.input_ids) for r in sel.train}
    val_tokens = {tuple(r.input_ids) for r in sel.val}
    assert len(train_tokens) == len(sel.train) == 15 and len(val_tokens) == len(sel.val) == 5
    assert not train_tokens & val_tokens
    # Order-free: the same set read in reverse selects the same ids.
    again = select(rendered[::-1], max_tokens=4096, train_size=15, val_size=5, seed=0)
    assert [r.source_id for r in again.train] == [r.source_id for r in sel.train]


def test_duplicates_in_a_file_reach_the_manifest(tmp_path, embedded_tokenizer):
    from kdlite.data.datamodule import DataSpec, DistillDataModule, Knobs

    rows = [own_row(i) for i in range(1, 13) for _ in range(2)]
    path = write_jsonl(tmp_path / "twice.jsonl", rows)
    spec = DataSpec(name="jsonl", path=str(path), train_size=8, val_size=4, max_tokens=4096)
    dm = DistillDataModule(spec, embedded_tokenizer, Knobs(examples_per_step=2, micro_examples=2))
    dm.prepare_data()
    dm.setup()
    counts = dm.manifest["counts"]
    assert counts["duplicates"] == 12 and counts["kept"] == 12
    assert (counts["train"], counts["val"]) == (8, 4)
    train = {tuple(it.input_ids) for it in dm.train_items}
    val = {tuple(it.input_ids) for it in dm.val_items}
    assert len(train) == 8 and len(val) == 4 and not train & val


def test_row_level_reasons_are_exact_for_a_users_file(tmp_path):
    """Mixed bad rows in one file: each reason counted once, good rows kept in order."""
    good = [own_row(i) for i in range(1, 8)]
    lines = [json.dumps(r) for r in good[:3]]
    lines += ['{"prompt": "x", "cot": ', "[1, 2]", json.dumps({**good[3], "cot": 7})]
    lines += [json.dumps(r) for r in good[3:]]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    loaded = load_examples(DataSpec("jsonl", path=str(path)))
    assert dict(loaded.counter.reasons) == {"bad_json": 1, "not_an_object": 1, "non_string": 1}
    assert len(loaded.examples) == 7
