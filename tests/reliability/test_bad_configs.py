"""Bad config values: refused by `validate()` with the key named, before a tokenizer, data or model
loads; every value that made a run train on NaN, skip its work or crash late."""

from __future__ import annotations

import pytest
from reliability_helpers import make_cfg

import kdlite.training as training_mod
from kdlite.config import ConfigError, validate

# override -> the text the error must hold (the key and the value)
BAD = {
    "temperature=nan": "temperature=nan: must be a finite number",
    "temperature=inf": "temperature=inf: must be a finite number",
    "optim.lr=nan": "optim.lr=nan: must be a finite number",
    "optim.weight_decay=-1": "optim.weight_decay=-1.0: must be >= 0",
    "optim.grad_clip=-1": "optim.grad_clip=-1.0: must be >= 0",
    "optim.epochs=0": "optim.epochs=0: must be >= 1",
    "optim.max_steps=0": "optim.max_steps=0",
    "optim.betas=[0.9,1.5]": "optim.betas[1]=1.5",
    "trainer.devices=0": "trainer.devices=0",
    "trainer.devices=[]": "trainer.devices=[]",
    "trainer.devices=gpu": "trainer.devices=gpu",
    "seed=-1": "seed=-1: must be in [0, 2**32 - 1]",
    "seed=4294967296": "seed=4294967296",
    "data.seed=-3": "data.seed=-3",
    "trainer.teacher_dtype=fp8": "trainer.teacher_dtype=fp8: must be one of",
    "trainer.chunk_size=0": "trainer.chunk_size=0: must be >= 1",
    "teacher_cache_k=0": "teacher_cache_k=0: must be >= 1",
    "trainer.checkpoint_every=0": "trainer.checkpoint_every=0",
    "data.train_size=0": "data.train_size=0",
    "data.limit=0": "data.limit=0",
    "pair.bootstrap.lr=nan": "pair.bootstrap.lr=nan",
}


@pytest.mark.parametrize("override", sorted(BAD))
def test_bad_value_is_refused_before_anything_loads(tmp_path, monkeypatch, no_model_load, override):
    monkeypatch.setattr(
        "kdlite.data.tokenizer.load_tokenizer", lambda *a, **k: pytest.fail("tokenizer loaded")
    )
    monkeypatch.setattr(
        "kdlite.data.sources.load_examples", lambda *a, **k: pytest.fail("data loaded")
    )
    with pytest.raises(ConfigError) as err:
        training_mod.train(make_cfg(tmp_path / "r", override))
    assert BAD[override] in str(err.value)
    assert not (tmp_path / "r").exists()  # not even the run directory


def test_all_problems_are_listed_at_once(tmp_path):
    cfg = make_cfg(tmp_path / "r", "temperature=nan", "trainer.devices=0", "seed=-1")
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    for key in ("temperature=nan", "trainer.devices=0", "seed=-1"):
        assert key in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ("optim.epochs=0", "optim.max_steps=5"),  # a step budget instead of epochs
        ("optim.grad_clip=0",),  # 0 = no clipping, as documented
        ("trainer.devices=-1",),
        ("trainer.devices=auto",),
        ("trainer.devices='0,1'", "batch.micro_examples=2"),
        ("seed=4294967295",),
    ],
)
def test_edge_values_that_make_sense_pass(tmp_path, overrides):
    validate(make_cfg(tmp_path / "r", *overrides))


def test_teacher_head_smaller_than_the_tokenizer_fails_before_models_load(
    tmp_path, embedded_tokenizer, monkeypatch, no_model_load
):
    """Before: an error only after both models loaded. Now read from the teacher's config.json."""
    from kdlite.models import qwen3_config

    folder = tmp_path / "small-head"
    qwen3_config("tiny-teacher", vocab_size=500).save_pretrained(folder)  # config only, no weights
    embedded_tokenizer.save_pretrained(folder)  # same vocabulary: check_tokenizers passes
    monkeypatch.setattr(
        "kdlite.data.sources.load_examples", lambda *a, **k: pytest.fail("data loaded")
    )
    cfg = make_cfg(tmp_path / "r", "pair.teacher.shape=null", f"+pair.teacher.name={folder}")
    with pytest.raises(ConfigError, match=r"pair\.teacher .*500 rows .*746 ids"):
        training_mod.train(cfg)
