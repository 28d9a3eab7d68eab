"""Bad evaluation inputs: stored generations of unknown protocol, lines that are not records, and
sampling values that make no sense: each an error naming the file/line or key, before a model
loads."""

from __future__ import annotations

import json

import pytest
from reliability_helpers import compose_eval, small

from kdlite.eval.benchmarks import EvalError
from kdlite.eval.store import GenerationStore

PROTO = {"model": "m", "n_samples": 2, "max_new_tokens": 16}


def rec(pid: str, s: int, **over) -> dict:
    return {"id": pid, "sample": s, "text": f"{pid}-{s}", "n_tokens": 3, "finish_reason": "stop",
            "seed": 1, "backend": "x", "versions": {}, **over}  # fmt: skip


# ---- protocol of stored generations -----------------------------------------------------------
def test_generations_without_protocol_are_refused(tmp_path):
    """Before: protocol.json was (re)written for the new settings and the old samples reused."""
    (tmp_path / "generations.jsonl").write_text(json.dumps(rec("a", 0)) + "\n")
    with pytest.raises(EvalError, match=r"generations\.jsonl exists but protocol\.json does not"):
        GenerationStore(tmp_path, PROTO)
    assert not (tmp_path / "protocol.json").exists()  # nothing was blessed by the refusal


def test_unreadable_protocol_is_refused(tmp_path):
    (tmp_path / "generations.jsonl").write_text(json.dumps(rec("a", 0)) + "\n")
    (tmp_path / "protocol.json").write_text('{"model": "m", "n_sa')
    with pytest.raises(EvalError, match=r"protocol\.json is not readable JSON"):
        GenerationStore(tmp_path, PROTO)


def test_empty_generations_without_protocol_start_fresh(tmp_path):
    (tmp_path / "generations.jsonl").write_text("")
    store = GenerationStore(tmp_path, PROTO)
    assert len(store) == 0 and json.loads((tmp_path / "protocol.json").read_text()) == PROTO


def test_rerun_with_other_settings_and_no_protocol_is_refused(tmp_path, tiny_model):
    """The issue's case: max_new_tokens 6 then 8, protocol.json missing in between."""
    from kdlite.eval.run import evaluate

    out = tmp_path / "ev"
    evaluate(compose_eval(*small(f"model={tiny_model}", f"out_dir={out}")))
    (gens,) = out.glob("*/eval/jsonl/generations.jsonl")
    before = gens.read_bytes()
    (gens.parent / "protocol.json").unlink()
    with pytest.raises(EvalError, match="protocol.json does not"):
        evaluate(compose_eval(*small(f"model={tiny_model}", f"out_dir={out}", "max_new_tokens=8")))
    assert gens.read_bytes() == before


# ---- lines that are JSON but not records ------------------------------------------------------
@pytest.mark.parametrize(
    "bad,needle",
    [
        (
            {k: v for k, v in rec("b", 0).items() if k != "sample"},
            "generation record without 'sample'",
        ),
        (rec("b", "zero"), "sample='zero' is a str, expected int"),
        ({k: v for k, v in rec("b", 0).items() if k != "text"}, "generation record without 'text'"),
        (rec("b", 0, n_tokens=None), "n_tokens=None"),
        (rec("b", True), "sample=True"),
        ([1, 2], "a JSON list, not a generation record"),
    ],
)
@pytest.mark.parametrize("where", ["middle", "last"])
def test_line_that_is_not_a_record_names_file_and_line(tmp_path, bad, needle, where):
    """Before: KeyError: 'sample' / ValueError from int('zero'), no file or line."""
    lines = [rec("a", 0), bad, rec("a", 1)] if where == "middle" else [rec("a", 0), bad]
    (tmp_path / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (tmp_path / "protocol.json").write_text(json.dumps(PROTO))
    with pytest.raises(EvalError) as err:
        GenerationStore(tmp_path, PROTO)
    assert f"generations.jsonl:2: {needle}" in str(err.value)


# ---- sampling values --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override", ["temperature=nan", "temperature=inf", "temperature=-1", "top_p=nan"]
)
def test_bad_sampling_fails_before_the_model_loads(tmp_path, monkeypatch, override):
    """Before: `temperature=nan` failed only after the model loaded."""
    import kdlite.eval.run as run_mod

    monkeypatch.setattr(run_mod, "resolve_model", lambda *a, **k: pytest.fail("model resolved"))
    with pytest.raises(EvalError, match=r"invalid sampling .*finite temperature"):
        run_mod.evaluate(compose_eval(*small("model=unused", override)))
