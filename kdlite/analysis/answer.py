"""Where in a chain of thought the final answer is first derived, found without any LLM.

The study (Appendix A.2) asked an LLM where the CoT first correctly derives the final answer; this
is the rule-based version, a pure function of an Example's text:
1. the final answer is the last `\\boxed{...}` in A (else the last one in the CoT), braces matched;
2. candidates are occurrences of that value in the CoT on token boundaries (`31` does not match
   inside `131` or `3.14`; numbers also match with thousands separators, `1,000` for `1000`;
   non-numeric answers match whitespace-insensitively);
3. an occurrence counts as a *result* only if a result cue ends the text just before it: `=`,
   `\\approx`, `\\boxed{`, or a word such as is / are / was / equals / gives / gets / becomes /
   makes / yields / answer (is) / total (of) / result (is), optionally followed by `:` or `$`;
4. and not as a restatement of the prompt: if the occurrence with its preceding two words (case
   and whitespace ignored) appears in the prompt, the CoT is quoting the question, not deriving.
The derivation point is the end of the first occurrence passing 3 and 4.

Trade-off: the cue list favours precision over recall. A derivation written without a cue ("...
leaves 31 coins") is missed and the next cued occurrence (often "So ... is 31") is taken, which
errs late; examples with no cued occurrence are counted as not found rather than guessed.
Positions are relative, measured in whatever unit `count` measures (characters by default; the CLI
passes the tokenizer). The full-sequence position is (P + CoT prefix) / (P + CoT + A), ignoring the
dozen chat-template tokens around the sections.

Self-reflection cues (docs/paper.md's keyword list) are counted case-insensitively on word boundaries,
non-overlapping, longest phrase first ("double-check again" counts once); inflected forms count
(-s, -d, -ed, -ing: "rechecking", "reconsidered") except for "wait", which counts only as itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from kdlite.analysis.paper import REFLECTION_KEYWORDS
from kdlite.data.example import Example


def boxed_contents(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` / `\\fbox{...}` in text, nested braces matched."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end() : i - 1])
    return out


def final_answer(example: Example) -> str | None:
    """The last boxed answer of A, else of the CoT; None when neither has one."""
    for text in (example.answer, example.cot):
        boxed = [b for b in boxed_contents(text) if b.strip()]
        if boxed:
            return normalize(boxed[-1])
    return None


def normalize(answer: str) -> str:
    s = answer.strip().rstrip(".").strip().strip("$").strip()
    s = re.sub(r"\\[,!;: ]", "", s)  # LaTeX spacing
    s = re.sub(r"\\(?:left|right)\b", "", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    m = re.fullmatch(r"\\text\{(.*)\}", s)
    if m:
        s = m.group(1)
    s = s.rstrip(".").strip()
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return s


_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?")


def value_pattern(value: str) -> re.Pattern[str]:
    """Regex for an answer value on token boundaries (see the module docstring)."""
    if _NUMBER.fullmatch(value):
        sign, body = (value[0], value[1:]) if value[0] in "+-" else ("", value)
        integer, _, frac = body.partition(".")
        grouped = f"{int(integer):,}" if len(integer) > 3 else integer
        alternatives = {integer, grouped}
        core = (
            "(?:"
            + "|".join(re.escape(a) for a in sorted(alternatives, key=len, reverse=True))
            + ")"
        )
        if frac:
            core += re.escape("." + frac)
        return re.compile(rf"(?<![\w.,]){re.escape(sign)}{core}(?![\w]|[.,]\d)")
    pieces = [re.escape(ch) for ch in value if not ch.isspace()]
    return re.compile(r"(?<![\w])" + r"\s*".join(pieces) + r"(?![\w])")


_RESULT_CUE = re.compile(
    r"(?:=|≈|\\approx|\\boxed\{|\b(?:is|are|was|were|equals?|gives?|gets?|got|becomes?|yields?|"
    r"makes?|answer(?:\s+is)?|total(?:\s+is|\s+of)?|result(?:\s+is)?))\s*:?\s*\$?\s*(?:\\\(|\\\[)?\s*$",
    re.IGNORECASE,
)


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def _is_restatement(cot: str, start: int, end: int, prompt_squashed: str) -> bool:
    words = cot[max(0, start - 60) : start].split()[-2:]
    context = _squash(" ".join(words) + cot[start:end])
    return bool(context) and context in prompt_squashed


_KEYWORDS = sorted(REFLECTION_KEYWORDS, key=len, reverse=True)
_REFLECTION = re.compile(
    r"\b(?:"
    + "|".join(
        r"\s+".join(map(re.escape, kw.split())) + ("" if kw == "wait" else r"(?:s|d|ed|ing)?")
        for kw in _KEYWORDS
    )
    + r")\b",
    re.IGNORECASE,
)


def count_reflections(text: str) -> int:
    return len(_REFLECTION.findall(text))


@dataclass(frozen=True)
class Derivation:
    value: str  # normalised final answer
    cot_char: int  # end of the first derivation in the CoT (characters)
    cot_rel: float  # relative position in the CoT
    full_rel: float  # relative position in P + CoT + A
    reflections_before: int
    reflections_total: int  # in the whole CoT


def find_derivation(
    example: Example, count: Callable[[str], int] = len
) -> tuple[Derivation | None, str]:
    """First derivation of the final answer in the CoT, and a reason ('found' or why not)."""
    value = final_answer(example)
    if value is None:
        return None, "no_boxed_answer"
    if not example.cot:
        return None, "empty_cot"
    m, seen = _first_result(example.cot, value, _squash(example.prompt))
    if m is not None:
        head = example.cot[: m.end()]
        n_p, n_head, n_cot = count(example.prompt), count(head), count(example.cot)
        total = n_p + n_cot + count(example.answer)
        return (
            Derivation(
                value=value,
                cot_char=m.end(),
                cot_rel=n_head / n_cot if n_cot else 0.0,
                full_rel=(n_p + n_head) / total if total else 0.0,
                reflections_before=count_reflections(head),
                reflections_total=count_reflections(example.cot),
            ),
            "found",
        )
    return None, "no_cued_occurrence" if seen else "answer_not_in_cot"


def _first_result(text: str, value: str, prompt_squashed: str) -> tuple[re.Match | None, bool]:
    """The first occurrence of `value` in `text` that passes rules 3 and 4 (a cued result, not a
    quote of the prompt), and whether the value occurs at all."""
    seen = False
    for m in value_pattern(value).finditer(text):
        seen = True
        if not _RESULT_CUE.search(text[max(0, m.start() - 40) : m.start()]):
            continue
        if _is_restatement(text, m.start(), m.end(), prompt_squashed):
            continue
        return m, True
    return None, seen


def derived_before_reflection(text: str, gold: str, prompt: str = "") -> bool:
    """Whether a generated output derives `gold` before its first self-reflection cue (the whole
    output when it has none), by the rules above: a cued result, not a quote of the prompt.

    An evaluation diagnostic, next to accuracy, for the study's claim that the lead of a trace
    carries the reasoning: a student trained on left crops may derive the answer in its first pass,
    then reflect without ever closing the think block, so the graded final answer is missing. It
    is lenient in one way, any cued occurrence before the cue counts, also inside a derivation that
    goes on to a different answer.
    """
    cue = _REFLECTION.search(text)
    return derived_anywhere(text if cue is None else text[: cue.start()], gold, prompt)


def derived_anywhere(text: str, gold: str, prompt: str = "") -> bool:
    """Whether a generated output derives `gold` anywhere (a cued result, not a quote of the
    prompt), whether or not it goes on to state it as its final answer.

    The companion of `derived_before_reflection` for traces that reflect inside their first pass
    (the synthetic corpus since it follows Table 6: its self-checks come before the first
    derivation, so no output of a student trained on it derives the answer before its first
    cue). Accuracy minus this share is the reasoning that was done but never concluded: an output
    cut at the token limit, or one that never closes its think block.
    """
    value = normalize(gold)
    if not value:
        return False
    m, _ = _first_result(text, value, _squash(prompt))
    return m is not None
