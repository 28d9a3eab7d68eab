"""Crop + supervision labels, written out by hand with a character-level tokenizer (id = ord(c)).

Toy example: P = "ab", CoT = "cde", A = "fg" -> text "abcdefg", sections [0,0,1,1,1,2,2].
Expected labels are strings: a letter is its ord() (the supervised next token), "." is -100.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from kdlite.data.example import COT, A, P
from kdlite.data.supervision import (
    IGNORE_INDEX,
    SUPERVISE,
    Supervised,
    crop_span,
    supervise,
)


def _render(prompt: str, cot: str, answer: str, source_id: str = "toy:0") -> SimpleNamespace:
    text = prompt + cot + answer
    sections = [P] * len(prompt) + [COT] * len(cot) + [A] * len(answer)
    return SimpleNamespace(
        input_ids=[ord(c) for c in text], section_ids=sections, source_id=source_id
    )


def _labels(spec: str) -> list[int]:
    return [IGNORE_INDEX if c == "." else ord(c) for c in spec]


TOY = _render("ab", "cde", "fg")

# (lsp, crop, supervise, kept text, labels). Kept length = max(2, floor(lsp * 7)).
CASES = [
    # lsp = 1.0: both crops keep everything.
    *[
        (1.0, crop, sup, "abcdefg", lab)
        for crop in ("left", "right")
        for sup, lab in [
            ("p_cot_a", "bcdefg."),
            ("cot_a", ".cdefg."),
            ("p_cot", "bcde..."),
            ("cot", ".cde..."),
            ("p_a", "b...fg."),
            ("a", "....fg."),
        ]
    ],
    # lsp = 0.6: floor(4.2) = 4 tokens.
    (0.6, "left", "p_cot_a", "abcd", "bcd."),
    (0.6, "left", "cot_a", "abcd", ".cd."),
    (0.6, "left", "p_cot", "abcd", "bcd."),
    (0.6, "left", "cot", "abcd", ".cd."),
    (0.6, "left", "p_a", "abcd", "b..."),
    (0.6, "left", "a", "abcd", "...."),
    (0.6, "right", "p_cot_a", "defg", "efg."),
    (0.6, "right", "cot_a", "defg", "efg."),
    (0.6, "right", "p_cot", "defg", "e..."),
    (0.6, "right", "cot", "defg", "e..."),
    (0.6, "right", "p_a", "defg", ".fg."),
    (0.6, "right", "a", "defg", ".fg."),
    # lsp = 0.5: floor(3.5) = 3 tokens.
    (0.5, "left", "p_cot_a", "abc", "bc."),
    (0.5, "left", "cot_a", "abc", ".c."),
    (0.5, "left", "p_cot", "abc", "bc."),
    (0.5, "left", "cot", "abc", ".c."),
    (0.5, "left", "p_a", "abc", "b.."),
    (0.5, "left", "a", "abc", "..."),
    (0.5, "right", "p_cot_a", "efg", "fg."),
    (0.5, "right", "cot_a", "efg", "fg."),
    (0.5, "right", "p_cot", "efg", "..."),
    (0.5, "right", "cot", "efg", "..."),
    (0.5, "right", "p_a", "efg", "fg."),
    (0.5, "right", "a", "efg", "fg."),
    # lsp = 0.3: floor(2.1) = 2 tokens.
    (0.3, "left", "p_cot_a", "ab", "b."),
    (0.3, "left", "cot_a", "ab", ".."),
    (0.3, "left", "p_cot", "ab", "b."),
    (0.3, "left", "cot", "ab", ".."),
    (0.3, "left", "p_a", "ab", "b."),
    (0.3, "left", "a", "ab", ".."),
    (0.3, "right", "p_cot_a", "fg", "g."),
    (0.3, "right", "cot_a", "fg", "g."),
    (0.3, "right", "p_cot", "fg", ".."),
    (0.3, "right", "cot", "fg", ".."),
    (0.3, "right", "p_a", "fg", "g."),
    (0.3, "right", "a", "fg", "g."),
]


def test_cases_cover_every_supervise_and_crop_at_each_lsp():
    for lsp in (1.0, 0.6, 0.5, 0.3):
        combos = {(c, s) for p, c, s, _, _ in CASES if p == lsp}
        assert combos == {(c, s) for c in ("left", "right") for s in SUPERVISE}


@pytest.mark.parametrize(("lsp", "crop", "sup", "text", "labels"), CASES)
def test_labels_by_hand(lsp, crop, sup, text, labels):
    out = supervise(TOY, lsp=lsp, crop=crop, supervise=sup)
    assert out == Supervised(
        input_ids=[ord(c) for c in text], labels=_labels(labels), source_id="toy:0"
    )
    assert out.n_supervised == sum(c != "." for c in labels)


def test_supervise_sets():
    assert {
        "p_cot_a": {P, COT, A},
        "cot_a": {COT, A},
        "p_cot": {P, COT},
        "cot": {COT},
        "p_a": {P, A},
        "a": {A},
    } == SUPERVISE
    assert all(isinstance(v, frozenset) for v in SUPERVISE.values())


def test_crop_removing_every_supervised_token_gives_zero_weight():
    out = supervise(TOY, lsp=0.5, crop="left", supervise="a")
    assert out.n_supervised == 0
    assert out.labels == [IGNORE_INDEX] * 3
    # A long CoT and a short answer: the answer is out of reach of a left crop.
    long_cot = _render("pq", "x" * 40, "yz")
    out = supervise(long_cot, lsp=0.25, crop="left", supervise="a")
    assert len(out.input_ids) == 11
    assert out.n_supervised == 0


def test_crop_keeps_at_least_two_tokens():
    assert crop_span(7, 0.1, "left") == slice(0, 2)
    assert crop_span(7, 0.1, "right") == slice(5, 7)
    assert crop_span(2, 0.01, "right") == slice(0, 2)
    out = supervise(TOY, lsp=0.01, crop="right", supervise="a")
    assert out.input_ids == [ord("f"), ord("g")]
    assert out.labels == [ord("g"), IGNORE_INDEX]


@pytest.mark.parametrize(
    ("n", "lsp", "keep"),
    [
        (10, 0.3, 3),  # 0.3 * 10 = 3.0000000000000004
        (100, 0.29, 29),  # 0.29 * 100 = 28.999999999999996: naive int() gives 28
        (100, 0.57, 57),  # 0.57 * 100 = 56.99999999999999
        (1000, 0.001, 2),  # floor 1 -> raised to the minimum 2
        (10, 0.7, 7),  # 0.7 * 10 = 7.000000000000001
        (3, 1 / 3, 2),  # floor(1.0) = 1 -> raised to 2
        (9, 1 / 3, 3),
        (50, 0.58, 29),  # 28.999999999999996
        (100, 0.289999, 28),  # a true fraction (28.9999) is still floored
        (100_000, 0.123456, 12345),  # 12345.6
        (1_000_000, 0.1234565, 123456),  # 123456.5: not rounded up
        (100_000, 0.29, 29000),  # 28999.999999999996
        (7, 1, 7),  # an int lsp is fine
        (12345, 0.5, 6172),
    ],
)
def test_floor_forgives_float_rounding(n, lsp, keep):
    assert crop_span(n, lsp, "left") == slice(0, keep)
    assert crop_span(n, lsp, "right") == slice(n - keep, n)


def test_naive_float_floor_would_be_wrong():
    # Documents why crop_span does not use int(lsp * n).
    assert math.floor(0.29 * 100) == 28
    assert math.floor(0.57 * 100) == 56
    assert math.floor(0.58 * 50) == 28


@pytest.mark.parametrize("lsp", [0.0, -0.1, 1.0001, float("nan"), float("inf"), "0.5", None, True])
def test_bad_lsp(lsp):
    with pytest.raises(ValueError, match="lsp"):
        crop_span(10, lsp, "left")


@pytest.mark.parametrize("crop", ["middle", "", None, "LEFT"])
def test_bad_crop(crop):
    with pytest.raises(ValueError, match="crop"):
        crop_span(10, 0.5, crop)


@pytest.mark.parametrize("n", [0, 1])
def test_too_short(n):
    with pytest.raises(ValueError, match="at least 2 tokens"):
        crop_span(n, 1.0, "left")
    short = SimpleNamespace(input_ids=[5] * n, section_ids=[A] * n, source_id="s")
    with pytest.raises(ValueError, match="at least 2 tokens"):
        supervise(short, 1.0, "left", "a")


def test_length_mismatch():
    bad = SimpleNamespace(input_ids=[1, 2, 3], section_ids=[0, 1], source_id="bad:1")
    with pytest.raises(ValueError, match=r"bad:1.*3 tokens.*section_ids has 2"):
        supervise(bad, 1.0, "left", "cot")


def test_unknown_section_id():
    bad = SimpleNamespace(input_ids=[1, 2, 3], section_ids=[0, 3, 1], source_id="bad:2")
    with pytest.raises(ValueError, match=r"unknown section ids \[3\]"):
        supervise(bad, 1.0, "left", "cot")


def test_unknown_supervise_key():
    with pytest.raises(ValueError, match="unknown supervise 'answer'"):
        supervise(TOY, 1.0, "left", "answer")


def test_accepts_tuples_and_returns_lists():
    rendered = SimpleNamespace(
        input_ids=tuple(TOY.input_ids), section_ids=tuple(TOY.section_ids), source_id="t"
    )
    out = supervise(rendered, 1.0, "left", "cot")
    assert type(out.input_ids) is list and type(out.labels) is list
    assert out.labels == _labels(".cde...")
