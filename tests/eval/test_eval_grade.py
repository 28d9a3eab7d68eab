import pytest
from eval_stubs import flaky_grader

from kdlite.eval.grade import grade_all, grade_sample, strict_text

BOX = "Therefore, the final answer is: $\\boxed{204}$. I hope it is correct"


@pytest.mark.parametrize(
    ("gold", "text", "full", "strict"),
    [
        ("204", f"<think>\n100+104=204\n</think>\n\n{BOX}", True, True),
        # equivalent forms
        ("0.5", "<think>x</think> The answer is $\\boxed{\\frac{1}{2}}$", True, True),
        ("\\frac{1}{2}", "<think>x</think> \\boxed{0.5}", True, True),
        ("3\\sqrt{2}", "<think>x</think> $\\boxed{\\sqrt{18}}$", True, True),
        ("-7", "<think>x</think> \\boxed{-7}", True, True),
        ("204", "<think>x</think> \\boxed{205}", False, False),
        # boxed only inside the think block: full counts it (lighteval), strict does not
        ("204", "<think>so \\boxed{204}</think> I am not sure.", True, False),
        # truncated: no </think> at all
        ("204", "<think>I get \\boxed{204}, let me check again and", True, False),
        ("204", "<think>let me check again and again and", False, False),
        # self-correction inside the think block, one final box
        ("204", "<think>first 205. wait, recheck: 204</think> so \\boxed{204}", True, True),
        ("204", "<think>first 204. wait, no: 205</think> so \\boxed{205}", False, False),
        # the last </think> decides what strict sees
        ("204", "<think>a</think> hmm <think>b</think> \\boxed{204}", True, True),
        # no answer at all
        ("204", "<think>no idea</think> I cannot solve it.", False, False),
        ("204", "", False, False),
    ],
)
def test_grade_sample(gold, text, full, strict):
    assert grade_sample(gold, text) == (full, strict)


def test_two_boxes_can_be_read_together_in_full_mode():
    # math-verify's boxed="all" reads this as "205,204": wrong in full mode, as lighteval scored it
    text = "<think>I get \\boxed{205}. wait, recheck: 204</think> so \\boxed{204}"
    assert grade_sample("204", text) == (False, True)


def test_strict_text():
    assert strict_text("<think>a</think>b</think>c") == "c"
    assert strict_text("no think end") is None


def test_grade_all_matches_reference_in_order():
    pairs = [("5", f"<think>x</think> \\boxed{{{v}}}") for v in (5, 4, 5, 6, 5)]
    res = grade_all(pairs, workers=2, timeout_s=20)
    assert [r[1] for r in res] == [True, False, True, False, True]
    assert all(r[0] == "ok" for r in res)


def test_grade_all_survives_crash_hang_and_error():
    good = "<think>x</think> \\boxed{5}"
    pairs = [("5", good), ("5", "CRASH"), ("5", good), ("5", "HANG"), ("5", "RAISE"), ("5", good)]
    res = grade_all(pairs, workers=2, timeout_s=4, fn=flaky_grader)
    status = [r[0].split(":")[0] for r in res]
    assert status == ["ok", "error", "ok", "timeout", "error", "ok"]
    assert [r[1] for r in res] == [True, False, True, False, False, True]
    assert "died" in res[1][0]


def test_grade_all_empty():
    assert grade_all([]) == []
