"""Rehearsal: the tiny student keeps reading its base's pre-training corpus while it is distilled.

A knob of the tiny pair only (`pair.rehearsal`, docs/mini-replication.md §5). The study distils a
few hundred million tokens into bases pre-trained on trillions, at a learning rate far below
pre-training's: the student's prior habits (such as closing a think block and stating an answer)
survive. The tiny pair's distillation is a large perturbation of a 0.33M-parameter base, and it
overwrites them. Rehearsal, the standard continual-learning device, trains the student on
`rows` packed rows of fresh documents from the base's own corpus (the mix its `kdlite_base.json`
records) at every optimizer step, with the hard loss, weighted by `weight`, next to the
distillation loss. Every condition of a sweep gets the same rows, so it is not a condition of
the study, and `train/loss` stays the distillation loss (the rehearsal's is `train/rehearsal_ce`).

Determinism: the rows of step `s` come from a corpus stream seeded by (run seed, `s`) alone, so a
resumed run reads the same rows as an uninterrupted one and nothing has to be checkpointed. Each
rank takes its slice of the step's rows (`rows` divisible by the world size), so the gradient is
the same however many ranks share the step.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from kdlite.errors import ConfigError


@dataclass(frozen=True)
class RehearsalSettings:
    rows: int  # packed rows per optimizer step (all ranks together)
    seq_len: int
    weight: float
    stepwise_share: float  # the base corpus's mix, from the base's kdlite_base.json
    chat_share: float
    max_steps: int | None
    check_share: float
    seed: int  # the run's seed
    answer_form: str = "chain"  # the chat-layout solutions' answer sections


def settings_for(cfg: Any) -> RehearsalSettings | None:
    """The run's rehearsal, or None when `pair.rehearsal.rows` is 0. Refused (ConfigError naming
    the key) for a student that is not a shipped tiny base: there is no corpus to rehearse."""
    r = cfg.pair.rehearsal
    if int(r.rows) == 0:
        return None
    from kdlite.models import BASE_INITS, RECIPE_FILE, asset_dir

    student = cfg.pair.student
    if not student.shape or student.init not in BASE_INITS:
        raise ConfigError(
            "pair.rehearsal.rows: rehearsal replays the pre-training corpus of a shipped tiny "
            f"base (pair.student.shape=tiny-* with init={' or '.join(BASE_INITS)}); this student is "
            f"{student.name or student.shape!r} with init={student.init!r}. Set "
            "pair.rehearsal.rows=0."
        )
    recipe = json.loads((asset_dir(student.shape, student.init) / RECIPE_FILE).read_text())
    recipe = recipe["recipe"]
    return RehearsalSettings(
        rows=int(r.rows),
        seq_len=int(r.seq_len),
        weight=float(r.weight),
        stepwise_share=float(recipe.get("stepwise_share", 0.0)),
        chat_share=float(recipe.get("chat_share", 0.0)),
        max_steps=recipe.get("max_steps"),
        check_share=float(recipe.get("check_share", 0.0)),
        seed=int(cfg.seed),
        answer_form=str(recipe.get("answer_form", "chain")),
    )


def _step_seed(seed: int, step: int) -> int:
    digest = hashlib.sha256(f"kdlite-rehearsal-{seed}-{step}".encode("ascii")).digest()
    return int.from_bytes(digest[:6], "big")


def check_world(rows: int, world: int) -> None:
    """Refuse a row count the ranks cannot share equally (ConfigError naming the key)."""
    if rows % world:
        raise ConfigError(
            f"pair.rehearsal.rows={rows} is not divisible by the {world} ranks (each takes an "
            "equal share of the step's rows)"
        )


def step_rows(
    settings: RehearsalSettings, tokenizer: Any, step: int, rank: int = 0, world: int = 1
) -> torch.Tensor:
    """[rows / world, seq_len] token ids: this rank's slice of step `step`'s rehearsal rows,
    documents back to back, each followed by `<|endoftext|>` (the last one cut at the row end)."""
    from kdlite.data.packing import packed_rows
    from kdlite.data.synthetic import generate_base_documents

    check_world(settings.rows, world)
    docs = generate_base_documents(
        _step_seed(settings.seed, step),
        stepwise_share=settings.stepwise_share,
        chat_share=settings.chat_share,
        max_steps=settings.max_steps,
        check_share=settings.check_share,
        answer_form=settings.answer_form,
    )
    rows = next(packed_rows(docs, tokenizer, settings.seq_len, settings.rows))
    share = settings.rows // world
    return rows[rank * share : (rank + 1) * share]


def rehearsal_ce(student: Any, rows: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Mean next-token cross-entropy of `student` (a `HiddenLM`) on packed rows (causal attention
    across the documents of a row, as in pre-training)."""
    hidden = student(rows)
    logits = hidden[:, :-1].float() @ student.head_weight[:vocab_size].float().T
    return F.cross_entropy(logits.reshape(-1, vocab_size), rows[:, 1:].reshape(-1))


@dataclass(frozen=True)
class Rehearsal:
    """What the module needs: the settings and the tokenizer that turns documents into ids."""

    settings: RehearsalSettings
    tokenizer: Any

    def rows(self, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        return step_rows(self.settings, self.tokenizer, step, rank, world)
