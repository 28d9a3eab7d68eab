"""Stand-ins imported by spawned grader workers and the vLLM path tests (not a test module)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from kdlite.eval.grade import grade_sample


def flaky_grader(gold: str, text: str, timeout_s: int) -> tuple[bool, bool]:
    """grade_sample, except for texts that kill, hang or break the worker."""
    if text == "CRASH":
        os._exit(3)
    if text == "HANG":
        time.sleep(600)
    if text == "RAISE":
        raise RuntimeError("grader bug")
    return grade_sample(gold, text, timeout_s)


@dataclass
class FakeCompletion:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class FakeRequestOutput:
    request_id: str
    finished: bool
    outputs: list[FakeCompletion] = field(default_factory=list)


class FakeEngine:
    """Mimics vLLM's LLMEngine add_request/step loop: one request finishes per step, in reverse
    submission order, after an unfinished progress output (which the backend must ignore)."""

    def __init__(self, model: str, seed: int, max_model_len: int, device: int) -> None:
        self.model, self.seed, self.max_model_len, self.device = model, seed, max_model_len, device
        self.requests: list[tuple[str, dict, dict]] = []

    def add_request(self, request_id, prompt, params) -> None:
        self.requests.append((request_id, prompt, params))

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def step(self) -> list[FakeRequestOutput]:
        rid, prompt, params = self.requests.pop()
        outs = [
            FakeCompletion(
                i,
                f"<think>{rid}</think> \\boxed{{{len(prompt['prompt_token_ids'])}}}<|im_end|>",
                [7] * (i + 3),
                "stop",
            )
            for i in reversed(range(params["n"]))  # out of order on purpose
        ]
        return [FakeRequestOutput("progress", False), FakeRequestOutput(rid, True, outs)]


def fake_params(sampling, n, stop_ids) -> dict:
    return {"n": n, "sampling": sampling, "stop_ids": stop_ids}
