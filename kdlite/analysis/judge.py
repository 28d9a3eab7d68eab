"""Optional LLM judge for reasoning traces, through any OpenAI-compatible chat endpoint.

Off by default: the rule-based analysis in `answer.py` needs no model. When asked
(`python -m kdlite.cli.traces ... judge=true judge_endpoint=http://localhost:8000/v1 judge_model=...`,
e.g. a local vLLM server), each example is sent once with `PROMPT` below, at temperature 0, and the
model must answer with one JSON object; the verdict holds the three entailment questions of the
study's Appendix A.2 and a verbatim quote of the first derivation, located back in the CoT to give
its position. Trade-off: a verbatim quote is checkable (a quote not found in the CoT is recorded as
unlocated instead of trusting an invented position) but a model that paraphrases loses the position.
Only the standard library is used (urllib), so no client package is needed.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdlite.data.example import Example

PROMPT = """You are checking a worked solution. Read the PROBLEM, the REASONING and the FINAL ANSWER.

PROBLEM:
{prompt}

REASONING:
{cot}

FINAL ANSWER:
{answer}

Answer with one JSON object and nothing else, with these keys:
- "cot_entails_prompt": true if the REASONING restates or correctly uses every condition of the PROBLEM.
- "cot_entails_answer": true if the FINAL ANSWER follows from the REASONING.
- "answer_matches_cot": true if the final value in the FINAL ANSWER equals the value the REASONING concludes.
- "first_derivation": the shortest verbatim excerpt (copied exactly, at most 30 words) of the REASONING
  where the final answer's value is first correctly derived as a result, not where the problem is
  restated; "" if it is never derived.
"""


@dataclass(frozen=True)
class Verdict:
    cot_entails_prompt: bool | None
    cot_entails_answer: bool | None
    answer_matches_cot: bool | None
    first_derivation: str
    cot_rel: float | None  # end of the located quote / CoT length (characters); None if unlocated


def messages(example: Example) -> list[dict[str, str]]:
    text = PROMPT.format(prompt=example.prompt, cot=example.cot, answer=example.answer)
    return [{"role": "user", "content": text}]


def parse_verdict(reply: str, example: Example) -> Verdict:
    """Parse the model's JSON (the first {...} block, code fences tolerated) into a Verdict."""
    match = re.search(r"\{.*\}", reply, re.DOTALL)
    data: dict[str, Any] = {}
    if match:
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError:
            data = {}

    def flag(key: str) -> bool | None:
        value = data.get(key)
        return value if isinstance(value, bool) else None

    quote = str(data.get("first_derivation") or "").strip()
    cot_rel = None
    if quote:
        found = re.search(r"\s+".join(map(re.escape, quote.split())), example.cot)
        if found and example.cot:
            cot_rel = found.end() / len(example.cot)
    return Verdict(
        flag("cot_entails_prompt"),
        flag("cot_entails_answer"),
        flag("answer_matches_cot"),
        quote,
        cot_rel,
    )


def post_json(url: str, payload: dict[str, Any], api_key: str | None, timeout: float) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {api_key or 'EMPTY'}",
        },
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def judge(
    example: Example,
    endpoint: str,
    model: str,
    *,
    api_key: str | None = None,
    timeout: float = 300.0,
    max_tokens: int = 1024,
    post: Callable[[str, dict[str, Any], str | None, float], dict] = post_json,
) -> Verdict:
    """Ask the endpoint (`.../v1`) for a verdict on one example."""
    payload = {
        "model": model,
        "messages": messages(example),
        "temperature": 0.0,
        "max_tokens": max_tokens,
    }
    reply = post(endpoint.rstrip("/") + "/chat/completions", payload, api_key, timeout)
    return parse_verdict(reply["choices"][0]["message"]["content"], example)
