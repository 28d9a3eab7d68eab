"""Example -> token ids with a section id per token, in the Qwen3 chat layout (docs/design.md §3).

    <|im_start|>user\\n{P}<|im_end|>\\n<|im_start|>assistant\\n<think>\\n{CoT}\\n</think>\\n\\n{A}<|im_end|>\\n
    |------------------------- P -------------------------||------- CoT -------||------ A -------|

P is everything before `<think>` (user turn + assistant header), CoT is `<think>`...`</think>`
inclusive, A is everything after `</think>`. The text comes from the tokenizer's own chat template
when it has one (checked against `render_text`, so a template with a default system prompt or
without think blocks is refused instead of silently training on another layout), else from
`render_text`. The three pieces are tokenised separately, which equals whole-string tokenisation
because `<think>`/`</think>` are single added tokens that the tokenizer splits on before any
pre-tokenisation (tests check the equality on the embedded and the real Qwen3 tokenizer).
Trade-off: one template render + three encodes + a check per example, ~2 ms on one shared CPU
core (1,000 synthetic examples in ~2.4 s) instead of one encode; rendering is done once per dataset,
never per step.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdlite.chat import CHAT_TOKENS, END_THINK, IM_END, IM_START, THINK
from kdlite.data.example import COT, A, Example, P, RowRejected

# Strings that would become control tokens if they appeared inside an example's text (any
# tokenizer); `render` adds every control token of the tokenizer at hand (`control_tokens`).
RESERVED = CHAT_TOKENS


@dataclass(frozen=True)
class Rendered:
    input_ids: list[int]  # whole-string tokenisation of the rendered chat text
    section_ids: list[int]  # same length; P=0, COT=1, A=2 (docs/design.md §3)
    source_id: str


class TemplateMismatch(ValueError):
    """The tokenizer's chat template does not produce the docs/design.md §3 layout."""


def messages(example: Example) -> list[dict[str, str]]:
    """The chat a template renders: one user turn, one assistant turn with reasoning."""
    return [
        {"role": "user", "content": example.prompt},
        {
            "role": "assistant",
            "content": f"{THINK}\n{example.cot}\n{END_THINK}\n\n{example.answer}",
        },
    ]


def render_text(example: Example) -> str:
    """The docs/design.md §3 training text. Like Qwen3's template, newlines around the CoT and before the
    answer are normalised (`cot.strip("\\n")`, `answer.lstrip("\\n")`)."""
    check_text(example, RESERVED)
    cot, answer = example.cot.strip("\n"), example.answer.lstrip("\n")
    return (
        f"{IM_START}user\n{example.prompt}{IM_END}\n"
        f"{IM_START}assistant\n{THINK}\n{cot}\n{END_THINK}\n\n{answer}{IM_END}\n"
    )


def control_tokens(tokenizer) -> tuple[str, ...]:
    """Every string the tokenizer turns into a control id rather than text: its special tokens and
    its added tokens written as markup (`<...>`: Qwen3's `<tool_call>`, `<|vision_start|>`,
    `<|fim_prefix|>`, `<|box_start|>`, `<|object_ref_start|>`, ...). Added tokens that are plain
    text (a word, a run of spaces) are not control tokens and stay allowed."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    found = set(getattr(tokenizer, "all_special_tokens", []))
    for token in added.values():
        text = str(getattr(token, "content", token))
        if getattr(token, "special", False) or (text.startswith("<") and text.endswith(">")):
            found.add(text)
    return tuple(sorted(found | set(RESERVED)))


def check_text(example: Example, tokens: tuple[str, ...]) -> None:
    """Reject (RowRejected `reserved_token_in_text`) an example whose text holds a control token:
    kdlite never encodes data text as a control id, and never silently rewrites it either."""
    for field in ("prompt", "cot", "answer"):
        text = getattr(example, field)
        for tag in tokens:
            if tag in text:
                raise RowRejected(
                    "reserved_token_in_text", f"{example.source_id}: {tag} in {field}"
                )


def check_tokenizer(tokenizer) -> tuple[int, int]:
    """(id of <think>, id of </think>); refuses a tokenizer where either is not a single token."""
    ids = []
    for tag in (THINK, END_THINK):
        enc = tokenizer.encode(tag, add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(
                f"{tag!r} is {len(enc)} tokens ({enc}) in this tokenizer, not one: section ids need "
                "single think-tag tokens (as in Qwen3, ids 151667/151668); add them as added tokens"
            )
        ids.append(enc[0])
    return ids[0], ids[1]


def templated_text(example: Example, tokenizer) -> str:
    """The tokenizer's chat template applied to the example, checked to be the docs/design.md §3 layout; falls
    back to `render_text` when the tokenizer has no template."""
    expected = render_text(example)
    if not getattr(tokenizer, "chat_template", None):
        return expected
    text = tokenizer.apply_chat_template(
        messages(example), tokenize=False, add_generation_prompt=False
    )
    if text != expected:
        at = next(
            (i for i, (a, b) in enumerate(zip(text, expected, strict=False)) if a != b),
            min(len(text), len(expected)),
        )
        raise TemplateMismatch(
            f"{example.source_id}: the tokenizer's chat template does not give the Qwen3 layout "
            f"(docs/design.md §3); first difference at char {at}: template {text[max(0, at - 30) : at + 30]!r} "
            f"vs expected {expected[max(0, at - 30) : at + 30]!r}. Use a tokenizer with a Qwen3-style "
            "template (or none, to use kdlite's own rendering)."
        )
    return text


def render(example: Example, tokenizer) -> Rendered:
    """Tokenise the docs/design.md §3 text in three pieces and label every token P, CoT or A."""
    think_id, end_think_id = check_tokenizer(tokenizer)
    check_text(example, control_tokens(tokenizer))
    text = templated_text(example, tokenizer)
    start = text.index(THINK)
    end = text.index(END_THINK) + len(END_THINK)
    pieces = (text[:start], text[start:end], text[end:])
    input_ids: list[int] = []
    section_ids: list[int] = []
    for section, piece in zip((P, COT, A), pieces, strict=True):
        ids = tokenizer.encode(piece, add_special_tokens=False)
        input_ids += ids
        section_ids += [section] * len(ids)
    n_p = section_ids.count(P)
    n_cot = section_ids.count(COT)
    assert input_ids[n_p] == think_id and input_ids[n_p + n_cot - 1] == end_think_id
    return Rendered(input_ids, section_ids, example.source_id)
