"""Adapters on rows in each dataset's real layout, rejection reasons, and every way of loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdlite.data.example import DataError, Example, RowRejected, make_source_id
from kdlite.data.sources import (
    DATASETS,
    adapt_jsonl,
    adapt_nemotron,
    adapt_synthetic1,
    adapt_thought_solution,
    load_examples,
)
from kdlite.data.spec import DataSpec

# fixture file -> (accepted row indices, rejections by reason, filtered by reason)
EXPECTED = {
    "openthoughts": (
        [0, 1, 3, 6, 7],
        {"missing_field": 1, "unclosed_thought": 1, "several_assistant_turns": 1},
        {},
    ),
    "bespoke": (
        [0, 2, 5, 6, 8],
        {"wrong_roles": 1, "non_string": 1, "duplicate_thought": 1, "empty_cot": 1},
        {},
    ),
    "skyt1": (
        [0, 2, 4, 7, 8],
        {"no_thought": 1, "empty_answer": 1, "text_outside_tags": 1, "empty_prompt": 1},
        {},
    ),
    "synthetic1": (
        [0, 3, 6, 8, 10],
        {"unclosed_think": 1, "missing_field": 1, "empty_cot": 1, "duplicate_think": 1},
        {"task_type_filtered": 2},
    ),
    "nemotron": (
        [0, 1, 4, 6, 8],
        {"empty_cot": 1, "wrong_roles": 1, "no_think": 1, "non_string": 1},
        {},
    ),
    "jsonl": (
        [0, 1, 4, 6, 8],
        {"bad_json": 1, "non_string": 1, "unclosed_think": 1, "reserved_marker": 1},
        {},
    ),
}
FILES = {name: f"{name}.jsonl" for name in EXPECTED} | {"jsonl": "own.jsonl"}


def fixture_rows(data_dir: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (data_dir / FILES[name]).read_text().splitlines()]


def ts(thought: str, solution: str) -> str:
    return (
        f"<|begin_of_thought|>\n\n{thought}\n\n<|end_of_thought|>\n\n"
        f"<|begin_of_solution|>\n\n{solution}\n\n<|end_of_solution|>"
    )


def conv(user, assistant) -> dict:
    return {"system": "sys", "conversations": [{"from": "user", "value": user}, assistant]}


def asst(value) -> dict:
    return {"from": "assistant", "value": value}


# ---------------------------------------------------------------------------------------------
# Fixture files: exact examples and counts per dataset
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_counts(data_dir, name):
    indices, reasons, filtered = EXPECTED[name]
    loaded = load_examples(DataSpec(name, path=str(data_dir / FILES[name])))
    assert [int(e.source_id.split(":")[1]) for e in loaded.examples] == indices
    assert dict(loaded.counter.reasons) == reasons
    assert dict(loaded.filtered) == filtered
    assert loaded.counter.seen == len(indices) + sum(reasons.values())
    assert loaded.location == str(data_dir / FILES[name])
    assert loaded.hf_config is None and loaded.revision is None
    for e in loaded.examples:
        index = int(e.source_id.split(":")[1])
        assert e.source_id == make_source_id(name, index, e.prompt, e.cot, e.answer)


def test_thought_solution_example(data_dir):
    loaded = load_examples(DataSpec("bespoke", path=str(data_dir / "bespoke.jsonl")))
    assert loaded.examples[1] == Example(
        prompt="Return your final response within \\boxed{}. What is 12 + 13?",
        cot="Okay, 12 plus 13 is 25. Wait, let me check: 25 - 13 = 12. Yes.",
        answer="The sum is \\boxed{25}.",
        source_id=make_source_id(
            "bespoke",
            2,
            "Return your final response within \\boxed{}. What is 12 + 13?",
            "Okay, 12 plus 13 is 25. Wait, let me check: 25 - 13 = 12. Yes.",
            "The sum is \\boxed{25}.",
        ),
    )


def test_synthetic1_example(data_dir):
    loaded = load_examples(DataSpec("synthetic1", path=str(data_dir / "synthetic1.jsonl")))
    e = loaded.examples[1]
    assert (e.prompt, e.cot, e.answer) == (
        "Solve: what is 4 times 3?",
        "4 times 3 is 12. Let me verify: 12 / 3 = 4.",
        "The answer is \\boxed{12}.",
    )
    assert e.source_id.startswith("synthetic1:3:")


def test_nemotron_drops_system_message(data_dir):
    loaded = load_examples(DataSpec("nemotron", path=str(data_dir / "nemotron.jsonl")))
    e = loaded.examples[0]
    assert (e.prompt, e.cot, e.answer) == (
        "Solve the following math problem. Make sure to put the answer (and only answer) inside "
        "\\boxed{}.\n\nFind 1 squared.",
        "I need 1 squared, which is 1.",
        "\\boxed{1}",
    )


def test_jsonl_fields_and_messages(data_dir):
    loaded = load_examples(DataSpec("jsonl", path=str(data_dir / "own.jsonl")))
    got = [(e.prompt, e.cot, e.answer) for e in loaded.examples]
    assert got == [
        ("What is 6 * 7?", "6 * 7 = 42. Check: 42 / 7 = 6.", "\\boxed{42}"),
        ("What is 2 ** 5?", "2 ** 5 = 32.", "\\boxed{32}"),
        ("What is 10 - 3?", "10 - 3 = 7.", "\\boxed{7}"),
        ("What is 12 / 4?", "12 / 4 = 3.", "\\boxed{3}"),
        ("What is 3 * 3?", "3 * 3 = 9.", "\\boxed{9}"),
    ]
    assert loaded.counter.first_bad[0] == (2, "bad_json: own.jsonl:3: Expecting value")


# ---------------------------------------------------------------------------------------------
# Adapters, one rejection reason at a time
# ---------------------------------------------------------------------------------------------

GOOD_TS = ts("think", "solve")

THOUGHT_SOLUTION_BAD = [
    ({"system": "s"}, "missing_field"),
    ({"conversations": "user: hi"}, "bad_messages"),
    ({"conversations": [{"from": "user", "value": "q"}, {"from": "assistant"}]}, "missing_field"),
    (conv(["q"], asst(GOOD_TS)), "non_string"),
    (conv("q", asst(None)), "missing_field"),
    ({"conversations": [asst(GOOD_TS), {"from": "user", "value": "q"}]}, "wrong_roles"),
    ({"conversations": [{"from": "human", "value": "q"}, asst(GOOD_TS)]}, "wrong_roles"),
    ({"conversations": [{"from": "user", "value": "q"}]}, "wrong_roles"),
    (
        {"conversations": [{"from": "user", "value": "q"}, asst(GOOD_TS), asst(GOOD_TS)]},
        "several_assistant_turns",
    ),
    (conv("q", asst("just an answer")), "no_thought"),
    (conv("q", asst("<|begin_of_thought|>think")), "unclosed_thought"),
    (
        conv("q", asst("t<|end_of_thought|><|begin_of_solution|>s<|end_of_solution|>")),
        "unopened_thought",
    ),
    (conv("q", asst(GOOD_TS + GOOD_TS)), "duplicate_thought"),
    (
        conv("q", asst("<|begin_of_thought|>t<|end_of_thought|>no solution tags")),
        "no_solution",
    ),
    (
        conv("q", asst("<|begin_of_thought|>t<|end_of_thought|><|begin_of_solution|>s")),
        "unclosed_solution",
    ),
    (
        conv(
            "q",
            asst(
                "<|begin_of_solution|>s<|end_of_solution|><|begin_of_thought|>t<|end_of_thought|>"
            ),
        ),
        "tag_order",
    ),
    (conv("q", asst("preamble " + GOOD_TS)), "text_outside_tags"),
    (conv("q", asst(GOOD_TS + " trailing")), "text_outside_tags"),
    (conv(" \n", asst(GOOD_TS)), "empty_prompt"),
    (conv("q", asst(ts("\n", "s"))), "empty_cot"),
    (conv("q", asst(ts("t", " "))), "empty_answer"),
    (conv("q", asst(ts("t <think> t", "s"))), "reserved_marker"),
    (conv("<|im_start|>user", asst(GOOD_TS)), "reserved_marker"),
]


@pytest.mark.parametrize(("row", "reason"), THOUGHT_SOLUTION_BAD)
def test_thought_solution_rejects(row, reason):
    with pytest.raises(RowRejected) as info:
        adapt_thought_solution(row, "bespoke", 7)
    assert info.value.reason == reason


def test_thought_solution_strips_whitespace_only():
    row = conv("  What?  ", asst("\n" + ts(" a\nb ", "\\boxed{1}") + "\n"))
    assert adapt_thought_solution(row, "skyt1", 3) == Example(
        "What?", "a\nb", "\\boxed{1}", make_source_id("skyt1", 3, "What?", "a\nb", "\\boxed{1}")
    )


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("the answer is 3", "no_think"),
        ("<think>still thinking", "unclosed_think"),
        ("thinking</think>3", "unopened_think"),
        ("</think><think>x", "unopened_think"),
        ("<think>a</think><think>b</think>3", "duplicate_think"),
        ("Sure! <think>a</think>3", "text_outside_tags"),
        ("<think> </think>3", "empty_cot"),
        ("<think>a</think>\n\n", "empty_answer"),
        (7, "non_string"),
        (None, "missing_field"),
    ],
)
def test_synthetic1_rejects(response, reason):
    with pytest.raises(RowRejected) as info:
        adapt_synthetic1({"prompt": "q", "llm_response": response}, "synthetic1", 0)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "wrong_roles"),
        ([{"role": "system", "content": "s"}], "wrong_roles"),
        ([], "wrong_roles"),
        ([{"role": "user", "content": 5}], "non_string"),
        ("q", "bad_messages"),
    ],
)
def test_nemotron_rejects(messages, reason):
    with pytest.raises(RowRejected) as info:
        adapt_nemotron({"input": messages, "output": "<think>a</think>b"}, "nemotron", 0)
    assert info.value.reason == reason


def test_jsonl_messages_rejects_several_assistant_turns():
    reply = {"role": "assistant", "content": "<think>a</think>b"}
    row = {"messages": [{"role": "user", "content": "q"}, reply, reply]}
    with pytest.raises(RowRejected, match="several_assistant_turns"):
        adapt_jsonl(row, "jsonl", 0)


# ---------------------------------------------------------------------------------------------
# Loader errors
# ---------------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_unknown_dataset_lists_names_before_io(monkeypatch):
    import datasets

    def no_io(*args, **kwargs):
        raise AssertionError("no I/O for an unknown name")

    monkeypatch.setattr(datasets, "load_dataset", no_io)
    with pytest.raises(DataError) as info:
        load_examples(DataSpec("openthought", path="/does/not/exist.jsonl"))
    assert str(info.value) == (
        "unknown dataset 'openthought'; valid names: ['bespoke', 'jsonl', 'nemotron', "
        "'openthoughts', 'skyt1', 'synthetic', 'synthetic1']"
    )


def test_missing_column_names_it_and_the_columns_found(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"system": "s", "messages": []}])
    with pytest.raises(DataError) as info:
        load_examples(DataSpec("openthoughts", path=str(path)))
    assert "column(s) ['conversations'] not found" in str(info.value)
    assert "columns found: ['messages', 'system']" in str(info.value)


def test_jsonl_missing_column_names_closest_layout(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "p", "cot": "c", "solution": "a"}])
    with pytest.raises(DataError) as info:
        load_examples(DataSpec("jsonl", path=str(path)))
    assert "column(s) ['answer'] not found" in str(info.value)
    assert "['answer', 'cot', 'prompt'] or ['messages']" in str(info.value)


def test_task_type_column_required_when_filtering(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "p", "llm_response": "<think>c</think>a"}])
    with pytest.raises(DataError, match=r"column\(s\) \['task_type'\] not found"):
        load_examples(DataSpec("synthetic1", path=str(path)))


def test_majority_rejected_names_first_bad_rows(tmp_path):
    good = {"prompt": "p", "cot": "c", "answer": "a"}
    rows = [
        {"prompt": "p", "cot": "", "answer": "a"},
        good,
        {"prompt": 1, "cot": "c", "answer": "a"},
    ]
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_examples(DataSpec("jsonl", path=str(path)))
    message = str(info.value)
    assert message.startswith("jsonl: 2 of 3 rows rejected")
    assert "First bad rows: row 0: empty_cot; row 2: non_string: prompt is int" in message


def test_half_rejected_is_not_an_error(tmp_path):
    rows = [{"prompt": "p", "cot": "c", "answer": "a"}, {"prompt": "p", "cot": "c", "answer": ""}]
    loaded = load_examples(DataSpec("jsonl", path=str(write_jsonl(tmp_path / "x.jsonl", rows))))
    assert len(loaded.examples) == 1 and dict(loaded.counter.reasons) == {"empty_answer": 1}


def test_task_types_configurable_and_filtered_rows_are_not_errors(data_dir):
    path = str(data_dir / "synthetic1.jsonl")
    loaded = load_examples(DataSpec("synthetic1", path=path, task_types=["code_output_prediction"]))
    assert [e.source_id.split(":")[1] for e in loaded.examples] == ["1"]
    assert dict(loaded.filtered) == {"task_type_filtered": 10}
    assert loaded.counter.seen == 1 and loaded.counter.rejected == 0
    with pytest.raises(DataError) as info:
        load_examples(DataSpec("synthetic1", path=path, task_types=["svg"]))
    assert "task types found: {'verifiable_math': 9, 'code_output_prediction': 1, " in str(
        info.value
    )


def test_limit_reads_the_first_rows(data_dir):
    loaded = load_examples(DataSpec("skyt1", path=str(data_dir / "skyt1.jsonl"), limit=3))
    assert [e.source_id.split(":")[1] for e in loaded.examples] == ["0", "2"]
    assert dict(loaded.counter.reasons) == {"no_thought": 1}


def test_missing_local_path_and_jsonl_without_path():
    with pytest.raises(DataError, match="local path ./nope.jsonl does not exist"):
        load_examples(DataSpec("bespoke", path="./nope.jsonl"))
    with pytest.raises(DataError, match=r"set data.path=/path/to/file.jsonl"):
        load_examples(DataSpec("jsonl"))


def test_hub_load_arguments_and_revision(monkeypatch, data_dir):
    import datasets

    rows = {
        "nvidia/Llama-Nemotron-Post-Training-Dataset": good_rows(data_dir, "nemotron")[:3],
        "someone/their-copy": good_rows(data_dir, "bespoke"),
    }
    calls = []

    def fake_load_dataset(path, name=None, split=None, revision=None):
        calls.append((path, name, split, revision))
        return datasets.Dataset.from_list(rows[path])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load_examples(DataSpec("nemotron", revision="v1.1"))
    assert calls == [("nvidia/Llama-Nemotron-Post-Training-Dataset", "SFT", "math", "v1.1")]
    assert loaded.location == "nvidia/Llama-Nemotron-Post-Training-Dataset"
    assert (loaded.hf_config, loaded.split, loaded.revision) == ("SFT", "math", "v1.1")
    assert [e.source_id.split(":")[1] for e in loaded.examples] == ["0", "1", "2"]
    assert loaded.fingerprint is not None

    load_examples(DataSpec("bespoke", path="someone/their-copy", split="test", hf_config="x"))
    assert calls[-1] == ("someone/their-copy", "x", "test", None)


def test_hub_revision_read_from_cache_path():
    from kdlite.data.sources import _hub_revision

    class FakeDataset:
        cache_files = [
            {"filename": "/c/open-thoughts___x/default/0.0.0/" + "ab12" * 10 + "/x.arrow"}
        ]

    assert _hub_revision(FakeDataset()) == "ab12" * 10


def test_hub_failure_says_how_to_use_a_local_copy(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub (offline mode)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        load_examples(DataSpec("openthoughts"))
    message = str(info.value)
    assert "could not load open-thoughts/OpenThoughts-114k" in message
    assert "ConnectionError: Couldn't reach the Hub (offline mode)" in message
    assert "data.path=/path/to/file.jsonl" in message


# ---------------------------------------------------------------------------------------------
# Local formats: parquet, .json list, folders, save_to_disk
# ---------------------------------------------------------------------------------------------


def good_rows(data_dir: Path, name: str) -> list[dict]:
    indices = EXPECTED[name][0]
    return [r for i, r in enumerate(fixture_rows(data_dir, name)) if i in indices]


def triples(loaded) -> list[tuple[str, str, str]]:
    return [(e.prompt, e.cot, e.answer) for e in loaded.examples]


def test_parquet_file_and_json_list(tmp_path, data_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = good_rows(data_dir, "openthoughts")
    reference = load_examples(DataSpec("openthoughts", path=str(data_dir / "openthoughts.jsonl")))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    from_parquet = load_examples(DataSpec("openthoughts", path=str(tmp_path / "train.parquet")))
    assert triples(from_parquet) == triples(reference)
    assert [e.source_id.split(":")[1] for e in from_parquet.examples] == ["0", "1", "2", "3", "4"]

    (tmp_path / "rows.json").write_text(json.dumps(rows))
    from_json = load_examples(DataSpec("openthoughts", path=str(tmp_path / "rows.json")))
    assert triples(from_json) == triples(reference)


def test_parquet_missing_column_fails_before_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.Table.from_pylist([{"problem": "p", "solution": "s"}]), tmp_path / "a.parquet"
    )
    with pytest.raises(DataError, match=r"columns found: \['problem', 'solution'\]"):
        load_examples(DataSpec("nemotron", path=str(tmp_path)))


def test_folder_of_files_keeps_global_row_index(tmp_path, data_dir):
    rows = good_rows(data_dir, "skyt1")
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "part-0.jsonl", rows[:2])
    write_jsonl(folder / "part-1.jsonl", rows[2:])
    (folder / "notes.txt").write_text("ignored")
    loaded = load_examples(DataSpec("skyt1", path=str(folder)))
    assert [e.source_id.split(":")[1] for e in loaded.examples] == ["0", "1", "2", "3", "4"]
    assert triples(loaded)[2][0] == "Return your final response within \\boxed{}. What is 24 + 25?"


def test_save_to_disk_dataset_and_dict(tmp_path, data_dir):
    import datasets

    rows = good_rows(data_dir, "synthetic1")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    loaded = load_examples(DataSpec("synthetic1", path=str(tmp_path / "ds")))
    assert len(loaded.examples) == 5 and loaded.fingerprint is not None
    assert triples(loaded)[0] == (
        "Solve: what is 1 times 3?",
        "1 times 3 is 3. Let me verify: 3 / 3 = 1.",
        "The answer is \\boxed{3}.",
    )

    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows[:2]), "math": datasets.Dataset.from_list(rows)}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(load_examples(DataSpec("synthetic1", path=str(tmp_path / "dd"))).examples) == 2
    math = load_examples(DataSpec("synthetic1", path=str(tmp_path / "dd"), split="math"))
    assert len(math.examples) == 5
    with pytest.raises(DataError, match=r"no split 'val'; splits found: \['math', 'train'\]"):
        load_examples(DataSpec("synthetic1", path=str(tmp_path / "dd"), split="val"))


def test_dataset_table_matches_the_study():
    sizes = {name: (d.study_train_size, d.study_val_size) for name, d in DATASETS.items()}
    assert sizes == {
        "openthoughts": (40000, 1000),
        "bespoke": (8000, 1000),
        "synthetic1": (16000, 1000),
        "nemotron": (16000, 1000),
        "skyt1": (8000, 1000),
        "jsonl": (None, None),
        "synthetic": (None, None),
    }
    assert (DATASETS["nemotron"].hf_config, DATASETS["nemotron"].split) == ("SFT", "math")


# ---------------------------------------------------------------------------------------------
# The embedded corpus (written concurrently; tested only once it exists)
# ---------------------------------------------------------------------------------------------


def test_synthetic_source():
    generate_examples = pytest.importorskip("kdlite.data.synthetic").generate_examples
    loaded = load_examples(DataSpec("synthetic", synthetic_size=6, seed=3))
    assert len(loaded.examples) == 6 and loaded.counter.seen == 6
    assert loaded.location == "embedded" and loaded.revision == "embedded"
    assert loaded.examples == generate_examples(n=6, seed=3)
    capped = load_examples(DataSpec("synthetic", synthetic_size=6, seed=3, limit=4))
    assert capped.examples == generate_examples(n=4, seed=3)
    with pytest.raises(DataError, match="synthetic_size"):
        load_examples(DataSpec("synthetic"))


def test_accepts_the_composed_data_config(data_dir):
    from omegaconf import OmegaConf

    from kdlite.config import data_spec

    conf = Path(__file__).resolve().parents[2] / "conf" / "data"
    cfg = OmegaConf.load(conf / "synthetic1.yaml")
    cfg.path = str(data_dir / "synthetic1.jsonl")
    spec = data_spec(cfg)
    assert isinstance(spec, DataSpec) and spec.task_types == ["verifiable_math"]
    loaded = load_examples(spec)
    assert len(loaded.examples) == 5 and dict(loaded.filtered) == {"task_type_filtered": 2}


def test_the_data_config_has_one_shape():
    """The YAML schema is DataSpec: a composed config's `data` node converts to one, and a key
    DataSpec lacks is refused by name."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError

    from kdlite.config import compose_train, data_spec

    composed = compose_train(["data=synthetic1", "data.train_size=7"])
    assert OmegaConf.get_type(composed.data) is DataSpec
    spec = data_spec(composed.data)
    assert isinstance(spec, DataSpec) and (spec.name, spec.train_size) == ("synthetic1", 7)
    assert spec.task_types == ["verifiable_math"] and spec.split == "train"
    with pytest.raises(ConfigKeyError, match="pathh"):
        data_spec(OmegaConf.create({"name": "jsonl", "pathh": "rows.jsonl"}))
