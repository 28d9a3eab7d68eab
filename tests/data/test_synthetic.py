"""The embedded corpus: determinism, trace structure (answer mid-CoT, then a checked re-derivation),
and a benchmark that never overlaps the training prompts."""

from __future__ import annotations

import random
import re
import statistics
from itertools import islice

import pytest

from kdlite.data.synthetic import (
    CUE_RE,
    _problems,
    answer_position,
    boxed_answer,
    generate_base_documents,
    generate_benchmark,
    generate_examples,
    is_benchmark_problem,
    think_conclusion,
)

EQ_RE = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def test_same_seed_same_text_different_seed_different():
    a, b, c = generate_examples(50, 3), generate_examples(50, 3), generate_examples(50, 4)
    assert a == b
    assert [e.prompt for e in a] != [e.prompt for e in c]
    assert len({e.prompt for e in a} & {e.prompt for e in c}) < 5
    assert generate_examples(10, 3) == a[:10]  # prefix-stable
    assert generate_benchmark(20, 1) == generate_benchmark(20, 1)
    assert generate_benchmark(20, 1) != generate_benchmark(20, 2)


def test_source_ids_are_unique_and_synthetic():
    ex = generate_examples(200, 0)
    assert len({e.source_id for e in ex}) == 200
    assert all(e.source_id.startswith(f"synthetic:{i}:") for i, e in enumerate(ex))
    assert len({e.prompt for e in ex}) == 200


def test_trace_structure():
    ex = generate_examples(300, 11)
    slips = 0
    for e in ex:
        y = boxed_answer(e)
        # paragraphs: restatement, first pass (with its self-checks), re-check, ..., conclusion
        recheck_at = e.cot.index("\n\n", e.cot.index("\n\n") + 2) + 2
        cue = CUE_RE.search(e.cot, recheck_at)
        # the re-check opens on a cue, in its first sentence
        assert cue is not None and cue.start() < e.cot.index(".", recheck_at), e.cot
        first = re.search(rf"= {y}(?!\d)", e.cot)
        assert first is not None
        if "made a slip" in e.cot:
            slips += 1
            # the first pass ended on a wrong value; the check corrects it after the cue
            assert first.start() > cue.start()
        else:
            assert first.end() < cue.start(), e.cot  # derived before the re-check starts
        # every equation in CoT and answer is correct arithmetic, except the one slip
        wrong = 0
        for m in EQ_RE.finditer(e.cot + e.answer):
            x, op, k, r = int(m[1]), m[2], int(m[3]), int(m[4])
            true = {"+": x + k, "-": x - k, "*": x * k, "/": x // k if k else -1}[op]
            assert op != "/" or x % k == 0
            wrong += true != r
        assert wrong == ("made a slip" in e.cot)
        # the answer section's chain ends on the boxed answer, values stay small
        chain = EQ_RE.findall(e.answer)
        assert 2 <= len(chain) <= 4 and int(chain[-1][3]) == y
        assert all(0 < int(v) <= 99 for m in chain for v in (m[0], m[3]))
    assert 20 <= slips <= 80  # ~15% of 300


def test_restatement_and_reflection_cues():
    for e in generate_examples(100, 2):
        restate = e.cot.split("\n\n")[0]
        start = re.match(r"(\w+) has (\d+) ", e.prompt)
        assert f"{start[1]} starts with {start[2]} " in restate
        assert re.search(r"Wait|recheck|double-check", e.cot.split("\n\n", 2)[2])
        assert e.answer.endswith(f"\\boxed{{{boxed_answer(e)}}}.")


PAPER_CUES = re.compile(
    r"\b(recheck|rethink|reassess|reevaluate|re-evaluate|reevaluation|re-examine|reexamine|"
    r"reconsider|reanalyze|double-check|check again|think again|verify again|go over the steps|"
    r"wait)\b",
    re.IGNORECASE,
)


def test_first_pass_holds_resolved_self_checks_as_in_table_6():
    """2-5 self-checks inside the first pass, before the answer's first derivation, each resolved
    on the spot with one of the study's cue keywords; mean near Table 6's 1.91-5.13 (median 2.42)."""
    counts = []
    for e in generate_examples(400, 7):
        first_pass = e.cot.split("\n\n")[1]
        assert first_pass.startswith("First, ")
        y = boxed_answer(e)
        derivation = re.search(rf"= {y}(?!\d)", first_pass)
        before = first_pass[: derivation.start()] if derivation else first_pass
        checks = [s for s in re.split(r"(?<=[.?]) ", before) if PAPER_CUES.search(s)]
        n = sum(len(PAPER_CUES.findall(s)) for s in checks)
        assert all(len(PAPER_CUES.findall(s)) == 1 for s in checks), checks
        assert 2 <= n <= 5, first_pass
        counts.append(n)
        # resolved: every check ends in a confirmation before the pass goes on
        for m in PAPER_CUES.finditer(before):
            rest = before[m.end() :]
            assert re.match(r"[^.?]*[.?]( [^.]*?)?(Yes|Good|Right|Fine)\.", rest), rest
    assert 2.4 <= statistics.mean(counts) <= 3.0


def test_verification_restates_the_answer_and_unterminated_gold_traces_grade_right():
    """The trace closes by restating the answer, and a gold CoT cut before `</think>` (what a
    truncated generation looks like) is graded right by the whole-text grader: no cue wording puts
    a backward value after the word "answer" (the old "recheck the answer ... going back from"
    trap graded 92 of 300 such traces wrong)."""
    from kdlite.eval.grade import grade_sample

    for e in generate_examples(60, 0):
        y = boxed_answer(e)
        assert f"answer is {y}" in e.cot.split("\n\n")[-1]
        assert "the answer in" not in e.cot
        assert grade_sample(str(y), e.cot)[0], e.cot


def test_answer_reached_mid_cot():
    pos = [answer_position(e) for e in generate_examples(500, 5)]
    assert 0.45 <= statistics.mean(pos) <= 0.55
    assert min(pos) > 0.25 and max(pos) < 0.8
    assert statistics.pstdev(pos) > 0.03  # varied, not a fixed spot


def test_benchmark_disjoint_from_training_for_any_seed():
    train = {e.prompt for s in range(4) for e in generate_examples(300, s)}
    for s in range(4):
        bench = generate_benchmark(60, s)
        assert not {b["problem"] for b in bench} & train
        for b in bench:
            assert b["answer"].isdigit() and b["id"].startswith("synthetic-bench:")
    # by construction: the split is on the arithmetic, so no wording can leak a problem across
    rng = random.Random(0)
    bench_keys = [p.key for p in islice(_problems(rng, benchmark=True), 300)]
    train_keys = [p.key for p in islice(_problems(rng, benchmark=False), 3000)]
    assert all(map(is_benchmark_problem, bench_keys))
    assert not any(map(is_benchmark_problem, train_keys))
    assert len(set(bench_keys)) == 300
    assert not set(train_keys) & set(bench_keys)


def _solve(problem: str) -> int:
    """An independent reading of the problem wording."""
    x = 0
    for sent in re.split(r"(?<=[.?]) ", problem):
        if m := re.search(r" has (\d+) \w", sent):
            x = int(m[1])
        elif m := re.search(r" (\d+) more ", sent):
            x += int(m[1])
        elif m := re.search(r" (\d+) of them", sent):
            x -= int(m[1])
        elif m := re.search(r"into (\d+) bags", sent):
            x //= int(m[1])
        elif "doubles" in sent or "triples" in sent or "times as many" in sent:
            m = re.search(r"(\d+) times", sent)
            x *= int(m[1]) if m else (2 if "doubles" in sent else 3)
    return x


def test_answers_match_the_problem_wording():
    for b in generate_benchmark(100, 0):
        assert str(_solve(b["problem"])) == b["answer"], b
    for e in generate_examples(100, 0):
        assert _solve(e.prompt) == boxed_answer(e), e.prompt


def test_base_documents_are_plain_solutions_and_facts_never_benchmark_problems():
    docs = list(islice(generate_base_documents(0), 400))
    assert docs == list(islice(generate_base_documents(0), 400))
    assert docs != list(islice(generate_base_documents(1), 400))
    solutions = [d for d in docs if "\nSolution: " in d]
    drills = [d for d in docs if d.startswith("Practice: ")]
    assert len(solutions) + len(drills) == len(docs) and 0.5 < len(solutions) / len(docs) < 0.8
    for d in docs:  # no chat layout, no think block, no self-reflection: that is for distillation
        assert "<|im_start|>" not in d and "<think>" not in d and not CUE_RE.search(d)
        for a, op, k, b in EQ_RE.findall(d):
            assert _apply_op(int(a), op, int(k)) == int(b), d
    stepwise = [d for d in solutions if "\nSolution: Step by step. " in d]
    assert 0.35 < len(stepwise) / len(solutions) < 0.65  # stepwise_share=0.5
    for d in solutions:
        problem, solution = d.split("\nSolution: ")
        eqs = EQ_RE.findall(solution)
        key = f"{eqs[0][0]}|" + ",".join(f"{op}{k}" for _, op, k, _ in eqs)
        assert not is_benchmark_problem(key), d
        assert re.search(r"\\boxed\{(\d+)\}", solution)[1] == eqs[-1][3] == str(_solve(problem))


def test_base_documents_without_stepwise_solutions_are_the_first_corpus():
    """share 0 reproduces the stream the shipped tiny-teacher-base was pretrained on; the share only
    changes how a solution is written, not which problems and drills come."""
    plain = list(islice(generate_base_documents(0, stepwise_share=0.0), 300))
    assert not any("Step by step." in d for d in plain)
    assert plain[:3] == [
        "Practice: 9 - 7 = 2. 12 + 4 = 16. 5 - 4 = 1. 8 * 3 = 24. 3 - 1 = 2. 1 + 8 = 9.",
        "Ines has 3 toy cars. She trades away 1 of them. Then she sells 1 of them. How many toy "
        "cars does Ines have now?\nSolution: Ines starts with 3 toy cars: 3 - 1 = 2, 2 - 1 = 1. "
        "The answer is \\boxed{1}.",
        "Ava has 7 cards. She buys 12 more cards. Then she finds 8 more cards. How many cards does "
        "Ava have now?\nSolution: Ava starts with 7 cards: 7 + 12 = 19, 19 + 8 = 27. The answer is "
        "\\boxed{27}.",
    ]
    always = list(islice(generate_base_documents(0, stepwise_share=1.0), 300))
    solutions = [d for d in always if not d.startswith("Practice: ")]
    assert solutions and all("\nSolution: Step by step. " in d for d in solutions)
    with pytest.raises(ValueError, match="stepwise_share"):
        next(generate_base_documents(0, stepwise_share=1.5))


def test_chat_share_writes_solutions_in_the_chat_layout_with_a_short_think_block():
    """chat_share: some solutions as a chat turn whose think block is a first pass without
    self-checks, closed by `</think>`, the one-line answer and `<|im_end|>`; no trace in them."""
    docs = list(islice(generate_base_documents(0, chat_share=0.3), 600))
    chats = [d for d in docs if d.startswith("<|im_start|>user\n")]
    solutions = [d for d in docs if not d.startswith("Practice: ")]
    assert 0.2 < len(chats) / len(solutions) < 0.4
    for d in chats:
        head, rest = d.split("<|im_end|>\n<|im_start|>assistant\n<think>\nFirst, ")
        think, answer = rest.split("\n</think>\n\n")
        problem = head.removeprefix("<|im_start|>user\n")
        y = str(_solve(problem))
        assert not CUE_RE.search(d) and "\n\n" not in think  # one short paragraph, no reflection
        assert think.endswith(" at the end.") and f" has {y} " in think.rsplit(". ", 1)[-1]
        assert answer.endswith(f"The answer is \\boxed{{{y}}}.<|im_end|>")
        for a, op, k, b in EQ_RE.findall(d):
            assert _apply_op(int(a), op, int(k)) == int(b), d
    # the other documents are those of the plain corpus's kinds, and share 0 draws nothing extra
    assert all("<think>" not in d for d in docs if d not in chats)
    assert list(islice(generate_base_documents(0, chat_share=0.0), 50)) == list(
        islice(generate_base_documents(0), 50)
    )
    with pytest.raises(ValueError, match="chat_share"):
        next(generate_base_documents(0, chat_share=-0.1))


def test_check_share_ends_chat_think_blocks_after_a_complete_check_of_any_length():
    """check_share: chat solutions whose think block verifies the answer after the first pass, with
    complete parts of a trace's verification (backward re-check, forward re-check, conclusion), at
    least one, in the trace's order, then `</think>` and the answer; share 0 draws nothing extra."""
    docs = list(islice(generate_base_documents(0, 0.5, 0.5, max_steps=2, check_share=0.5), 1500))
    chats = [d for d in docs if d.startswith("<|im_start|>user\n")]
    checked, kinds = 0, set()
    for d in chats:
        problem = _problem_of(d)
        y = str(_solve(problem))
        think, answer = d.split("<think>\nFirst, ")[1].split("\n</think>\n\n")
        first, *checks = think.split("\n\n")
        assert first.endswith(" at the end.") and f" has {y} " in first.rsplit(". ", 1)[-1]
        assert answer.endswith(f"The answer is \\boxed{{{y}}}.<|im_end|>")
        for a, op, k, b in EQ_RE.findall(d):
            assert _apply_op(int(a), op, int(k)) == int(b), d
        if not checks:
            continue
        checked += 1
        kind = tuple(
            "back" if c.endswith(f"so {y} is right.") else "chain" if "arithmetic" in c else "end"
            for c in checks
        )
        assert list(kind) == sorted(kind, key=("back", "chain", "end").index) and len(
            set(kind)
        ) == len(kind)
        kinds.add(kind)
        if kind[0] == "back":
            assert CUE_RE.search(checks[0]) and f"from {y}." in checks[0].split(". ")[0] + "."
    assert 0.35 < checked / len(chats) < 0.65
    assert len(kinds) >= 5  # checks of many lengths, each complete
    base = list(islice(generate_base_documents(0, 0.5, 0.5, max_steps=2), 300))
    assert base == list(islice(generate_base_documents(0, 0.5, 0.5, 2, check_share=0.0), 300))
    assert not any("is right." in d for d in base)
    with pytest.raises(ValueError, match="check_share"):
        next(generate_base_documents(0, chat_share=0.3, check_share=1.5))
    with pytest.raises(ValueError, match="check_share=0.5 is a share of the chat-layout"):
        next(generate_base_documents(0, check_share=0.5))  # no chat solutions to check


def test_restate_answers_state_the_think_blocks_conclusion_and_change_nothing_else():
    """answer_form=restate: the answer section states the result ("Emma has 18 beads at the end.")
    instead of deriving it again; the problems and think blocks are the chain form's, and the chain
    form is the default stream, example for example."""
    chain, restate = generate_examples(60, 2), generate_examples(60, 2, answer_form="restate")
    assert chain == generate_examples(60, 2, answer_form="chain")
    assert [(e.prompt, e.cot) for e in chain] == [(e.prompt, e.cot) for e in restate]
    assert generate_examples(20, 2, answer_form="restate") == restate[:20]  # prefix-stable
    for c, r in zip(chain, restate, strict=True):
        y = boxed_answer(c)
        assert boxed_answer(r) == y
        head, boxed = r.answer.split("\n\n")
        assert re.fullmatch(rf"{c.prompt.split()[0]} has {y} [a-z ]+ at the end\.", head), head
        assert boxed == f"The answer is \\boxed{{{y}}}." and c.answer.endswith(boxed)
        assert EQ_RE.search(c.answer.split("\n\n")[0])  # the chain form re-derives it
        assert f" {y} " in c.cot.rsplit("\n\n", 1)[-1]  # the think block's conclusion
    with pytest.raises(ValueError, match="answer_form must be one of"):
        generate_examples(3, 0, answer_form="summary")


def test_restate_answers_in_the_base_corpus_are_the_chat_solutions_alone():
    kwargs = dict(stepwise_share=0.5, chat_share=0.5, max_steps=2, check_share=0.5)
    chain = list(islice(generate_base_documents(0, **kwargs), 400))
    restate = list(islice(generate_base_documents(0, answer_form="restate", **kwargs), 400))
    chats = 0
    for c, r in zip(chain, restate, strict=True):
        if not c.startswith("<|im_start|>user\n"):
            assert r == c  # worked solutions and practice lines keep their form
            continue
        chats += 1
        think_c, answer_c = c.split("\n</think>\n\n")
        think_r, answer_r = r.split("\n</think>\n\n")
        y = str(_solve(_problem_of(c)))
        assert think_r == think_c and EQ_RE.search(answer_c) and not EQ_RE.search(answer_r)
        name = _problem_of(c).split()[0]
        pattern = rf"{name} has {y} [a-z ]+ at the end\.\n\nThe answer is \\boxed\{{{y}\}}\."
        assert re.fullmatch(pattern + r"<\|im_end\|>", answer_r), answer_r
    assert chats > 100
    with pytest.raises(ValueError, match="answer_form=restate is the form of the chat-layout"):
        next(generate_base_documents(0, answer_form="restate"))  # no chat solutions
    with pytest.raises(ValueError, match="answer_form must be one of"):
        next(generate_base_documents(0, chat_share=0.3, answer_form="brief"))


def _apply_op(a: int, op: str, k: int) -> int:
    return {"+": a + k, "-": a - k, "*": a * k, "/": a // k}[op]


def _steps(problem: str) -> int:
    """Steps of a problem, from its wording: one sentence each between the start and the question."""
    return problem.count(".") - 1


def _problem_of(doc: str) -> str:
    if doc.startswith("<|im_start|>user\n"):
        return doc.removeprefix("<|im_start|>user\n").split("<|im_end|>")[0]
    return doc.split("\nSolution: ")[0]


def test_max_steps_keeps_base_solutions_short_and_leaves_the_stream_alone_when_unset():
    """max_steps=2: every worked solution (plain, stepwise, chat) is of a 2-step problem, while the
    default stream has 3- and 4-step ones; unset, the stream is the one without the knob."""
    unset = list(islice(generate_base_documents(0, 0.5, 0.3), 800))
    assert unset == list(islice(generate_base_documents(0, 0.5, 0.3, max_steps=None), 800))
    assert {_steps(_problem_of(d)) for d in unset if not d.startswith("Practice: ")} == {2, 3, 4}
    short = list(islice(generate_base_documents(0, 0.5, 0.3, max_steps=2), 800))
    solutions = [d for d in short if not d.startswith("Practice: ")]
    assert 0.5 < len(solutions) / len(short) < 0.8  # the document mix is kept
    assert any(d.startswith("<|im_start|>user\n") for d in solutions)
    assert any("\nSolution: Step by step. " in d for d in solutions)
    for d in solutions:
        problem = _problem_of(d)
        assert _steps(problem) == 2, d
        assert f"\\boxed{{{_solve(problem)}}}" in d
    # a pre-training reads ~50k solutions, more than the ~10k distinct 2-step training problems:
    # the stream goes on past them (repeating arithmetic under other names) instead of stalling
    many = islice(generate_base_documents(0, 0.5, 0.3, max_steps=2), 20_000)
    problems = [_problem_of(d) for d in many if not d.startswith("Practice: ")]
    assert len(problems) > 12_000 and len(set(problems)) > 10_000
    for bad in (1, 5, 2.5, True):
        with pytest.raises(ValueError, match="max_steps must be an integer in \\[2, 4\\]"):
            next(generate_base_documents(0, max_steps=bad))


def test_min_steps_benchmark_is_the_long_problems_of_the_same_split():
    everything = generate_benchmark(200, 0)
    assert generate_benchmark(200, 0, min_steps=2) == everything  # the default is every problem
    assert {_steps(b["problem"]) for b in everything} == {2, 3, 4}
    long = generate_benchmark(60, 0, min_steps=3)
    assert all(_steps(b["problem"]) >= 3 for b in long)
    assert {_steps(b["problem"]) for b in long} == {3, 4}
    # the same problems as the full stream's long ones, in order (ids are renumbered)
    assert [b["problem"] for b in long] == [
        b["problem"] for b in everything if _steps(b["problem"]) >= 3
    ][:60]
    for b in long:
        assert str(_solve(b["problem"])) == b["answer"]
    assert all(_steps(b["problem"]) == 4 for b in generate_benchmark(10, 0, min_steps=4))
    with pytest.raises(ValueError, match="min_steps"):
        generate_benchmark(5, 0, min_steps=5)


@pytest.mark.parametrize("answer_form", ["chain", "restate"])
def test_every_trace_think_block_concludes_on_its_answer(answer_form):
    for ex in generate_examples(200, seed=3, answer_form=answer_form):
        assert think_conclusion(ex.cot) == str(boxed_answer(ex)), ex.source_id


def test_think_conclusion_reads_the_last_conclusion_of_the_think_block_only():
    drifted = (
        "<think>\nLosing 1 leaves 11 - 1 = 10. So Ava has 10 pencils at the end.\n\nWait, let me "
        "check again ... so 10 is right.\n\nOnce more: 7 + 4 = 11. So the answer is 1,200: "
        "nothing.\n</think>\n\nAva has 3 pencils at the end.\n\nThe answer is \\boxed{3}."
    )
    assert think_conclusion(drifted) == "1200"  # the last one, thousands separator dropped
    assert think_conclusion(drifted.replace("So the answer is 1,200: nothing.", "")) == "10"
    assert think_conclusion("<think>\n7 + 4 = 11.\n</think>\n\nShe has 11 pens at the end.") is None
