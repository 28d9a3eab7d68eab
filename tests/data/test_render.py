"""Rendering: the docs/design.md §3 layout, exact section ids on a hand-made example, piecewise tokenisation
== whole-string tokenisation (embedded and real Qwen3 tokenizers), and the refusals."""

from __future__ import annotations

import copy

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from kdlite.data.example import COT, A, Example, P, RowRejected
from kdlite.data.render import TemplateMismatch, render, render_text
from kdlite.data.synthetic import generate_examples

TOY = Example("Add 1 and 2.", "1 + 2 = 3.", "\\boxed{3}", "toy:0")
TOY_TEXT = (
    "<|im_start|>user\nAdd 1 and 2.<|im_end|>\n<|im_start|>assistant\n"
    "<think>\n1 + 2 = 3.\n</think>\n\n\\boxed{3}<|im_end|>\n"
)
# Hand-written: (token, section) for TOY. "Ġ" is a space, "Ċ" a newline (byte-level BPE).
EMBEDDED_TOY = [
    *[("<|im_start|>", P), ("user", P), ("Ċ", P), ("A", P), ("d", P), ("d", P), ("Ġ", P)],
    *[("1", P), ("Ġand", P), ("Ġ", P), ("2", P), (".", P), ("<|im_end|>", P), ("Ċ", P)],
    *[("<|im_start|>", P), ("assistant", P), ("Ċ", P)],
    *[("<think>", COT), ("Ċ", COT), ("1", COT), ("Ġ+", COT), ("Ġ", COT), ("2", COT)],
    *[("Ġ=", COT), ("Ġ", COT), ("3", COT), (".", COT), ("Ċ", COT), ("</think>", COT)],
    *[("ĊĊ", A), ("\\", A), ("boxed", A), ("{", A), ("3", A), ("}", A), ("<|im_end|>", A)],
    ("Ċ", A),
]
QWEN3_TOY_IDS = [151644, 872, 198, 2212, 220, 16, 323, 220, 17, 13, 151645, 198, 151644, 77091, 198]
QWEN3_TOY_IDS += [151667, 198, 16, 488, 220, 17, 284, 220, 18, 624, 151668]
QWEN3_TOY_IDS += [271, 59, 79075, 90, 18, 92, 151645, 198]
QWEN3_TOY_SECTIONS = [P] * 15 + [COT] * 11 + [A] * 8

# Texts whose boundaries are awkward for a byte-level BPE (spaces/newlines at the edges, unicode).
TRICKY = [
    Example(" leading space", " cot starts with a space ", "  two spaces", "tricky:0"),
    Example(
        "ends in newline\n", "\n\nnewlines around\n\n", "\n\nanswer after newlines\n", "tricky:1"
    ),
    Example("unicode: é → 中 😀", "x² + y² = z²", "∎", "tricky:2"),
    Example("p", "", "a", "tricky:3"),
    Example("<think in text but not a tag>", "< / think >", "think>", "tricky:4"),
]


def test_render_text_layout():
    assert render_text(TOY) == TOY_TEXT
    # newlines around the CoT and before the answer are normalised, as Qwen3's template does
    assert render_text(Example(TOY.prompt, "\n1 + 2 = 3.\n", "\n\\boxed{3}", "t")) == TOY_TEXT


def test_section_ids_exact_embedded(embedded_tokenizer):
    r = render(TOY, embedded_tokenizer)
    assert r.source_id == "toy:0"
    got = list(
        zip(embedded_tokenizer.convert_ids_to_tokens(r.input_ids), r.section_ids, strict=True)
    )
    assert got == EMBEDDED_TOY


def test_section_ids_exact_qwen3(qwen3_tokenizer):
    r = render(TOY, qwen3_tokenizer)
    assert r.input_ids == QWEN3_TOY_IDS
    assert r.section_ids == QWEN3_TOY_SECTIONS


def _check_equal_to_whole_string(example, tokenizer, think_id, end_think_id):
    r = render(example, tokenizer)
    text = render_text(example)
    assert r.input_ids == tokenizer.encode(text, add_special_tokens=False)
    assert len(r.section_ids) == len(r.input_ids)
    # contiguous P..., CoT..., A... with the think tags at the CoT's edges
    n_p, n_cot = r.section_ids.count(P), r.section_ids.count(COT)
    assert r.section_ids == [P] * n_p + [COT] * n_cot + [A] * (len(r.input_ids) - n_p - n_cot)
    assert r.input_ids[n_p] == think_id and r.input_ids[n_p + n_cot - 1] == end_think_id
    assert r.input_ids.count(think_id) == 1 and r.input_ids.count(end_think_id) == 1
    assert tokenizer.decode(r.input_ids) == text
    return r


def test_pieces_equal_whole_string_embedded(embedded_tokenizer):
    tok = embedded_tokenizer
    think, end_think = tok.convert_tokens_to_ids(["<think>", "</think>"])
    lengths = []
    for e in generate_examples(150, 9) + TRICKY:
        lengths.append(len(_check_equal_to_whole_string(e, tok, think, end_think).input_ids))
    assert 300 <= sorted(lengths)[75] <= 500  # typical synthetic example length (docs/design.md §8)


def test_pieces_equal_whole_string_qwen3(qwen3_tokenizer):
    for e in generate_examples(40, 9) + TRICKY:
        _check_equal_to_whole_string(e, qwen3_tokenizer, 151667, 151668)


def test_tokenizer_without_single_think_tokens_is_refused():
    bare = Tokenizer(models.BPE())
    bare.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bare.decoder = decoders.ByteLevel()
    bare.add_tokens(["</think>"])  # one tag present, the other one missing
    tok = PreTrainedTokenizerFast(tokenizer_object=bare)
    with pytest.raises(ValueError, match="'<think>' is .* tokens"):
        render(TOY, tok)


def test_template_with_another_layout_is_refused(embedded_tokenizer):
    tok = copy.deepcopy(embedded_tokenizer)
    tok.chat_template = "{{- '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' -}}" + (
        embedded_tokenizer.chat_template
    )
    with pytest.raises(TemplateMismatch, match="Qwen3 layout"):
        render(TOY, tok)


def test_no_template_falls_back_to_render_text(embedded_tokenizer):
    tok = copy.deepcopy(embedded_tokenizer)
    tok.chat_template = None
    assert render(TOY, tok) == render(TOY, embedded_tokenizer)


@pytest.mark.parametrize("field", ["prompt", "cot", "answer"])
@pytest.mark.parametrize("tag", ["</think>", "<|im_end|>"])
def test_reserved_tokens_in_text_are_rejected(embedded_tokenizer, field, tag):
    parts = {"prompt": "p", "cot": "c", "answer": "a", "source_id": "bad:0"}
    parts[field] = f"x {tag} y"
    with pytest.raises(RowRejected) as err:
        render(Example(**parts), embedded_tokenizer)
    assert err.value.reason == "reserved_token_in_text"
