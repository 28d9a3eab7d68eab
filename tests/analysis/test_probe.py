"""The closing probe: probe points cut from synthetic traces, log-prob offsets, the shipped tiny
base's closing, the CLI's probe.json and the report's column."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kdlite.analysis.probe import (
    CLOSING,
    POINTS,
    ProbeText,
    closing_ids,
    closing_probe,
    lead_tokens,
    probe_texts,
    score_closing,
)
from kdlite.data.example import Example
from kdlite.data.render import render_text
from kdlite.data.synthetic import boxed_answer, generate_examples

BASE = Path(__file__).parents[2] / "kdlite" / "assets" / "tiny-student-base"


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return generate_examples(60, seed=3)


def test_probe_points_are_cuts_of_the_rendered_trace(examples):
    usable = slips = 0
    for example in examples:
        texts = probe_texts(example)
        if texts is None:  # a slip: the first pass concludes a wrong value
            first = next(p for p in example.cot.split("\n\n") if p.startswith("First, "))
            assert f" {boxed_answer(example)} " not in first.rsplit(". ", 1)[-1] + " "
            slips += 1
            continue
        usable += 1
        text = render_text(example)
        closing = CLOSING.format(answer=boxed_answer(example))
        assert set(texts) == set(POINTS)
        first, recheck, think, end_think, end_recheck = (texts[p] for p in POINTS)
        for probe in (first, recheck, think, end_think, end_recheck):
            assert text.startswith(probe.context)
        assert first.context.endswith("at the end.") and "<think>\n" in first.context
        assert len(first.context) < len(recheck.context) < len(think.context)
        assert recheck.context.endswith("is right.")
        assert first.closing == recheck.closing == closing and first.end is None
        # the last point is the trace's own ending, exactly
        assert think.context + think.closing + "<|im_end|>\n" == text
        # the chat closing after the first pass: the trace's think end and answer, moved up
        assert end_think.context == first.context and end_think.end == "<|im_end|>"
        answer = example.answer.strip("\n")
        assert end_think.closing == f"\n</think>\n\n{answer}" and answer.endswith(closing.lstrip())
        # and after the re-check: the same closing where a completed check ends
        assert end_recheck.context == recheck.context
        assert (end_recheck.closing, end_recheck.end) == (end_think.closing, end_think.end)
        # the lead: the words that decide to close, before the answer
        assert first.lead == recheck.lead == " The answer is" and think.lead == "The answer is"
        assert end_think.lead == end_recheck.lead == "\n</think>"
    assert usable > 40 and slips > 0


def test_probe_refuses_traces_without_the_corpus_structure(examples):
    e = examples[0]
    bad = Example(e.prompt, e.cot.replace("First, ", "Initially, "), e.answer, "row-7")
    with pytest.raises(ValueError, match="row-7"):
        probe_texts(bad)


class _Oracle:
    """A fake LM whose logits at position t put all mass on ids[t + shift]."""

    def __init__(self, vocab: int, shift: int) -> None:
        self.vocab, self.shift = vocab, shift

    def __call__(self, input_ids: torch.Tensor):
        ids = input_ids[0]
        logits = torch.zeros(1, len(ids), self.vocab)
        for t in range(len(ids)):
            target = ids[min(len(ids) - 1, t + self.shift)]
            logits[0, t, target] = 30.0
        return SimpleNamespace(logits=logits)


def test_score_closing_scores_each_closing_token_from_the_position_before_it():
    ctx, closing = [5, 1, 7, 2], [3, 9, 4]
    lp, hits = score_closing(_Oracle(12, shift=1), ctx, closing)
    assert len(lp) == 3 and hits == [True] * 3 and max(lp) > -1e-6
    lp, hits = score_closing(_Oracle(12, shift=0), ctx, closing)  # off by one: all wrong
    assert hits == [False] * 3 and max(lp) < -25


def test_lead_tokens_counts_the_closings_first_tokens(embedded_tokenizer):
    ctx = "<think>\nFirst, Mia starts with 3 apples. So Mia has 12 apples at the end."
    probe = ProbeText(ctx, "\n</think>\n\nThe answer is \\boxed{12}.", lead="\n</think>")
    ids, closing = closing_ids(embedded_tokenizer, probe, end_id=99)
    k = lead_tokens(embedded_tokenizer, probe, ids, closing)
    assert 1 <= k < len(closing) - 1
    assert embedded_tokenizer.decode(closing[:k]) == "\n</think>"
    plain = ProbeText(ctx, " The answer")
    assert lead_tokens(embedded_tokenizer, plain, *closing_ids(embedded_tokenizer, plain, 99)) == 0
    wrong = ProbeText(ctx, " The answer", lead="\n</think>")
    with pytest.raises(ValueError, match="does not begin the closing"):
        lead_tokens(embedded_tokenizer, wrong, *closing_ids(embedded_tokenizer, wrong, 99))


def test_closing_ids_splits_on_the_context_boundary(embedded_tokenizer):
    probe = ProbeText("So Mia has 12 apples at the end.", " The answer is \\boxed{12}.")
    ctx, closing = closing_ids(embedded_tokenizer, probe, end_id=99)
    whole = embedded_tokenizer(probe.context + probe.closing, add_special_tokens=False)
    assert ctx + closing[:-1] == whole["input_ids"] and closing[-1] == 99
    assert embedded_tokenizer.decode(closing[:-1]) == probe.closing


def test_shipped_base_closes_its_think_block_and_answers(examples, embedded_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    result = closing_probe(model, embedded_tokenizer, examples, n=6, n_greedy=2, max_new_tokens=16)
    assert result["n"] == 6 and len(result["samples"]) == 2
    # the base read chat-layout solutions with a short think block (chat_share): after a first
    # pass it stops with an answer (ending the think block, or the way its plain step-by-step
    # solutions end), never a re-check; after `</think>` it states the answer
    think = result["points"]["after_think"]
    assert think["greedy_closes"] >= 0.5 and think["logprob"] > -3
    usable = [e for e in examples if probe_texts(e) is not None]
    for sample, example in zip(result["samples"], usable, strict=False):
        assert sample["id"] == example.source_id
        assert sample["after_first_pass"].startswith(("\n</think>\n\n", " The answer is \\boxed{"))
        assert sample["end_think_after_first_pass"] == sample["after_first_pass"]
    for point in POINTS:
        res = result["points"][point]
        assert res["logprob"] == pytest.approx(res["logprob_text"] + res["logprob_end"])
        assert res["logprob"] <= 0 and 0 <= res["greedy_closes"] <= 1
        # the lead is a prefix of the closing: at least as likely, and greedy writes it whenever
        # it writes the whole closing
        assert math.exp(res["logprob"]) <= res["p_lead"] * (1 + 1e-6) and res["p_lead"] <= 1
        assert res["greedy_closes"] <= res["lead_greedy"] <= 1
    with pytest.raises(ValueError, match="not one"):
        closing_probe(model, embedded_tokenizer, examples, n=1, end="The end")
    with pytest.raises(ValueError, match="usable traces"):
        closing_probe(model, embedded_tokenizer, examples[:3], n=5)


def test_cli_writes_probe_json_where_the_report_reads_it(tmp_path, monkeypatch):
    from kdlite.analysis.report import make_sweep, table_probe
    from kdlite.analysis.runs import load_runs
    from kdlite.cli import probe as cli
    from kdlite.eval.models import slug

    monkeypatch.chdir(BASE.parents[2])
    spec = "kdlite/assets/tiny-student-base"
    (out,) = cli.main([f"model={spec}", "n=2", "greedy=1", "max_new_tokens=4",
                       f"out_dir={tmp_path}"])  # fmt: skip
    assert out == tmp_path / slug(spec) / "probe.json"
    data = json.loads(out.read_text())
    assert data["model"] == spec and data["n"] == 2 and set(data["points"]) == set(POINTS)

    # a baseline dir as evaluate.py leaves it: the report shows the probe beside it
    results = tmp_path / slug(spec) / "eval" / "synthetic" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"avg_at_n": 0.5, "correct": [[1, 0]], "model": spec}))
    table = table_probe(make_sweep(load_runs(tmp_path)))
    row = next(line for line in table.splitlines() if slug(spec) in line)
    lp = data["points"]["after_recheck"]["logprob"]
    assert f"| {lp:.2f} (" in row and "| baseline |" in row
    assert "after first pass: log-prob (greedy closes); lead p" in table.splitlines()[0]
    p_lead = data["points"]["end_think_after_recheck"]["p_lead"]
    assert f"; lead {100 * p_lead:.0f}%" in row


def test_probe_traces_have_the_answer_form_the_run_was_trained_on(tmp_path):
    """answer_form=auto reads a run's data.synthetic_answer_form; the chat closing of a restate
    trace is its own answer sentence, not the chain."""
    from kdlite.cli.probe import answer_form_of, held_out_examples
    from kdlite.eval.models import resolve_model

    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "export" / "config.json").write_text("{}")
    (run / "config.yaml").write_text("data:\n  synthetic_answer_form: restate\n")
    ref = resolve_model(str(run), tmp_path / "eval")
    assert answer_form_of(ref, "auto") == "restate" and answer_form_of(ref, "chain") == "chain"
    (run / "config.yaml").write_text("data:\n  name: synthetic\n")  # a run from before the key
    assert answer_form_of(ref, "auto") == "chain"
    assert answer_form_of(resolve_model(str(BASE), tmp_path / "eval"), "auto") == "chain"

    (example,) = [e for e in held_out_examples(4, "restate") if probe_texts(e) is not None][:1]
    closing = probe_texts(example)["end_think_after_recheck"].closing
    y = boxed_answer(example)
    assert closing.startswith("\n</think>\n\n") and f" has {y} " in closing and " = " not in closing
