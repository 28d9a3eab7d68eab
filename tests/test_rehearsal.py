"""Rehearsal (kdlite/rehearsal.py): the tiny student's base corpus trained beside distillation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kdlite.config import ConfigError, validate
from kdlite.models import HiddenLM, ModelSpec, load_model
from kdlite.rehearsal import RehearsalSettings, rehearsal_ce, settings_for, step_rows
from tests.test_training import _first_step_grads, curve, make_cfg, training_mod

SETTINGS = RehearsalSettings(
    rows=4,
    seq_len=64,
    weight=1.0,
    stepwise_share=0.5,
    chat_share=0.3,
    max_steps=None,
    check_share=0.0,
    seed=0,
)


def test_a_steps_rows_depend_on_the_step_alone_and_ranks_split_them(embedded_tokenizer):
    step3 = step_rows(SETTINGS, embedded_tokenizer, 3)
    assert step3.shape == (4, 64) and step3.dtype == torch.long
    assert torch.equal(step3, step_rows(SETTINGS, embedded_tokenizer, 3))  # a resume reads these
    assert not torch.equal(step3, step_rows(SETTINGS, embedded_tokenizer, 4))
    halves = [step_rows(SETTINGS, embedded_tokenizer, 3, rank=r, world=2) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), step3)
    with pytest.raises(ConfigError, match="not divisible by the 3 ranks"):
        step_rows(SETTINGS, embedded_tokenizer, 3, rank=0, world=3)
    other_seed = dataclasses.replace(SETTINGS, seed=1)
    assert not torch.equal(step_rows(other_seed, embedded_tokenizer, 3), step3)


def test_rows_are_the_bases_corpus_with_its_chat_documents(embedded_tokenizer):
    text = "".join(
        embedded_tokenizer.decode(step_rows(SETTINGS, embedded_tokenizer, s).flatten())
        for s in range(20)
    )
    assert "<|endoftext|>" in text and "\nSolution: " in text and "Practice: " in text
    assert "</think>\n\n" in text  # chat_share=0.3 of the base's recipe
    plain = dataclasses.replace(SETTINGS, chat_share=0.0)
    text = "".join(
        embedded_tokenizer.decode(step_rows(plain, embedded_tokenizer, s).flatten())
        for s in range(20)
    )
    assert "<think>" not in text


def test_rows_keep_the_bases_answer_form(embedded_tokenizer):
    """A base pre-trained with answer_form=restate rehearses chat answers that state the result."""
    restate = dataclasses.replace(SETTINGS, answer_form="restate", rows=8)
    text = "".join(
        embedded_tokenizer.decode(step_rows(restate, embedded_tokenizer, s).flatten())
        for s in range(10)
    )
    answers = [a.split("<|im_end|>")[0] for a in text.split("</think>\n\n")[1:]]
    assert len(answers) > 5
    assert all(" at the end.\n\nThe answer is \\boxed{" in a for a in answers if "boxed" in a)
    assert not any(" = " in a for a in answers)  # no chain re-derived after the think block
    assert SETTINGS.answer_form == "chain"


def test_rows_keep_the_bases_step_limit(embedded_tokenizer):
    """A base built with max_steps=2 rehearses 2-step solutions only (its corpus, not the traces')."""
    short = dataclasses.replace(SETTINGS, max_steps=2, rows=8)
    docs = []
    for s in range(10):  # each step's last document is cut at the row end: left out
        text = embedded_tokenizer.decode(step_rows(short, embedded_tokenizer, s).flatten())
        docs += text.split("<|endoftext|>")[:-1]
    solutions = [d for d in docs if "\nSolution: " in d or "<|im_start|>user" in d]
    assert len(solutions) > 10
    for d in solutions:  # problem sentences: the start, one per step, the question
        problem = d.split("\nSolution: ")[0].split("<|im_start|>user\n")[-1].split("<|im_end|>")[0]
        assert problem.count(".") - 1 == 2, d


def test_settings_come_from_the_shipped_base_record_and_other_students_are_refused(tmp_path):
    assert settings_for(make_cfg(tmp_path)) is None  # rows=0: off
    s = settings_for(make_cfg(tmp_path, "pair.rehearsal.rows=2", "pair.rehearsal.weight=0.5"))
    assert s is not None and (s.rows, s.seq_len, s.weight) == (2, 256, 0.5)
    # the shipped student base's kdlite_base.json records its corpus mix
    assert 0 <= s.chat_share <= 1 and s.stepwise_share == 0.5
    assert s.max_steps in (None, 2, 3)  # null in records written before the knob
    cfg = make_cfg(tmp_path / "r", "pair.rehearsal.rows=2", "pair.student.init=random")
    with pytest.raises(ConfigError, match=r"pair\.rehearsal\.rows: .*init='random'"):
        training_mod.train(cfg)
    assert not (tmp_path / "r" / "metrics.csv").exists()
    with pytest.raises(ConfigError, match=r"pair\.rehearsal\.rows=-1: must be >= 0"):
        validate(make_cfg(tmp_path, "pair.rehearsal.rows=-1"))


def test_the_restate_base_rehearses_its_own_corpus(tmp_path, embedded_tokenizer):
    """`experiment=replication`'s student (init=base-restate) replays B4's recorded corpus: its
    chat-layout solutions check the answer and restate the conclusion, unlike the default base's."""
    cfg = make_cfg(tmp_path, "experiment=replication")
    s, default = settings_for(cfg), settings_for(make_cfg(tmp_path / "d", "experiment=demo"))
    assert s is not None and default is not None
    assert (s.answer_form, s.check_share, s.max_steps) == ("restate", 0.5, 2)
    assert default.answer_form == "chain"
    texts = [embedded_tokenizer.decode(r) for r in step_rows(s, embedded_tokenizer, 0)]
    assert any("</think>" in t for t in texts)
    assert any(" at the end." in t.split("</think>")[1] for t in texts if "</think>" in t)


def test_the_step_gradient_gains_weight_times_the_rehearsal_gradient(tmp_path, embedded_tokenizer):
    """grad(with) - grad(without) = weight x grad of the mean CE on step 0's rows, computed here
    from the same initial student; and the split into micro-batches does not change it."""
    rehearse = ["pair.rehearsal.rows=2", "pair.rehearsal.seq_len=64", "pair.rehearsal.weight=0.5"]
    without = _first_step_grads(tmp_path / "a")
    with_ = _first_step_grads(tmp_path / "b", *rehearse)
    split = _first_step_grads(tmp_path / "c", *rehearse, "batch.micro_examples=2")

    cfg = make_cfg(tmp_path / "d", *rehearse)
    settings = settings_for(cfg)
    assert settings is not None
    student = HiddenLM(load_model(ModelSpec(shape="tiny-student", init="base"),
                                  vocab_size=len(embedded_tokenizer)))  # fmt: skip
    ce = rehearsal_ce(student, step_rows(settings, embedded_tokenizer, 0), len(embedded_tokenizer))
    ce.backward()
    want = {name: 0.5 * p.grad for name, p in student.named_parameters() if p.grad is not None}
    assert want.keys() == with_.keys() and ce.item() > 0
    for name, g in want.items():
        torch.testing.assert_close(with_[name] - without[name], g, rtol=1e-3, atol=1e-6, msg=name)
        torch.testing.assert_close(split[name], with_[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_rehearsal_loss_is_logged_apart_from_the_distillation_loss(tmp_path):
    run = tmp_path / "r"
    training_mod.train(make_cfg(run, "pair.rehearsal.rows=2", "optim.max_steps=3", "export=false"))
    ref = tmp_path / "ref"
    training_mod.train(make_cfg(ref, "optim.max_steps=3", "export=false"))
    ce = curve(run, "train/rehearsal_ce")
    assert sorted(ce) == [0, 1, 2] and all(0 < v < 5 for v in ce.values())
    # step 0's distillation loss is computed before any update: the same with or without
    assert curve(run, "train/loss")[0] == pytest.approx(curve(ref, "train/loss")[0], rel=1e-6)
    assert not curve(ref, "train/rehearsal_ce")


def test_the_teachers_bootstrap_run_does_not_rehearse(tmp_path):
    from kdlite.config import bootstrap_config

    cfg = make_cfg(tmp_path, "pair.rehearsal.rows=2")
    sub = bootstrap_config(cfg, tmp_path / "boot")
    assert sub.pair.student.shape == "tiny-teacher" and sub.pair.rehearsal.rows == 0
    assert cfg.pair.rehearsal.rows == 2  # the student's run keeps it
