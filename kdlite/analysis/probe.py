"""The closing probe: does a model still close a derivation with a stated answer?

A diagnostic for the forgetting hypothesis of docs/mini-replication.md. The tiny student base was
pre-trained on step-by-step solutions that end in ` The answer is \\boxed{N}.` and `<|endoftext|>`;
distillation on traces it has to survive. For each held-out synthetic trace the probe puts the
model in the chat layout (docs/design.md §3) right after `<think>\\n` and part of the trace, and scores the
closing ` The answer is \\boxed{N}.` followed by an end token (N the gold answer) under teacher
forcing, at two points:
- `after_first_pass`: after the restatement and the first pass ("First, ... So Mia has 12
  apples at the end."), where the base's own documents would close;
- `after_recheck`: after the self-reflection re-check paragraph as well ("... so 12 is right."),
  a point the base never saw in pre-training;
- `after_think`: after the whole CoT, `</think>` and the answer section's chain line, where the
  trace itself writes `The answer is \boxed{N}.` and the chat layout's `<|im_end|>` (this point's
  closing and end token are the trace's, whatever `end` is). A student that reaches the end of its
  think block but has not learned to state the answer fails here;
- `end_think_after_first_pass`: after the first pass, the chat layout's closing: `</think>`, the
  trace's own answer section and `<|im_end|>`. Where a base that has read short chat-layout
  solutions (`generate_base_documents(chat_share=...)`) ends its think block; a left-cropped student
  that kept that habit stops thinking once its first pass has derived the answer.
- `end_think_after_recheck`: the same chat closing after the re-check paragraph ("... so 12 is
  right."). Where a base that has read think blocks ending after a check
  (`generate_base_documents(check_share=...)`) can end its own; the point a left-cropped student
  reaches when it completes the re-check it saw begin (docs/mini-replication.md §7).
The first two points measure the base's habit; a student that has learned the trace format has
also learned that a trace does not close there (it starts a re-check), so a collapse at those
points is forgetting *and* format learning. `after_think` is the closing that evaluation needs.
Per point: the mean over traces of the closing's summed log-prob (text + end token), the same per
token, the text and the end token apart, and the share of traces whose every closing token is the
model's argmax ("greedy closes": greedy decoding would write exactly this closing). The closing's
answer can be wrong (a tiny base cannot compute a 4-step chain) while the model still decides to
close, so the decision is also scored alone: `p_lead`, the mean probability of the closing's lead
(`\n</think>` at the `end_think_*` points, "The answer is" at the others), and `lead_greedy`, the
share of traces where greedy decoding writes it. A few greedy continuations are kept as samples,
decoded with special tokens.

Traces whose first pass concludes a wrong value (the corpus's deliberate slips) are skipped and
counted: a closing with the gold N after a wrong first pass is not the habit being probed.

Pure functions of (model, tokenizer, examples); `kdlite.cli.probe` is the CLI that loads a model
folder, picks held-out traces and writes `probe.json` beside the model's evaluation results.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kdlite.chat import END_THINK, ENDOFTEXT, IM_END, THINK
from kdlite.data.example import Example
from kdlite.data.render import render_text
from kdlite.data.synthetic import CUE_RE, boxed_answer

POINTS = (
    "after_first_pass",
    "after_recheck",
    "after_think",
    "end_think_after_first_pass",
    "end_think_after_recheck",
)
CLOSING = " The answer is \\boxed{{{answer}}}."
DEFAULT_END = ENDOFTEXT
TURN_END = IM_END
_FIRST_PASS_END = re.compile(r"has (-?\d+) [^.]* at the end\.$")


@dataclass(frozen=True)
class ProbeText:
    context: str  # the chat-layout text up to the probe point
    closing: str  # the closing text, without the end token
    end: str | None = None  # the end token; None: the probe's `end`
    # the closing's first words that make the decision to close here ("\n</think>", "The answer
    # is"); the rest is the answer, which a model may get wrong while still deciding to close
    lead: str = ""


def probe_texts(example: Example) -> dict[str, ProbeText] | None:
    """The probe points of one synthetic trace; None when its first pass concludes a value other
    than the gold answer (a slip). Raises ValueError naming the example when the CoT lacks the
    corpus's paragraph structure (restatement, "First, ..." pass, a re-check with a cue)."""
    answer = boxed_answer(example)
    paras = example.cot.strip("\n").split("\n\n")
    first = next((i for i, p in enumerate(paras) if p.startswith("First, ")), None)
    if first is None or first + 1 >= len(paras) or not CUE_RE.search(paras[first + 1]):
        raise ValueError(
            f"{example.source_id}: the CoT has no 'First, ...' paragraph followed by a re-check "
            "with a self-reflection cue; the closing probe needs the synthetic corpus's traces"
        )
    m = _FIRST_PASS_END.search(paras[first])
    if m is None:
        raise ValueError(f"{example.source_id}: the first pass does not end in '... at the end.'")
    if int(m.group(1)) != answer:
        return None
    text = render_text(example)
    head = text[: text.index(THINK + "\n") + len(THINK) + 1]
    closing = CLOSING.format(answer=answer)
    tail = closing.lstrip()
    if not text.endswith(tail + TURN_END + "\n"):
        raise ValueError(f"{example.source_id}: the answer section does not end in {tail!r}")
    after_first, after_recheck = (head + "\n\n".join(paras[: k + 1]) for k in (first, first + 1))
    end_think = f"\n{END_THINK}\n\n" + example.answer.strip("\n")
    says, ends = closing[: closing.index(" \\boxed")], f"\n{END_THINK}"
    return {
        "after_first_pass": ProbeText(after_first, closing, lead=says),
        "after_recheck": ProbeText(after_recheck, closing, lead=says),
        "after_think": ProbeText(
            text[: -len(tail + TURN_END + "\n")], tail, TURN_END, lead=says.lstrip()
        ),
        "end_think_after_first_pass": ProbeText(after_first, end_think, TURN_END, lead=ends),
        "end_think_after_recheck": ProbeText(after_recheck, end_think, TURN_END, lead=ends),
    }


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def closing_ids(tokenizer: Any, probe: ProbeText, end_id: int) -> tuple[list[int], list[int]]:
    """(context ids, closing ids + end id). The closing's tokens are those of the whole text after
    the context's, so they are what the model reads in a trace; refuses a tokenizer that merges
    across the boundary (the context's ids would not be a prefix of the whole text's)."""
    ctx = _encode(tokenizer, probe.context)
    full = _encode(tokenizer, probe.context + probe.closing)
    if full[: len(ctx)] != ctx:
        raise ValueError(
            "the tokenizer merges the context's last token with the closing; cannot separate them"
        )
    return ctx, full[len(ctx) :] + [end_id]


def lead_tokens(tokenizer: Any, probe: ProbeText, ctx: list[int], closing: list[int]) -> int:
    """How many of the closing's tokens spell `probe.lead` (0 when it has none), given the ids
    `closing_ids` made of the same probe; refuses a lead whose tokens are not a prefix of the
    closing's (a merge across the lead's end)."""
    if not probe.lead:
        return 0
    if not probe.closing.startswith(probe.lead):
        raise ValueError(f"the lead {probe.lead!r} does not begin the closing {probe.closing!r}")
    lead = _encode(tokenizer, probe.context + probe.lead)
    if ctx + closing[: len(lead) - len(ctx)] != lead:
        raise ValueError(f"the tokenizer merges the lead {probe.lead!r} with what follows it")
    return len(lead) - len(ctx)


@torch.no_grad()
def score_closing(model: Any, ctx: list[int], closing: list[int]) -> tuple[list[float], list[bool]]:
    """Log-prob of each closing token given everything before it, and whether each one is the
    model's argmax (teacher-forced greedy agreement: all of them = greedy decoding writes it)."""
    ids = torch.tensor([ctx + closing])
    logits = model(input_ids=ids).logits[0, len(ctx) - 1 : -1].float()
    logp = torch.log_softmax(logits, dim=-1)
    target = torch.tensor(closing)
    lp = logp.gather(1, target[:, None]).squeeze(1)
    return lp.tolist(), (logp.argmax(-1) == target).tolist()


@torch.no_grad()
def greedy(model: Any, tokenizer: Any, ctx: list[int], max_new_tokens: int, stop: list[int]) -> str:
    out = model.generate(
        torch.tensor([ctx]),
        attention_mask=torch.ones(1, len(ctx), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=stop,
        pad_token_id=stop[0],
    )
    return tokenizer.decode(out[0, len(ctx) :], skip_special_tokens=False)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def closing_probe(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    n: int = 40,
    end: str = DEFAULT_END,
    n_greedy: int = 5,
    max_new_tokens: int = 48,
) -> dict[str, Any]:
    """Probe `model` on the first `n` usable traces of `examples` (slips skipped and counted).

    Returns a JSON-able dict: {"n", "skipped_slips", "end", "closing", "points": {point: {
    "logprob", "logprob_per_token", "logprob_text", "logprob_end", "greedy_closes", "tokens",
    "lead", "p_lead", "lead_greedy"}},
    "samples": [{"id", point: greedy continuation, ...}]}. Raises ValueError when fewer than `n`
    usable traces are given or `end` is not a single token of the tokenizer.
    """
    end_ids = {}
    for token in (end, TURN_END):
        ids = _encode(tokenizer, token)
        if len(ids) != 1:
            raise ValueError(f"end token {token!r} is {len(ids)} tokens in this tokenizer, not one")
        end_ids[token] = ids[0]
    stop = sorted(set(end_ids.values()))
    model.eval()
    used: list[tuple[Example, dict[str, ProbeText]]] = []
    skipped = 0
    for example in examples:
        texts = probe_texts(example)
        if texts is None:
            skipped += 1
            continue
        used.append((example, texts))
        if len(used) == n:
            break
    if len(used) < n:
        raise ValueError(f"only {len(used)} usable traces of {len(examples)} given, n={n} asked")

    points: dict[str, Any] = {}
    samples: list[dict[str, str]] = [{"id": e.source_id} for e, _ in used[:n_greedy]]
    for point in POINTS:
        totals, per_token, text_lp, end_lp, closes = [], [], [], [], []
        n_tokens: list[float] = []
        lead_p, lead_greedy = [], []
        for i, (_, texts) in enumerate(used):
            probe = texts[point]
            ctx, closing = closing_ids(tokenizer, probe, end_ids[probe.end or end])
            lp, hits = score_closing(model, ctx, closing)
            k = lead_tokens(tokenizer, probe, ctx, closing)
            totals.append(sum(lp))
            per_token.append(sum(lp) / len(lp))
            text_lp.append(sum(lp[:-1]))
            end_lp.append(lp[-1])
            closes.append(all(hits))
            n_tokens.append(float(len(lp)))
            lead_p.append(math.exp(sum(lp[:k])))
            lead_greedy.append(float(all(hits[:k])))
            if i < n_greedy:
                samples[i][point] = greedy(model, tokenizer, ctx, max_new_tokens, stop)
        points[point] = {
            "logprob": _mean(totals),
            "logprob_per_token": _mean(per_token),
            "logprob_text": _mean(text_lp),
            "logprob_end": _mean(end_lp),
            "greedy_closes": _mean([float(c) for c in closes]),
            "tokens": _mean(n_tokens),  # closing tokens per trace, end token included
            # the decision alone: the probability of the lead ("\n</think>", "The answer is")
            # and the share of traces where greedy decoding writes it
            "lead": used[0][1][point].lead,
            "p_lead": _mean(lead_p),
            "lead_greedy": _mean(lead_greedy),
        }
    return {
        "n": len(used),
        "skipped_slips": skipped,
        "end": end,
        "closing": CLOSING,
        "points": points,
        "samples": samples,
    }
