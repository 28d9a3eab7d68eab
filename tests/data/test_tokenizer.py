"""The embedded tokenizer (special tokens, digits, round trip, chat template, cache) and
`load_tokenizer` / fingerprints."""

from __future__ import annotations

import copy
import json
import random
import shutil
import string

import pytest
from transformers import AutoTokenizer

from kdlite.data import tokenizer as tokmod
from kdlite.data.synthetic import generate_examples
from kdlite.data.tokenizer import (
    TokenizerNotFoundError,
    load_tokenizer,
    tokenizer_fingerprint,
    vocab_fingerprint,
)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

CHATS = {
    "think_in_content": [
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "<think>\n2 + 3 = 5.\n</think>\n\nIt is \\boxed{5}."},
    ],
    "reasoning_content": [
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "reasoning_content": "2 + 3 = 5.", "content": "It is \\boxed{5}."},
    ],
    "no_reasoning": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ],
    "multi_turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "1 + 1?"},
        {"role": "assistant", "content": "<think>\nold thought\n</think>\n\n2"},
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "<think>\nnew thought\n</think>\n\n4"},
    ],
}
EXPECTED = {
    "think_in_content": "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    "<think>\n2 + 3 = 5.\n</think>\n\nIt is \\boxed{5}.<|im_end|>\n",
    "no_reasoning": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    "<think>\n\n</think>\n\nHello.<|im_end|>\n",
    "multi_turn": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n1 + 1?<|im_end|>\n"
    "<|im_start|>assistant\n2<|im_end|>\n<|im_start|>user\n2 + 2?<|im_end|>\n"
    "<|im_start|>assistant\n<think>\nnew thought\n</think>\n\n4<|im_end|>\n",
}
EXPECTED["reasoning_content"] = EXPECTED["think_in_content"]


def test_special_tokens_are_single_ids(embedded_tokenizer):
    tok = embedded_tokenizer
    ids = [tok.encode(t, add_special_tokens=False) for t in SPECIALS]
    assert all(len(i) == 1 for i in ids)
    ids = [i[0] for i in ids]
    assert len(set(ids)) == 5 and min(ids) >= len(tok) - 5  # appended after the BPE ids, as Qwen3
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.bos_token is None
    assert 300 <= len(tok) <= 1100
    # think tags survive skip_special_tokens (as in Qwen3), chat markers do not
    text = "<|im_start|>assistant\n<think>\nx\n</think>\n\ny<|im_end|>"
    assert (
        tok.decode(tok.encode(text), skip_special_tokens=True)
        == "assistant\n<think>\nx\n</think>\n\ny"
    )
    assert tok.encode("a<think>b") == tok.encode("a") + [ids[3]] + tok.encode("b")


def test_digits_are_one_token_each(embedded_tokenizer):
    tok = embedded_tokenizer
    digit_ids = [tok.convert_tokens_to_ids(d) for d in "0123456789"]
    assert len(set(digit_ids)) == 10
    for text in ["12345", "a 907 b", "x=48+3", "There were 75 / 3 = 25."]:
        pieces = tok.convert_ids_to_tokens(tok.encode(text))
        assert all(sum(c.isdigit() for c in p) <= 1 for p in pieces), pieces
        assert sum(p.isdigit() for p in pieces) == sum(c.isdigit() for c in text)
    assert tok.encode(" 7")[-1] == tok.encode("7")[0] == digit_ids[7]


def test_round_trip_any_text(embedded_tokenizer):
    tok = embedded_tokenizer
    rng = random.Random(0)
    alphabet = string.printable + "éß→中😀"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(200)]
    texts += [
        "  leading and trailing  ",
        "tabs\tand\r\nnewlines\n\n\n",
        "\\boxed{42} $x^2$",
        "it 's , . ?",
    ]
    for e in generate_examples(20, 1):
        texts += [e.prompt, e.cot, e.answer]
    for t in texts:
        assert tok.decode(tok.encode(t, add_special_tokens=False)) == t, repr(t)


def test_corpus_is_compact(embedded_tokenizer):
    tok = embedded_tokenizer
    e = generate_examples(1, 0)[0]
    # corpus words are single tokens: far fewer tokens than characters
    assert len(tok.encode(e.cot)) < len(e.cot) / 2.5


@pytest.mark.parametrize("name", sorted(CHATS))
def test_chat_template_exact(embedded_tokenizer, name):
    text = embedded_tokenizer.apply_chat_template(CHATS[name], tokenize=False)
    assert text == EXPECTED[name]


def test_generation_prompt_and_thinking_off(embedded_tokenizer):
    tok, user = embedded_tokenizer, [{"role": "user", "content": "What is 2 + 3?"}]
    head = "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
    assert tok.apply_chat_template(user, tokenize=False) == head
    gen = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert gen == head + "<|im_start|>assistant\n"
    off = tok.apply_chat_template(
        user, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert off == head + "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    on = tok.apply_chat_template(
        user, tokenize=False, add_generation_prompt=True, enable_thinking=True
    )
    assert on == gen


@pytest.mark.parametrize("name", sorted(CHATS))
@pytest.mark.parametrize("gen", [False, True])
def test_chat_template_matches_qwen3(embedded_tokenizer, qwen3_tokenizer, name, gen):
    chat = CHATS[name] if not gen else CHATS[name][:-1]
    kw = {"tokenize": False, "add_generation_prompt": gen}
    assert embedded_tokenizer.apply_chat_template(
        chat, **kw
    ) == qwen3_tokenizer.apply_chat_template(chat, **kw)
    if gen:
        kw["enable_thinking"] = False
        ours = embedded_tokenizer.apply_chat_template(chat, **kw)
        assert ours == qwen3_tokenizer.apply_chat_template(chat, **kw)


def test_shipped_asset_is_checked_and_matches_the_shipped_models(tmp_path, monkeypatch):
    """The embedded tokenizer is the shipped asset: the fingerprint its marker records, which every
    shipped tiny model records too; a damaged asset is refused by name, not silently rebuilt."""
    tok = tokmod.embedded_tokenizer()
    fp = tokenizer_fingerprint(tok)
    marker = json.loads((tokmod.ASSET / "kdlite_tokenizer.json").read_text())
    assert marker["fingerprint"] == fp
    for folder in sorted(p for p in tokmod.ASSET.parent.iterdir() if p.name.startswith("tiny-")):
        assert json.loads((folder / "kdlite_base.json").read_text())["tokenizer"] == fp, folder
    # a plain HF tokenizer folder (what export ships)
    assert tokenizer_fingerprint(AutoTokenizer.from_pretrained(tokmod.ASSET)) == fp
    # callers get their own copy
    tok.chat_template = "{# changed #}"
    assert tokenizer_fingerprint(tokmod.embedded_tokenizer()) == fp
    # a damaged copy of the asset is refused, naming the folder
    bad = tmp_path / "tokenizer"
    shutil.copytree(tokmod.ASSET, bad)
    monkeypatch.setattr(tokmod, "ASSET", bad)
    (bad / "tokenizer.json").write_text("{not json")
    with pytest.raises(tokmod.EmbeddedTokenizerError, match=str(bad)):
        tokmod.embedded_tokenizer()
    other = tokmod.build_embedded_tokenizer(["a completely different corpus " * 3])
    tokmod.save_embedded_tokenizer(other, bad)
    assert tokenizer_fingerprint(tokmod.embedded_tokenizer()) == tokenizer_fingerprint(other)
    marker = json.loads((bad / "kdlite_tokenizer.json").read_text())
    marker["fingerprint"] = fp
    (bad / "kdlite_tokenizer.json").write_text(json.dumps(marker))
    with pytest.raises(tokmod.EmbeddedTokenizerError, match="not the tokenizer its"):
        tokmod.embedded_tokenizer()


def test_a_new_build_is_deterministic_with_the_same_specials_and_layout():
    a, b = tokmod.build_embedded_tokenizer(), tokmod.build_embedded_tokenizer()
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)
    shipped = tokmod.embedded_tokenizer()
    assert a.chat_template == shipped.chat_template
    assert a.all_special_tokens == shipped.all_special_tokens
    for t in ("<think>", "</think>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(a.encode(t, add_special_tokens=False)) == 1


def test_load_tokenizer(embedded_tokenizer, tmp_path):
    fp = tokenizer_fingerprint(embedded_tokenizer)
    assert tokenizer_fingerprint(load_tokenizer("embedded")) == fp
    embedded_tokenizer.save_pretrained(tmp_path / "tok")
    assert tokenizer_fingerprint(load_tokenizer(str(tmp_path / "tok"))) == fp
    for bad in ["no-such-org/no-such-model", str(tmp_path / "missing")]:
        with pytest.raises(TokenizerNotFoundError, match="could not be resolved offline") as err:
            load_tokenizer(bad, revision="main")
        assert isinstance(err.value, ValueError)
        assert "local folder" in str(err.value)


def test_qwen3_fingerprints(qwen3_tokenizer, embedded_tokenizer):
    tok = qwen3_tokenizer
    assert len(tok) == 151669
    assert tok.convert_tokens_to_ids(["<think>", "</think>"]) == [151667, 151668]
    fp = vocab_fingerprint(tok)
    assert fp != vocab_fingerprint(embedded_tokenizer)
    assert fp == vocab_fingerprint(tok)


def test_fingerprints(embedded_tokenizer):
    tok = embedded_tokenizer
    other = copy.deepcopy(tok)
    assert tokenizer_fingerprint(other) == tokenizer_fingerprint(tok)
    other.chat_template = tok.chat_template + "{# changed #}"
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tok)
    assert vocab_fingerprint(other) == vocab_fingerprint(tok)
    base_like = copy.deepcopy(tok)
    base_like.eos_token = "<|endoftext|>"  # Qwen3-Base vs Qwen3: same vocab, other eos
    assert tokenizer_fingerprint(base_like) != tokenizer_fingerprint(tok)
    assert vocab_fingerprint(base_like) == vocab_fingerprint(tok)
    grown = copy.deepcopy(tok)
    grown.add_tokens(["<extra>"])
    assert vocab_fingerprint(grown) != vocab_fingerprint(tok)
