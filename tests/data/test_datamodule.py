"""StepSampler and the data module: which examples share a step, per-rank batches, resume."""

from __future__ import annotations

import pytest

from kdlite.data.datamodule import Collate, DataSpec, DistillDataModule, Key, Knobs, StepSampler
from kdlite.data.example import DataError
from kdlite.data.supervision import Supervised


def flat(batches):
    return [k.index for b in batches for k in b]


def test_a_step_is_split_into_world_x_accumulation_micro_batches():
    n_sup = [3, 0, 5, 2, 7, 1, 4, 6, 2, 9, 1, 1, 3, 3, 0, 2]  # 16 examples, 2 steps of 8
    per_rank = [
        list(StepSampler(n_sup, examples_per_step=8, micro_examples=2, world=2, rank=r, seed=3))
        for r in range(2)
    ]
    assert [len(b) for b in per_rank] == [4, 4]  # 2 steps x accumulation 2 on each rank
    assert all(len(mb) == 2 for b in per_rank for mb in b)
    everything = flat(per_rank[0]) + flat(per_rank[1])
    assert sorted(everything) == list(range(16))  # each example exactly once per epoch
    # Every micro-batch carries its step's global counts, identical on both ranks.
    for step in range(2):
        keys = [k for r in range(2) for mb in per_rank[r][2 * step : 2 * step + 2] for k in mb]
        assert len(keys) == 8
        counts = [n_sup[k.index] for k in keys]
        assert {k.step_tokens for k in keys} == {sum(counts)}
        assert {k.step_examples for k in keys} == {sum(c > 0 for c in counts)}


def test_order_is_seeded_per_epoch_and_trailing_partial_step_dropped():
    s = StepSampler([1] * 20, examples_per_step=8, micro_examples=4, seed=0)
    first = flat(s)
    assert len(first) == 16 and len(s) == 4  # 20 examples: 2 full steps, 4 dropped
    assert flat(s) == first
    s.set_epoch(1)
    assert flat(s) != first
    other_seed = StepSampler([1] * 20, examples_per_step=8, micro_examples=4, seed=1)
    assert flat(other_seed) != first


def test_lightning_reaches_set_epoch_through_the_loader():
    """Lightning's fit loop calls `set_epoch` on `loader.sampler` and `loader.batch_sampler.sampler`
    only; without that hook epoch 2 repeated epoch 1's order and step groupings."""
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    s = StepSampler([1] * 16, examples_per_step=8, micro_examples=2, seed=0)
    loader = DataLoader(list(range(16)), batch_sampler=s, collate_fn=lambda rows: rows)
    _set_sampler_epoch(loader, 0)
    first = flat(s)
    _set_sampler_epoch(loader, 1)
    assert s.epoch == 1 and flat(s) != first and sorted(flat(s)) == sorted(first)
    _set_sampler_epoch(loader, 0)
    assert flat(s) == first  # seeded: epoch k's order is reproducible (resume)


def test_validation_pads_ranks_to_equal_batch_counts_with_zero_weight_dummies():
    n_sup = [2, 3, 4, 5, 6]
    ranks = [
        list(
            StepSampler(n_sup, examples_per_step=1, micro_examples=2, world=2, rank=r, train=False)
        )
        for r in range(2)
    ]
    assert [len(r) for r in ranks] == [2, 2]
    keys = [k for r in ranks for mb in r for k in mb]
    real = [k.index for k in keys if not k.dummy]
    assert sorted(real) == [0, 1, 2, 3, 4] and sum(k.dummy for k in keys) == 3
    assert all(k.step_examples == 1 for k in keys)


def test_skip_resumes_mid_epoch_once():
    s = StepSampler([1] * 16, examples_per_step=8, micro_examples=2, seed=0)
    full = list(s)
    s.skip = 3
    assert list(s) == full[3:]
    assert list(s) == full  # the skip applies to one iteration only


def test_uneven_split_is_refused():
    with pytest.raises(DataError, match="multiple"):
        StepSampler([1] * 8, examples_per_step=8, micro_examples=3)


def test_collate_counts_weighted_examples_and_hides_dummies():
    a = Supervised([1, 2, 3], [2, 3, -100], "a")
    b = Supervised([4, 5], [-100, -100], "b")
    rows = [(a, Key(0, 1, 2)), (b, Key(1, 1, 2)), (a, Key(0, 1, 2, dummy=True))]
    batch = Collate(packed=False, pad_id=0)(rows)
    assert batch["n_weighted_examples"] == 1  # b has no supervised token, the dummy never counts
    assert batch["source_ids"] == ["a", "b"]
    assert (batch["step_examples"], batch["step_tokens"]) == (1, 2)
    assert batch["input_ids_BT"].shape == (3, 3)


def test_datamodule_renders_once_and_reuses_the_cache(embedded_tokenizer, monkeypatch):
    spec = DataSpec(name="synthetic", train_size=24, val_size=8, synthetic_size=40, seed=1)
    knobs = Knobs(lsp=0.5, supervise="cot", examples_per_step=8, micro_examples=4)
    dm = DistillDataModule(spec, embedded_tokenizer, knobs)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_items) == 24 and len(dm.val_items) == 8
    assert dm.val_full_items is not None  # lsp < 1: the un-cropped validation set exists too
    zero = sum(it.n_supervised == 0 for it in dm.train_items)
    assert dm.manifest["zero_weight_train_examples"] == zero
    assert set(dm.manifest["train_ids"]) == {it.source_id for it in dm.train_items}

    import kdlite.data.sources as sources

    monkeypatch.setattr(sources, "load_examples", lambda *a, **k: pytest.fail("re-rendered"))
    full = DistillDataModule(spec, embedded_tokenizer, Knobs(examples_per_step=8))
    full.prepare_data()  # cache hit: nothing is loaded or rendered again
    full.setup("fit")
    assert full.val_full_items is None  # lsp = 1, left: one validation set
    for cropped, whole in zip(dm.train_items, full.train_items, strict=True):
        assert cropped.source_id == whole.source_id
        assert len(cropped.input_ids) == max(2, len(whole.input_ids) // 2)
        assert cropped.input_ids == whole.input_ids[: len(cropped.input_ids)]


def test_a_crop_that_leaves_no_supervised_token_anywhere_is_an_error(embedded_tokenizer):
    spec = DataSpec(name="synthetic", train_size=16, val_size=4, synthetic_size=24, seed=2)
    dm = DistillDataModule(
        spec, embedded_tokenizer, Knobs(lsp=0.1, supervise="a", examples_per_step=8)
    )
    dm.prepare_data()
    with pytest.raises(DataError, match="no training example keeps a supervised token"):
        dm.setup("fit")
