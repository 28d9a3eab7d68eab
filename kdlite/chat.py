"""The Qwen3 chat layout's special tokens and the one stop list generation uses.

Every module that writes, parses or stops on the chat layout (docs/design.md §3) takes these
strings from here: the embedded tokenizer adds them, rendering splits sections at the think tags,
the dataset adapters reject rows that contain them, the export writes the stop ids into the
student's generation config, and the evaluator stops sampling at them.

Ids in Qwen3's vocabulary (151,669 ids): `<|endoftext|>` 151643, `<|im_start|>` 151644,
`<|im_end|>` 151645, `<think>` 151667, `</think>` 151668. The first three are special tokens;
the think tags are plain added tokens (special=False), so `decode(skip_special_tokens=True)` keeps
them and a grader can find the answer after `</think>`.
"""

from __future__ import annotations

from typing import Any

ENDOFTEXT = "<|endoftext|>"  # end of a document; Qwen3's pad token and Qwen3-*-Base's EOS
IM_START = "<|im_start|>"  # opens a turn: `<|im_start|>user\n`
IM_END = "<|im_end|>"  # closes a turn; Qwen3's (chat) EOS
THINK = "<think>"  # opens the CoT section
END_THINK = "</think>"  # closes it; the answer section follows

# Every control token of the chat layout: text that must never reach a model as data (a row
# holding one is rejected, not rewritten: it would become a control id or move a section boundary).
CHAT_TOKENS = (IM_START, IM_END, ENDOFTEXT, THINK, END_THINK)

# Where generation stops, in this order: the end of the assistant's turn, then the end of a
# document. This is the `eos_token_id` list of Qwen3's own generation_config.json
# ([151645, 151643]). Both are needed: a student distilled from a Qwen3-*-Base checkpoint (whose
# tokenizer EOS is `<|endoftext|>`) answers in the chat layout and ends its turn with `<|im_end|>`,
# while a base model that never learned the chat layout ends text with `<|endoftext|>`. The
# exported generation config (kdlite/export.py) and the evaluator (kdlite/eval/models.py) both use
# `stop_token_ids`, so a model stops at the same ids under `generate()`, vLLM and evaluate.py.
STOP_TOKENS = (IM_END, ENDOFTEXT)


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The ids of `STOP_TOKENS` that `tokenizer` has as single tokens, in `STOP_TOKENS` order.

    A tokenizer of another family with neither token falls back to its own `eos_token_id`; one
    with no EOS at all is refused (ValueError): generation would never stop.
    """
    ids: list[int] = []
    for token in STOP_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id and tid not in ids:
            ids.append(tid)
    if not ids and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError(
            f"tokenizer has none of the stop tokens {STOP_TOKENS} and no eos token: "
            "generation would never stop"
        )
    return ids
