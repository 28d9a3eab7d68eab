"""The embedded reasoning corpus: seeded multi-step arithmetic word problems with long-CoT traces.

Each trace has the structure the study measured in real reasoning data (docs/paper.md, trace
analysis / Table 6): the CoT restates the problem, then derives the answer step by step with 2-5
short self-checks resolved on the spot ("Wait, is 12 / 4 = 3 right? Yes.", "Let me verify again:
3 * 4 = 12. Good."), each carrying one of the study's reflection keywords: 2.73 cues before the
first derivation on average (study: 1.91-5.13; 2.23 / 2.42 / 2.76 for OpenThoughts, Bespoke,
Synthetic-1). The answer is first derived at 48.8% of the full sequence (study 40.7-55.9%; 49.4% of
the CoT, study 46.6-66.8%). Then a re-check opens with a cue ("Wait, let me check again ...") and
derives it again in the other order (undoing the steps from the answer back to the start), in ~10%
of traces catching and correcting a slip of the first pass; a second, forward verification and a
conclusion that restates the answer ("So the answer is 17: ...") close the CoT, so the later tokens
are verification and restating, as in the study's traces. No cue puts a backward value after the
word "answer" (a whole-text grader would read it as the answer). The answer section is a short
summary ending in `\\boxed{N}`: by default the chain again in one line, which re-derives the answer
from the problem's start (and so corrects a think block that drifted), or with
`answer_form="restate"` one sentence stating the think block's conclusion
(docs/mini-replication.md §8).

Trade-off: the problems are deliberately easy (2-4 steps, every value in 1..99, +, -, *, / with
exact division) so a tiny transformer trained on 2 CPU cores for minutes can learn them; an example
renders to a median of 413 tokens (10-90%: 343-505) with the embedded tokenizer, digits one token
each, versus ~2,000 for the study's datasets. The section shares are P 11% / CoT 78% / A 11%
(study: ~5 / 76 / 18%). What matters for the study's effects is that structure (CoT dominant,
answer reached mid-CoT after a few resolved self-checks, then verified), not the difficulty.

Benchmark problems never appear among training prompts, for any seed: the arithmetic of a problem
(start value and the list of operations, names and wording excluded) is hashed, and 1 in 10 of that
space is the benchmark's, the rest training's. Both generators are pure python, deterministic per
seed and prefix-stable (`generate_examples(n, s)[:k] == generate_examples(k, s)`).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from kdlite.chat import END_THINK
from kdlite.data.example import Example, make_source_id
from kdlite.data.render import render_text

# 1 in BENCH_BUCKETS of the problem space (by hash of the arithmetic) is reserved for the benchmark.
BENCH_BUCKETS = 10
MAX_VALUE = 99
# steps per problem and their weights: 2-step problems are half of every stream
STEP_COUNTS, STEP_WEIGHTS = (2, 3, 4), (5, 4, 1)
MIN_STEPS, MAX_STEPS = STEP_COUNTS[0], STEP_COUNTS[-1]

# (name, subject pronoun, possessive)
_PEOPLE = [
    ("Mia", "she", "her"),
    ("Leo", "he", "his"),
    ("Ava", "she", "her"),
    ("Sam", "he", "his"),
    ("Noah", "he", "his"),
    ("Emma", "she", "her"),
    ("Liam", "he", "his"),
    ("Zoe", "she", "her"),
    ("Omar", "he", "his"),
    ("Lena", "she", "her"),
    ("Ravi", "he", "his"),
    ("Ines", "she", "her"),
]
_ITEMS = [
    "apples",
    "marbles",
    "stickers",
    "books",
    "coins",
    "cards",
    "pencils",
    "cookies",
    "shells",
    "stamps",
    "toy cars",
    "beads",
]
# (present, gerund)
_ADD_VERBS = [
    ("buys", "buying"),
    ("finds", "finding"),
    ("gets", "getting"),
    ("wins", "winning"),
    ("picks up", "picking up"),
]
_SUB_VERBS = [
    ("gives away", "giving away"),
    ("loses", "losing"),
    ("sells", "selling"),
    ("trades away", "trading away"),
]
_TIMES = {2: "doubles", 3: "triples"}

_OPENERS = [
    "Okay, let me restate the problem.",
    "Let me first make sure I understand the problem.",
    "Alright, let me read the problem again.",
]
_PLANS = [
    "So there are {n} changes to apply in order, starting from {a}.",
    "I will go through the {n} steps one at a time, starting from {a}.",
    "The plan is to apply the {n} changes in order, keeping track of the count.",
]
CHECK_CUES = [
    "Wait, let me check again by working backwards from {y}.",
    "Wait, let me double-check this by undoing each step, starting from {y}.",
    "Hmm, let me recheck this in the other order, going back from {y}.",
    "Wait, let me verify again by going over the steps in reverse from {y}.",
]
_SECOND_CHECKS = [
    "Let me also double-check the forward arithmetic once more: {chain}. Yes, that is right.",
    "Let me recheck the arithmetic one more time: {chain}. Everything matches.",
]
_CONCLUSIONS = [
    "So the answer is {y}: {name} has {y} {items} at the end.",
    "Therefore {name} ends up with {y} {items}, and the answer is {y}.",
    "So the final count is {y} {items}. The answer is {y}.",
]
# Self-checks inside the first pass, each resolved on the spot and carrying exactly one of the
# study's reflection keywords (docs/paper.md, trace analysis): Table 6 counts 1.91-5.13 cues
# before the first correct derivation (2.23 / 2.42 / 2.76 / 5.13 / 1.91 over its five datasets).
_CHECK_COUNTS, _CHECK_WEIGHTS = (2, 3, 4, 5), (6, 2, 1, 1)  # mean 2.7, between 2.42 and 2.76
_REREAD_CHECKS = [
    "Wait, {a} {items} at the start? Yes.",
    "Wait, does {name} start with {a}? Yes.",
]
_STEP_CHECKS = ["Let me double-check: {eq}. Yes.", "Wait, is {eq} right? Yes."]
_UNDO_CHECKS = ["Let me verify again: {undo}. Good.", "Hmm, let me recheck: {undo}. Right."]
_RECAP_CHECKS = ["Let me go over the steps so far: {chain}. Fine."]
_INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}
# Self-reflection cue words (docs/paper.md Appendix A.2) as they appear in these traces; the first one starts the
# re-check.
CUE_RE = re.compile(r"\b(Wait|recheck|double-check|check again|verify again)\b")


@dataclass(frozen=True)
class Step:
    op: str  # "+", "-", "*", "/"
    k: int
    verb: tuple[str, str] = ("", "")  # (present, gerund) for + and -


@dataclass(frozen=True)
class Problem:
    start: int
    steps: tuple[Step, ...]
    person: tuple[str, str, str]
    items: str

    @property
    def values(self) -> list[int]:
        """[start, after step 1, ..., answer]."""
        out = [self.start]
        for s in self.steps:
            out.append(_apply(out[-1], s.op, s.k))
        return out

    @property
    def answer(self) -> int:
        return self.values[-1]

    @property
    def key(self) -> str:
        """The arithmetic alone (no names or wording): what the train/benchmark split hashes."""
        return f"{self.start}|" + ",".join(f"{s.op}{s.k}" for s in self.steps)


def is_benchmark_problem(key: str) -> bool:
    digest = hashlib.sha256(key.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") % BENCH_BUCKETS == 0


def _check_steps(name: str, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not MIN_STEPS <= n <= MAX_STEPS:
        raise ValueError(f"{name} must be an integer in [{MIN_STEPS}, {MAX_STEPS}], got {n!r}")


def _apply(x: int, op: str, k: int) -> int:
    if op == "+":
        return x + k
    if op == "-":
        return x - k
    if op == "*":
        return x * k
    assert x % k == 0, (x, k)
    return x // k


def _sample_problem(rng: random.Random) -> Problem:
    while True:
        start = rng.randint(2, 20)
        x, steps = start, []
        for _ in range(rng.choices(STEP_COUNTS, weights=STEP_WEIGHTS)[0]):
            ops = []
            if x < MAX_VALUE:
                ops.append(("+", 3))
            if x > 1:
                ops.append(("-", 3))
            if x * 2 <= MAX_VALUE:
                ops.append(("*", 1))
            if any(x % k == 0 and x // k >= 2 for k in (2, 3, 4, 5)):
                ops.append(("/", 1))
            op = rng.choices([o for o, _ in ops], weights=[w for _, w in ops])[0]
            if op == "+":
                k = rng.randint(1, min(12, MAX_VALUE - x))
                step = Step("+", k, rng.choice(_ADD_VERBS))
            elif op == "-":
                k = rng.randint(1, min(12, x - 1))
                step = Step("-", k, rng.choice(_SUB_VERBS))
            elif op == "*":
                k = rng.choice([k for k in (2, 3, 4) if x * k <= MAX_VALUE])
                step = Step("*", k)
            else:
                k = rng.choice([k for k in (2, 3, 4, 5) if x % k == 0 and x // k >= 2])
                step = Step("/", k)
            steps.append(step)
            x = _apply(x, step.op, step.k)
        problem = Problem(start, tuple(steps), rng.choice(_PEOPLE), rng.choice(_ITEMS))
        values = problem.values
        # Every step changes something and the answer appears nowhere earlier in the chain, so the
        # first "= answer" in a trace is its first derivation.
        if len(steps) >= 2 and values[-1] not in values[:-1]:
            return problem


def _problem_text(p: Problem) -> str:
    name, subj, _ = p.person
    Subj = subj.capitalize()
    sents = [f"{name} has {p.start} {p.items}."]
    for i, s in enumerate(p.steps):
        lead = Subj if i == 0 else f"Then {subj}"
        if s.op == "+":
            sents.append(f"{lead} {s.verb[0]} {s.k} more {p.items}.")
        elif s.op == "-":
            sents.append(f"{lead} {s.verb[0]} {s.k} of them.")
        elif s.op == "*":
            what = _TIMES.get(s.k, f"grows to {s.k} times as many")
            lead = "The number of" if i == 0 else "Then the number of"
            sents.append(f"{lead} {p.items} {name} has {what}.")
        else:
            sents.append(
                f"{lead} splits the {p.items} equally into {s.k} bags and keeps only one bag."
            )
    sents.append(f"How many {p.items} does {name} have now?")
    return " ".join(sents)


def _clause(s: Step) -> str:
    if s.op == "+":
        return f"{s.verb[0]} {s.k} more"
    if s.op == "-":
        return f"{s.verb[0]} {s.k}"
    if s.op == "*":
        return f"the amount becomes {s.k} times as many"
    return f"{s.k} equal bags are made and one is kept"


def _forward(s: Step, x: int, y: int) -> str:
    if s.op == "+":
        return f"{s.verb[1].capitalize()} {s.k} more gives {x} + {s.k} = {y}."
    if s.op == "-":
        return f"{s.verb[1].capitalize()} {s.k} leaves {x} - {s.k} = {y}."
    if s.op == "*":
        return f"Having {s.k} times as many gives {x} * {s.k} = {y}."
    return f"Keeping one of {s.k} equal bags leaves {x} / {s.k} = {y}."


def _backward(s: Step, x: int, y: int) -> str:
    if s.op == "+":
        return f"Before {s.verb[1]} {s.k} more, there were {y} - {s.k} = {x}."
    if s.op == "-":
        return f"Before {s.verb[1]} {s.k}, there were {y} + {s.k} = {x}."
    if s.op == "*":
        return f"Before it became {s.k} times as many, there were {y} / {s.k} = {x}."
    return f"Before splitting into {s.k} bags, there were {y} * {s.k} = {x}."


def _first_pass(p: Problem, result: int, checks: dict[int, list[str]] | None = None) -> str:
    """The forward derivation, one sentence per step, ending in `result` (the last step's value;
    a trace's first pass may get it wrong). `checks[i]` are sentences inserted before step `i`
    (slot 0: right after the start), so none of them follows the answer's derivation."""
    name, values, n = p.person[0], p.values, len(p.steps)
    checks = checks or {}
    sents = [f"{name} starts with {p.start} {p.items}."]
    for i, s in enumerate(p.steps):
        sents += checks.get(i, [])
        sents.append(_forward(s, values[i], result if i == n - 1 else values[i + 1]))
    sents.append(f"So {name} has {result} {p.items} at the end.")
    return " ".join(sents)


def _self_checks(p: Problem, rng: random.Random) -> dict[int, list[str]]:
    """2-5 resolved self-checks for a first pass (Table 6's cues before the first derivation), keyed
    by the step they precede. Candidates: re-reading the start (before step 0); for every
    intermediate value, re-doing its step and undoing it (before the next step); a recap of the
    chain so far (before the last step). Only the start and intermediate values are named, never
    the answer (no value before the last equals it), so the first derivation stays the last step's."""
    name, values, n = p.person[0], p.values, len(p.steps)
    slots: list[tuple[int, str]] = [
        (0, rng.choice(_REREAD_CHECKS).format(name=name, a=p.start, items=p.items))
    ]
    for i in range(n - 1):
        s, x, v = p.steps[i], values[i], values[i + 1]
        undo = f"{v} {_INVERSE[s.op]} {s.k} = {x}"
        slots.append((i + 1, rng.choice(_STEP_CHECKS).format(eq=_equation(p, i))))
        slots.append((i + 1, rng.choice(_UNDO_CHECKS).format(undo=undo)))
    chain = ", ".join(_equation(p, i) for i in range(n - 1))
    slots.append((n - 1, rng.choice(_RECAP_CHECKS).format(chain=chain)))
    count = min(rng.choices(_CHECK_COUNTS, weights=_CHECK_WEIGHTS)[0], len(slots))
    keep = sorted(rng.sample(range(len(slots)), count))  # in the order they occur
    out: dict[int, list[str]] = {}
    for j in keep:
        step, text = slots[j]
        out.setdefault(step, []).append(text)
    return out


def _undo_all(p: Problem) -> list[str]:
    """The backward re-check's sentences: every step undone from the answer to the start, then the
    sentence that closes it ("That is exactly the ... started with, so N is right.")."""
    values, y = p.values, p.answer
    out = [_backward(p.steps[i], values[i], values[i + 1]) for i in range(len(p.steps) - 1, -1, -1)]
    out.append(
        f"That is exactly the {p.start} {p.items} {p.person[0]} started with, so {y} is right."
    )
    return out


def _trace(p: Problem, rng: random.Random, answer_form: str = "chain") -> tuple[str, str]:
    """(cot, answer) for a problem; `answer_form` is the answer section's (`_answer_section`)."""
    name, _, _ = p.person
    values, n, y = p.values, len(p.steps), p.answer
    last = p.steps[-1]
    # A slip: the last +/- step of the first pass is off by one; the backward check catches it.
    slip = last.op in "+-" and rng.random() < 0.15
    wrong = y + rng.choice([-1, 1]) if slip else y
    if wrong <= 0:
        slip, wrong = False, y

    paras = []
    clauses = ", ".join(_clause(s) for s in p.steps[:-1]) + f", and then {_clause(last)}"
    restate = (
        f"{rng.choice(_OPENERS)} {name} starts with {p.start} {p.items}, {clauses}. "
        f"The question asks how many {p.items} {name} has at the end."
    )
    if rng.random() < 0.3:
        restate += " " + rng.choice(_PLANS).format(n=n, a=p.start)
    paras.append(restate)

    paras.append(f"First, {_first_pass(p, wrong, _self_checks(p, rng))}")

    check = [rng.choice(CHECK_CUES).format(y=wrong)]
    if slip:
        redo = _backward(last, values[-2], wrong).rsplit("= ", 1)[0]
        got = _apply(wrong, "-" if last.op == "+" else "+", last.k)
        check.append(
            f"{redo}= {got}, but the step before gave {values[-2]}. That does not match, so I "
            f"made a slip in the last step: {values[-2]} {last.op} {last.k} = {y}, not {wrong}. "
            f"So {name} actually has {y} {p.items}. Let me recheck from {y} going backwards."
        )
    check += _undo_all(p)
    paras.append(" ".join(check))

    # the verification goes on after the re-check (the study: the later tokens of a trace are
    # mostly verification and restating); it keeps the first derivation near the middle
    paras.append(rng.choice(_SECOND_CHECKS).format(chain=_chain(p)))
    paras.append(rng.choice(_CONCLUSIONS).format(name=name, y=y, items=p.items))
    cot = "\n\n".join(paras)

    return cot, _answer_section(p, answer_form)


def _problems(rng: random.Random, benchmark: bool) -> Iterator[Problem]:
    """Distinct problems from one side of the split, forever (the caller stops)."""
    seen = set()
    while True:
        p = _sample_problem(rng)
        if is_benchmark_problem(p.key) == benchmark and p.key not in seen:
            seen.add(p.key)
            yield p


def generate_examples(n: int, seed: int, answer_form: str = "chain") -> list[Example]:
    """`n` training examples (distinct problems, none from the benchmark's space).

    `answer_form` is the answer section's form (`_answer_section`): "chain" (the default) re-derives
    the answer in one line, "restate" states the think block's conclusion. It draws nothing: the
    problems and think blocks are the same for both."""
    _check_answer_form(answer_form)
    rng = random.Random(f"kdlite-synthetic-train-{seed}")
    out = []
    for i, p in enumerate(islice(_problems(rng, benchmark=False), n)):
        prompt = _problem_text(p)
        cot, answer = _trace(p, rng, answer_form)  # same stream, interleaved: prefix-stable in n
        out.append(
            Example(prompt, cot, answer, make_source_id("synthetic", i, prompt, cot, answer))
        )
    return out


def generate_benchmark(n: int, seed: int, min_steps: int = MIN_STEPS) -> list[dict]:
    """`n` benchmark problems `{id, problem, answer}`; `problem` has the training prompts' form.

    `min_steps` keeps only problems of at least that many steps (the stream's others are skipped,
    so at the default every problem is kept and the benchmark is the one it always was). With
    `min_steps=3` the benchmark is longer than any solution a base built with `max_steps=2` has
    read (docs/mini-replication.md §6)."""
    _check_steps("min_steps", min_steps)
    rng = random.Random(f"kdlite-synthetic-bench-{seed}")
    long_enough = (p for p in _problems(rng, benchmark=True) if len(p.steps) >= min_steps)
    out = []
    for i, p in enumerate(islice(long_enough, n)):
        problem = _problem_text(p)
        out.append(
            {
                "id": make_source_id("synthetic-bench", i, problem),
                "problem": problem,
                "answer": str(p.answer),
            }
        )
    return out


def _equation(p: Problem, i: int) -> str:
    """Step `i` of a problem as arithmetic: "12 + 4 = 16"."""
    s, values = p.steps[i], p.values
    return f"{values[i]} {s.op} {s.k} = {values[i + 1]}"


def _chain(p: Problem) -> str:
    return ", ".join(_equation(p, i) for i in range(len(p.steps)))


ANSWER_FORMS = ("chain", "restate")


def _check_answer_form(answer_form: str) -> None:
    if answer_form not in ANSWER_FORMS:
        raise ValueError(f"answer_form must be one of {list(ANSWER_FORMS)}, got {answer_form!r}")


def _answer_section(p: Problem, answer_form: str = "chain") -> str:
    """A trace's answer section (A), then the boxed answer; the chat-layout base documents end the
    same way. "chain": the whole derivation again in one line ("Emma starts with 2 beads: 2 + 9 =
    11, 11 + 7 = 18."), so writing it is solving the problem a second time. "restate": one sentence
    stating the conclusion the think block reached ("Emma has 18 beads at the end."), which a model
    copies from its own think block whatever the problem's length, as the study's answer sections
    state a result their traces found (docs/mini-replication.md §8)."""
    if answer_form == "restate":
        head = f"{p.person[0]} has {p.answer} {p.items} at the end."
    else:
        head = f"{p.person[0]} starts with {p.start} {p.items}: {_chain(p)}."
    return f"{head}\n\nThe answer is \\boxed{{{p.answer}}}."


def _drill(rng: random.Random) -> str:
    """A line of arithmetic facts from the corpus's operations and value range."""
    facts = []
    for _ in range(rng.randint(4, 8)):
        p = _sample_problem(rng)
        facts.append(_equation(p, rng.randrange(len(p.steps))) + ".")
    return "Practice: " + " ".join(facts)


def _worked_solution(p: Problem, stepwise: bool) -> str:
    """A problem with its worked solution, as a textbook or an answer site would print it."""
    name, y = p.person[0], p.answer
    head = f"{_problem_text(p)}\nSolution: "
    if not stepwise:
        return f"{head}{name} starts with {p.start} {p.items}: {_chain(p)}. The answer is \\boxed{{{y}}}."
    return f"{head}Step by step. {_first_pass(p, y)} The answer is \\boxed{{{y}}}."


def _chat_solution(p: Problem, rng: random.Random | None = None, answer_form: str = "chain") -> str:
    """A problem solved in the chat layout (docs/design.md §3) with a *short* think block: the
    first-pass derivation in a trace's words, no self-check, no re-check; then the one-line chain
    and the boxed answer, and the turn's end. What a base model has read of instruction-style
    reasoning data: it knows where a think block ends and what follows it, but not long CoT.

    With `rng` (`check_share` of `generate_base_documents`) the think block goes on after the
    first pass with a verification of random length, made of the trace's own parts, each complete:
    the backward re-check (cue, every step undone, "so N is right."), the forward re-check of the
    chain, a concluding sentence; at least one, in that order; then it ends. So the base has read
    think blocks that end after a check of any length, not only after a first pass."""
    thought = f"First, {_first_pass(p, p.answer)}"
    if rng is not None:
        y = p.answer
        parts = [
            " ".join([rng.choice(CHECK_CUES).format(y=y), *_undo_all(p)]),
            rng.choice(_SECOND_CHECKS).format(chain=_chain(p)),
            rng.choice(_CONCLUSIONS).format(name=p.person[0], y=y, items=p.items),
        ]
        keep = [
            part for part, share in zip(parts, (0.8, 0.5, 0.5), strict=True) if rng.random() < share
        ]
        thought = "\n\n".join([thought, *(keep or parts[:1])])
    text = render_text(Example(_problem_text(p), thought, _answer_section(p, answer_form), ""))
    return text.rstrip("\n")


def generate_base_documents(
    seed: int,
    stepwise_share: float = 0.5,
    chat_share: float = 0.0,
    max_steps: int | None = None,
    check_share: float = 0.0,
    answer_form: str = "chain",
) -> Iterator[str]:
    """The tiny pair's *pre*-training corpus, forever.

    Plays the part of the text a base model has read: 65% worked solutions of training-side
    problems, 35% lines of arithmetic facts. A solution is the problem, "Solution:", then either a
    one-line chain of equations (the form of an answer section) or, for `stepwise_share` of them,
    the same derivation one sentence per step in the words a trace's first pass uses; both end in
    `\\boxed{}`. Real base models have read step-by-step solutions that end in a stated answer; a base
    that knows only the one-line form has never seen most of a trace's words (its first loss on a
    trace is above a uniform guess's) and has no habit of closing a derivation with an answer.

    `chat_share` of the solutions are written in the chat layout instead (`_chat_solution`): the
    user turn, a short think block holding the step-by-step derivation, `</think>`, the answer and
    `<|im_end|>`. Qwen3's base models were pre-trained on instruction-style and reasoning data too
    (they know the chat layout); a base without any has no prior for closing a think block and
    answering, so a student trained only on the first half of traces cannot close
    (docs/mini-replication.md §5). At 0 (the default) no draw is made: the stream is the one the
    shipped tiny-teacher-base was pre-trained on.

    `max_steps` limits the worked solutions (all forms) to problems of at most that many steps
    (the practice lines still draw facts from every problem: single equations); their arithmetic
    can repeat, as there are only ~10k distinct 2-step training problems. A base that has
    only read 2-step solutions cannot solve the 3- and 4-step problems the traces teach, as a real
    base cannot solve competition problems before it is distilled (docs/mini-replication.md §6).
    None (the default) keeps every problem: the stream is the one without the knob.

    `check_share` of the chat-layout solutions verify their answer before the think block ends
    (`_chat_solution` with a check of random length, 2-step problems' checks when `max_steps=2`):
    a base that has read think blocks ending after a check can end its own after one, which a
    student trained on the first half of traces never sees (docs/mini-replication.md §7). At 0
    (the default) no draw is made: the stream is the one without the knob.

    `answer_form` is the chat-layout solutions' answer section (`_answer_section`): "chain" (the
    default) or "restate", the form of the traces a student built on this base is distilled on
    (docs/mini-replication.md §8). It draws nothing; the plain worked solutions keep their chain.

    No document holds a long-CoT trace or a self-reflection inside a first pass (and, at
    `check_share=0`, no re-check), so a model pretrained on this corpus can read, copy, compute
    and state an answer, but not the reasoning format that distillation teaches.
    """
    for name, share in (
        ("stepwise_share", stepwise_share),
        ("chat_share", chat_share),
        ("check_share", check_share),
    ):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {share}")
    if check_share > 0 and chat_share == 0:
        raise ValueError(
            f"check_share={check_share} is a share of the chat-layout solutions, and chat_share is "
            "0: there are none to check (set chat_share > 0, or check_share=0)"
        )
    _check_answer_form(answer_form)
    if answer_form != "chain" and chat_share == 0:
        raise ValueError(
            f"answer_form={answer_form} is the form of the chat-layout solutions' answers, and "
            "chat_share is 0: there are none (set chat_share > 0, or answer_form=chain)"
        )
    if max_steps is not None:
        _check_steps("max_steps", max_steps)
    rng = random.Random(f"kdlite-synthetic-base-{seed}")
    problem_rng = random.Random(f"kdlite-synthetic-base-problems-{seed}")
    if max_steps is None:
        problems = _problems(problem_rng, benchmark=False)
    else:
        # ~10k distinct training-side 2-step problems exist, fewer than the ~50k solutions of a
        # 1,600-step pre-training: a problem's arithmetic may come back, with other names and items
        problems = (
            p
            for p in iter(lambda: _sample_problem(problem_rng), None)
            if len(p.steps) <= max_steps and not is_benchmark_problem(p.key)
        )
    while True:
        if rng.random() < 0.35:
            yield _drill(rng)
            continue
        # no draw at share 0: that stream is the first corpus's, document for document (it made
        # the shipped tiny-teacher-base)
        if chat_share > 0 and rng.random() < chat_share:
            checked = check_share > 0 and rng.random() < check_share
            yield _chat_solution(next(problems), rng if checked else None, answer_form)
            continue
        stepwise = stepwise_share > 0 and rng.random() < stepwise_share
        yield _worked_solution(next(problems), stepwise)


BOXED_RE = re.compile(r"\\boxed\{(-?\d+)\}")  # an integer answer in `\\boxed{}`


def boxed_answer(example: Example) -> int:
    """The integer in the answer section's `\\boxed{}`."""
    m = BOXED_RE.search(example.answer)
    if m is None:
        raise ValueError(f"{example.source_id}: no \\boxed{{}} integer in the answer")
    return int(m.group(1))


def answer_position(example: Example) -> float:
    """Relative position (0..1, in characters of the CoT) where the final answer is first derived:
    the end of the first `= N`. Exact for this corpus (no intermediate value equals the answer)."""
    m = re.search(rf"= {boxed_answer(example)}(?!\d)", example.cot)
    if m is None:
        raise ValueError(f"{example.source_id}: the CoT never derives the boxed answer")
    return m.end() / len(example.cot)


# The sentences with which this corpus's think blocks state a conclusion: the closings of the first
# pass and of the re-checks above ("the answer is N", "so N is right", "has N ... at the end",
# "ends up with N", "the final count is N").
_N = r"(-?\d[\d,]*)"  # an integer, thousands separators allowed
CONCLUSION_RE = re.compile(
    rf"answer is {_N}|so {_N} is right|has {_N} [a-z]+ at the end|ends up with {_N}"
    rf"|final count is {_N}"
)


def think_conclusion(text: str) -> str | None:
    """The value the think block of `text` (everything before `</think>`) concludes last, read from
    this corpus's conclusion sentences (`CONCLUSION_RE`); None when it states none.

    A diagnostic of model outputs on the synthetic benchmarks: whether a think block *ends* on the
    gold (a re-check can move a model off a value it derived), and whether the answer section
    boxes what the think block concluded (docs/mini-replication.md §8)."""
    last = None
    for m in CONCLUSION_RE.finditer(text.split(END_THINK, 1)[0]):
        last = next(g for g in m.groups() if g is not None)
    return None if last is None else last.replace(",", "")
