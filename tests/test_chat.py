"""kdlite/chat.py: the chat tokens are single tokens in both tokenizers, and the one stop list is
what the exported generation config and the evaluator both stop at."""

from __future__ import annotations

import pytest

from kdlite import chat
from kdlite.chat import CHAT_TOKENS, ENDOFTEXT, IM_END, IM_START, STOP_TOKENS, stop_token_ids

# The ids the Qwen3 release assigns (tokenizer.json) and the `eos_token_id` list of its
# generation_config.json.
QWEN3_IDS = {
    ENDOFTEXT: 151643,
    IM_START: 151644,
    IM_END: 151645,
    "<think>": 151667,
    "</think>": 151668,
}
QWEN3_GENERATION_EOS = [151645, 151643]


def _single_token_ids(tok) -> dict[str, int]:
    ids = {}
    for token in CHAT_TOKENS:
        encoded = tok.encode(token, add_special_tokens=False)
        assert encoded == [tok.convert_tokens_to_ids(token)], (token, encoded)
        ids[token] = encoded[0]
    return ids


def _check_roles(tok) -> None:
    """<|...|> tokens are special (dropped by skip_special_tokens); the think tags survive it."""
    assert {ENDOFTEXT, IM_START, IM_END} <= set(tok.all_special_tokens)
    text = f"{IM_START}assistant\n<think>\nx\n</think>\n\ny{IM_END}{ENDOFTEXT}"
    decoded = tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=True)
    assert "<|" not in decoded and "<think>" in decoded and "</think>" in decoded


def test_chat_tokens_are_single_tokens_of_the_embedded_tokenizer(embedded_tokenizer):
    ids = _single_token_ids(embedded_tokenizer)
    assert len(set(ids.values())) == len(CHAT_TOKENS)
    _check_roles(embedded_tokenizer)
    assert stop_token_ids(embedded_tokenizer) == [ids[IM_END], ids[ENDOFTEXT]]


def test_chat_tokens_and_stop_ids_match_the_real_qwen3(qwen3_tokenizer):
    assert _single_token_ids(qwen3_tokenizer) == QWEN3_IDS
    _check_roles(qwen3_tokenizer)
    assert stop_token_ids(qwen3_tokenizer) == QWEN3_GENERATION_EOS
    assert qwen3_tokenizer.eos_token == IM_END and qwen3_tokenizer.pad_token == ENDOFTEXT


def test_the_export_and_the_evaluator_stop_at_the_same_ids(tmp_path, embedded_tokenizer):
    from transformers import AutoConfig, GenerationConfig

    from kdlite.eval import models as eval_models
    from kdlite.export import export_student
    from kdlite.models import random_model

    tok = embedded_tokenizer
    out = export_student(random_model("tiny-student", vocab_size=len(tok)), tok, tmp_path / "x")
    ref = eval_models.resolve_model(str(out), tmp_path / "eval")
    eval_stops = eval_models.stop_token_ids(eval_models.load_eval_tokenizer(ref))
    want = tok.convert_tokens_to_ids(list(STOP_TOKENS))
    assert eval_stops == want == [tok.convert_tokens_to_ids(IM_END), tok.pad_token_id]
    assert GenerationConfig.from_pretrained(out).eos_token_id == want
    assert AutoConfig.from_pretrained(out).eos_token_id == want


def _word_tokenizer(eos: str | None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(
        models.WordLevel({"a": 0, "b": 1, "</s>": 2, "[UNK]": 3}, unk_token="[UNK]")
    )
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, unk_token="[UNK]")


def test_a_tokenizer_of_another_family_stops_at_its_own_eos_or_is_refused():
    from kdlite.eval.benchmarks import EvalError
    from kdlite.eval.models import stop_token_ids as eval_stop_token_ids

    assert stop_token_ids(_word_tokenizer("</s>")) == [2]  # unknown stop tokens map to [UNK]
    no_eos = _word_tokenizer(None)
    with pytest.raises(ValueError, match="never stop"):
        chat.stop_token_ids(no_eos)
    with pytest.raises(EvalError, match="never stop"):
        eval_stop_token_ids(no_eos)
