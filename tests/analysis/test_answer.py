import pytest

from kdlite.analysis.answer import (
    boxed_contents,
    count_reflections,
    derived_anywhere,
    derived_before_reflection,
    final_answer,
    find_derivation,
    normalize,
)
from kdlite.data.example import Example

COT = (
    "Noah starts with 17 coins, buys 7 more, then gets 7 more. "
    "Buying 7 more gives 17 + 7 = 24. Getting 7 more gives 24 + 7 = 31. "
    "Wait, let me verify again from 31: 31 - 7 = 24, 24 - 7 = 17. So 31 is right."
)
EXAMPLE = Example(
    prompt="Noah has 17 coins. He buys 7 more coins. Then he gets 7 more. How many coins now?",
    cot=COT,
    answer="The answer is \\boxed{31}.",
    source_id="t:0",
)


def test_derivation_is_the_first_cued_result():
    d, reason = find_derivation(EXAMPLE)
    assert reason == "found"
    assert COT[: d.cot_char].endswith("24 + 7 = 31")
    assert d.cot_rel == pytest.approx(d.cot_char / len(COT))
    n_p, n_a = len(EXAMPLE.prompt), len(EXAMPLE.answer)
    assert d.full_rel == pytest.approx((n_p + d.cot_char) / (n_p + len(COT) + n_a))
    assert (d.reflections_before, d.reflections_total) == (0, 2)  # "Wait", "verify again"


def test_prompt_restatement_is_skipped():
    ex = Example(
        prompt="If x = 12 and y = 3, what is x?",
        cot="We are told x = 12 and y = 3. Hmm, wait, let me re-examine. Doubling 6 gives 12.",
        answer="\\boxed{12}",
        source_id="t:1",
    )
    d, _ = find_derivation(ex)
    assert ex.cot[: d.cot_char].endswith("Doubling 6 gives 12")
    assert d.reflections_before == 2


def test_numbers_match_on_token_boundaries_and_with_separators():
    ex = Example(
        "p", "So the total is 131. Then 3.1 is close. Result: 1,000.", "\\boxed{1000}", "t:2"
    )
    d, _ = find_derivation(ex)
    assert ex.cot[: d.cot_char].endswith("1,000")
    ex2 = Example("p", "The sum is 131, and 31.5 is not it.", "\\boxed{31}", "t:3")
    assert find_derivation(ex2) == (None, "answer_not_in_cot")


def test_uncued_and_missing_answers_are_reported():
    assert find_derivation(Example("p", "we have 31 apples", "\\boxed{31}", "t:4")) == (
        None,
        "no_cued_occurrence",
    )
    assert find_derivation(Example("p", "c = 31", "31", "t:5")) == (None, "no_boxed_answer")


def test_latex_answers():
    assert boxed_contents("a \\boxed{\\frac{1}{2}} b \\boxed{3}") == ["\\frac{1}{2}", "3"]
    assert normalize("$\\dfrac{1}{2}$.") == "\\frac{1}{2}"
    ex = Example("p", "so x = \\frac{1} {2} here", "\\boxed{\\dfrac{1}{2}}", "t:6")
    assert final_answer(ex) == "\\frac{1}{2}"
    assert find_derivation(ex)[1] == "found"


def test_token_count_callable_is_used():
    words = lambda s: len(s.split())  # noqa: E731
    d, _ = find_derivation(EXAMPLE, count=words)
    head = COT[: d.cot_char]
    assert d.cot_rel == pytest.approx(len(head.split()) / len(COT.split()))


def test_reflection_keywords():
    text = "Wait. Let me double-check again, rechecking; I reconsidered. Waiting is not a cue."
    assert count_reflections(text) == 4  # Wait, double-check, rechecking, reconsidered
    assert count_reflections("let me go over  the steps and re-evaluate") == 2


def test_derived_before_reflection_reads_only_the_first_pass():
    prompt = "Mia has 14 coins. She gives away 10 of them. How many coins does Mia have now?"
    first = "Mia starts with 14 coins. Giving away 10 leaves 14 - 10 = 4. So Mia has 4 coins."
    assert derived_before_reflection(first + " Wait, let me check again: 4 + 10 = 14.", "4", prompt)
    # derived only after the cue: the first pass got 5
    late = "Giving away 10 leaves 14 - 10 = 5. Wait, let me recheck: 14 - 10 = 4."
    assert not derived_before_reflection(late, "4", prompt)
    # a quote of the prompt is not a derivation, and uncued numbers do not count
    assert not derived_before_reflection("A box is 4 coins wide.", "4", "A box is 4 coins wide.")
    assert derived_before_reflection("A box is 4 coins wide.", "4", "A box holds coins.")
    assert not derived_before_reflection("Mia keeps 4 coins in the end", "4", prompt)
    # no cue at all: the whole output is read; a boxed guess counts as derived
    assert derived_before_reflection("So \\boxed{4}.", "4", prompt)
    assert derived_before_reflection("the total is 1,000", "1000")
    assert not derived_before_reflection("= 14", "", prompt)


def test_derived_anywhere_reads_past_the_cues():
    """The first pass reflects before it derives (the Table-6 corpus): before-reflection misses
    it, anywhere finds it; quotes of the prompt and uncued numbers still do not count."""
    prompt = "Mia has 14 coins. She gives away 10 of them. How many coins does Mia have now?"
    text = "Mia starts with 14 coins. Let me double-check: 14 coins. Yes. 14 - 10 = 4. So 4 coins."
    assert not derived_before_reflection(text, "4", prompt)
    assert derived_anywhere(text, "4", prompt)
    assert derived_anywhere(text + " Wait, " * 3, "4", prompt)  # unconcluded: still derived
    assert not derived_anywhere("Wait. Mia keeps 4 coins in the end", "4", prompt)
    assert not derived_anywhere("Wait. A box is 4 coins wide.", "4", "A box is 4 coins wide.")
    assert not derived_anywhere("= 14", "", prompt)
