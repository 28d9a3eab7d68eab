import json

import pytest

from kdlite.analysis.judge import judge, parse_verdict
from kdlite.analysis.traces import analyse, write_traces_report
from kdlite.data.example import Example

EXAMPLES = [
    Example("Add 2 and 3.", "Wait, 2 + 3 = 5. Let me double-check: yes.", "\\boxed{5}", "t:0"),
    Example("Add 4 and 4.", "Hmm. 4 + 4 = 8. Wait, recheck: 8.", "So \\boxed{8}", "t:1"),
    Example("No box here.", "it is 3", "3", "t:2"),
]


def test_analyse_counts_reasons_and_means():
    summary = analyse(EXAMPLES)
    assert summary.n == 3 and len(summary.derivations) == 2
    assert summary.reasons == {"found": 2, "no_boxed_answer": 1}
    assert summary.mean("reflections_before") == pytest.approx(0.5)  # 1 ("Wait") and 0
    assert summary.mean("reflections_total") == pytest.approx(2.0)


def test_traces_report_with_judge_verdicts(tmp_path):
    from kdlite.data.stats import SectionStats

    stats = SectionStats("bespoke", 3, 100.0, 10.0, 70.0, 20.0)
    verdicts = [
        parse_verdict('{"cot_entails_prompt": true, "first_derivation": "2 + 3 = 5"}', EXAMPLES[0])
    ]
    path = write_traces_report("bespoke", EXAMPLES, tmp_path, token_stats=stats, verdicts=verdicts)
    text = path.read_text()
    assert "| ours | 3 | 100.0 | 10.0 (10.0%) | 70.0 (70.0%) | 20.0 (20.0%) |" in text
    assert "| paper | | 2165.3 |" in text  # Table 2, Bespoke
    assert "| answer position in CoT |" in text and "47.5%" in text  # paper's Bespoke position
    assert "| CoT entails P | 100% of 1 |" in text
    assert (tmp_path / "fig5_answer_position.png").read_bytes()[:4] == b"\x89PNG"


def test_verdict_parsing_locates_the_quote():
    ex = EXAMPLES[0]
    reply = 'Sure:\n```json\n{"cot_entails_prompt": true, "cot_entails_answer": false, "answer_matches_cot": "yes", "first_derivation": "2 +  3 = 5"}\n```'
    v = parse_verdict(reply, ex)
    assert (v.cot_entails_prompt, v.cot_entails_answer, v.answer_matches_cot) == (True, False, None)
    assert v.cot_rel == pytest.approx((ex.cot.index("= 5") + 3) / len(ex.cot))
    assert parse_verdict("no json", ex).cot_rel is None
    assert parse_verdict('{"first_derivation": "invented"}', ex).cot_rel is None


def test_judge_posts_an_openai_chat_request():
    sent = {}

    def fake_post(url, payload, api_key, timeout):
        sent.update(url=url, payload=payload)
        content = json.dumps({"cot_entails_prompt": True, "first_derivation": "2 + 3 = 5"})
        return {"choices": [{"message": {"content": content}}]}

    v = judge(EXAMPLES[0], "http://localhost:8000/v1/", "m", post=fake_post)
    assert sent["url"] == "http://localhost:8000/v1/chat/completions"
    assert sent["payload"]["model"] == "m" and sent["payload"]["temperature"] == 0.0
    assert "Add 2 and 3." in sent["payload"]["messages"][0]["content"]
    assert v.cot_entails_prompt is True and v.cot_rel is not None


def test_traces_cli_on_the_embedded_corpus(tmp_path):
    from kdlite.cli.traces import main

    path = main(
        ["data=synthetic", "data.synthetic_size=20", "limit=8", "tokenizer=none", f"out={tmp_path}"]
    )
    text = path.read_text()
    assert "Trace analysis: synthetic (8 examples)" in text
    assert "| found (of examples) | 8/8 |" in text  # the corpus always derives, with a cue
