import json

import pytest

from kdlite.eval.benchmarks import EvalError
from kdlite.eval.store import GenerationStore

PROTO = {"model": "m", "n_samples": 2}


def rec(pid, s):
    return {
        "id": pid,
        "sample": s,
        "text": f"{pid}-{s}",
        "n_tokens": 3,
        "finish_reason": "stop",
        "seed": 1,
        "backend": "x",
        "versions": {},
    }


def test_append_and_resume(tmp_path):
    st = GenerationStore(tmp_path, PROTO)
    st.append([rec("a", 0), rec("a", 1)])
    st.append([rec("a", 1), rec("b", 0)])  # a duplicate is never written twice
    again = GenerationStore(tmp_path, PROTO)
    assert len(again) == 3 and ("b", 0) in again and ("b", 1) not in again
    lines = (tmp_path / "generations.jsonl").read_text().splitlines()
    assert [(json.loads(x)["id"], json.loads(x)["sample"]) for x in lines] == [
        ("a", 0),
        ("a", 1),
        ("b", 0),
    ]


def test_truncated_last_line_is_dropped_and_file_repaired(tmp_path):
    st = GenerationStore(tmp_path, PROTO)
    st.append([rec("a", 0)])
    with (tmp_path / "generations.jsonl").open("a") as f:
        f.write('{"id": "a", "sample": 1, "te')  # killed mid-write
    st = GenerationStore(tmp_path, PROTO)
    assert len(st) == 1 and ("a", 1) not in st
    st.append([rec("a", 1)])
    assert len(GenerationStore(tmp_path, PROTO)) == 2


def test_unterminated_valid_last_line_is_kept(tmp_path):
    (tmp_path / "generations.jsonl").write_text(json.dumps(rec("a", 0)))
    (tmp_path / "protocol.json").write_text(json.dumps(PROTO))
    st = GenerationStore(tmp_path, PROTO)
    st.append([rec("a", 1)])
    assert len(GenerationStore(tmp_path, PROTO)) == 2


def test_corrupt_middle_line_is_an_error(tmp_path):
    (tmp_path / "generations.jsonl").write_text("garbage\n" + json.dumps(rec("a", 0)) + "\n")
    (tmp_path / "protocol.json").write_text(json.dumps(PROTO))
    with pytest.raises(EvalError, match="corrupt"):
        GenerationStore(tmp_path, PROTO)


def test_other_protocol_is_refused(tmp_path):
    GenerationStore(tmp_path, PROTO).append([rec("a", 0)])
    with pytest.raises(EvalError, match="n_samples"):
        GenerationStore(tmp_path, {"model": "m", "n_samples": 4})
