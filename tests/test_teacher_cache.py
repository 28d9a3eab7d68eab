"""Teacher logit cache: the cached KD loss against the online one, and the cache's I/O contract."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from kdlite.data.packing import pack, pad_collate
from kdlite.data.supervision import Supervised
from kdlite.losses import (
    distill_loss_chunked,
    distill_loss_chunked_cached,
    distill_loss_reference,
)
from kdlite.models import HiddenLM, random_model
from kdlite.teacher_cache import (
    CacheError,
    CacheSpec,
    Estimate,
    TeacherCache,
    build_cache,
    bytes_per_token,
    estimate,
    partial_folder,
    partial_status,
    plan_shards,
    teacher_fingerprint,
    topk_logprobs,
)

V, H_S, H_T = 40, 8, 12


def _inputs(seed: int = 0, B: int = 2, T: int = 7, vocab_rows: int = V):
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(B, T, H_S, generator=g, dtype=torch.float64).float()
    ws = torch.randn(vocab_rows, H_S, generator=g) * 0.8
    ht = torch.randn(B, T, H_T, generator=g)
    wt = torch.randn(vocab_rows, H_T, generator=g) * 1.2
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, 2] = labels[1, -1] = -100
    w = torch.rand(B, T, generator=g) + 0.1
    w[labels == -100] = 0
    return hs, ws, ht, wt, labels, w


def _cached_terms(ht, wt, k, tau=1.0, vocab=V):
    z = ht @ wt[:vocab].T
    ids, logp, rest = topk_logprobs(z.reshape(-1, vocab), k, tau)
    shape = z.shape[:-1]
    return ids.reshape(*shape, -1), logp.reshape(*shape, -1), rest.reshape(shape)


def _grads(fn, hs, ws):
    hs = hs.clone().requires_grad_(True)
    ws = ws.clone().requires_grad_(True)
    parts = fn(hs, ws)
    parts.loss.backward()
    return parts, hs.grad, ws.grad


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_full_vocabulary_cache_equals_online(lam, tau):
    hs, ws, ht, wt, labels, w = _inputs()
    ids, logp, rest = _cached_terms(ht, wt, k=V, tau=tau)
    assert torch.isinf(rest).all()  # k = V: no rest bucket
    kw = {"lam": lam, "temperature": tau, "chunk_size": 3}
    online, g_h, g_w = _grads(
        lambda h, w_: distill_loss_chunked(h, w_, ht, wt, labels, w, **kw), hs, ws
    )
    cached, c_h, c_w = _grads(
        lambda h, w_: distill_loss_chunked_cached(h, w_, ids, logp, rest, labels, w, **kw), hs, ws
    )
    ref = distill_loss_reference(hs @ ws.T, ht @ wt.T, labels, w, lam=lam, temperature=tau)
    for a, b in ((cached.loss, online.loss), (cached.soft, online.soft), (cached.hard, ref.hard)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached.loss, ref.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c_h, g_h, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(c_w, g_w, rtol=1e-4, atol=1e-6)
    assert g_h.abs().sum() > 0


def test_topk_error_is_small_and_shrinks_with_k():
    hs, ws, ht, wt, labels, w = _inputs(seed=1, T=16)
    exact = distill_loss_chunked(hs, ws, ht, wt, labels, w, lam=1.0).soft
    errors = []
    for k in (2, 5, 10, 20, 39):
        ids, logp, rest = _cached_terms(ht, wt, k)
        soft = distill_loss_chunked_cached(hs, ws, ids, logp, rest, labels, w, lam=1.0).soft
        assert soft <= exact + 1e-6  # the coarsened KL never exceeds the full one
        errors.append(float((exact - soft).abs() / exact))
    assert errors == sorted(errors, reverse=True)
    assert errors[0] > 1e-3 and errors[-1] < 0.05


def test_cached_gradient_matches_autograd_of_the_bucket_kl():
    # The hand-written gradient against autograd of the (k + 1)-bucket KL, k < V.
    hs, ws, ht, wt, labels, w = _inputs(seed=2)
    ids, logp, rest = _cached_terms(ht, wt, k=6, tau=1.5)
    lam, tau = 0.4, 1.5
    _, c_h, c_w = _grads(
        lambda h, w_: distill_loss_chunked_cached(
            h, w_, ids, logp, rest, labels, w, lam=lam, temperature=tau, chunk_size=4
        ),
        hs,
        ws,
    )
    h, w_ = hs.clone().requires_grad_(True), ws.clone().requires_grad_(True)
    logq = torch.log_softmax(h @ w_.T / tau, -1)
    logq_k = logq.gather(-1, ids.long())
    log_rest_s = logq.scatter(-1, ids.long(), float("-inf")).logsumexp(-1)
    kl = tau**2 * ((logp.exp() * (logp - logq_k)).sum(-1) + rest.exp() * (rest - log_rest_s))
    ce = -torch.log_softmax(h @ w_.T, -1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    (w * (lam * kl + (1 - lam) * ce)).sum().backward()
    torch.testing.assert_close(c_h, h.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(c_w, w_.grad, rtol=1e-4, atol=1e-6)


def test_cached_loss_ignores_padding_values_and_checks_ids():
    hs, ws, ht, wt, labels, w = _inputs(seed=3)
    ids, logp, rest = _cached_terms(ht, wt, k=8)
    base = distill_loss_chunked_cached(hs, ws, ids, logp, rest, labels, w, lam=0.5)
    junk = w == 0
    ids2, logp2, rest2 = ids.clone(), logp.clone(), rest.clone()
    ids2[junk] = 0
    logp2[junk] = 0.0
    rest2[junk] = 0.0
    again = distill_loss_chunked_cached(hs, ws, ids2, logp2, rest2, labels, w, lam=0.5)
    torch.testing.assert_close(base.loss, again.loss)
    bad = ids.clone()
    bad[0, 0, 0] = V
    with pytest.raises(ValueError, match="outside"):
        distill_loss_chunked_cached(hs, ws, bad, logp, rest, labels, w, lam=0.5)
    with pytest.raises(ValueError, match="needs the cached"):
        distill_loss_chunked_cached(hs, ws, None, None, None, labels, w, lam=0.5)
    ce_only = distill_loss_chunked_cached(hs, ws, None, None, None, labels, w, lam=0.0)
    torch.testing.assert_close(
        ce_only.loss, distill_loss_chunked(hs, ws, None, None, labels, w, lam=0.0).loss
    )


# ---- the cache on disk -----------------------------------------------------------------------
VOCAB_TINY = 64


@pytest.fixture(scope="module")
def teacher():
    return HiddenLM(random_model("tiny-teacher", vocab_size=VOCAB_TINY, seed=0).eval())


def _rows():
    g = torch.Generator().manual_seed(5)
    return [
        (f"src-{i}", torch.randint(0, VOCAB_TINY, (n,), generator=g).tolist())
        for i, n in enumerate((9, 5, 12, 7))
    ]


def _spec(k, **kw):
    return CacheSpec(teacher="t", data="d", k=k, vocab_size=VOCAB_TINY, **kw)


def test_cache_round_trip_left_crops_packed_and_padded(teacher, tmp_path):
    rows = _rows()
    spec = _spec(VOCAB_TINY, logprob_dtype="float32")
    folder = build_cache(teacher, rows, tmp_path / "c", spec, batch_tokens=20, shard_tokens=16)
    assert len(list(folder.glob("shard-*.safetensors"))) > 1
    cache = TeacherCache(folder)
    # left crops of items 2 and 0, packed into one row, and the same as a padded batch
    items = [
        Supervised(rows[2][1][:6], [1] * 5 + [-100], rows[2][0]),
        Supervised(rows[0][1][:9], [1] * 8 + [-100], rows[0][0]),
    ]
    for batch in (pack(items), pad_collate(items, pad_id=0)):
        batch["source_ids"] = [it.source_id for it in items]
        ids, logp, rest = cache.lookup(batch)
        B, T = batch["input_ids_BT"].shape
        assert ids.shape == (B, T, VOCAB_TINY) and rest.shape == (B, T)
        for b in range(B):
            for s, item in enumerate(items):
                pos = (batch["segment_ids_BT"][b] == s).nonzero().squeeze(1)
                if not len(pos):
                    continue
                with torch.no_grad():
                    h = teacher(torch.tensor([item.input_ids]))[0]
                want_ids, want_logp, _ = topk_logprobs(h @ teacher.head_weight.T, VOCAB_TINY)
                torch.testing.assert_close(ids[b, pos], want_ids.long())
                torch.testing.assert_close(logp[b, pos], want_logp, rtol=1e-5, atol=1e-5)
        padding = batch["segment_ids_BT"] < 0
        assert (ids[padding] == 0).all() and (rest[padding] == 0).all()


def test_cache_refuses_right_crops_and_foreign_rows(teacher, tmp_path):
    rows = _rows()
    cache = TeacherCache(build_cache(teacher, rows, tmp_path / "c", _spec(4)))
    right = Supervised(rows[2][1][-6:], [1] * 5 + [-100], rows[2][0])
    batch = pack([right])
    batch["source_ids"] = [right.source_id]
    with pytest.raises(CacheError, match="left crops only"):
        cache.lookup(batch)
    with pytest.raises(CacheError, match="right crop"):
        cache.check_run(lsp=0.5, crop="right", temperature=1.0)
    cache.check_run(lsp=1.0, crop="right", temperature=1.0)  # lsp = 1: the full row
    with pytest.raises(CacheError, match="τ=2.0"):
        cache.check_run(lsp=0.5, crop="left", temperature=2.0)
    other = Supervised([1, 2, 3], [2, 3, -100], "not-cached")
    batch = pack([other])
    batch["source_ids"] = ["not-cached"]
    with pytest.raises(CacheError, match="not in the teacher cache"):
        cache.lookup(batch)
    with pytest.raises(CacheError, match="no teacher cache"):
        TeacherCache(tmp_path / "missing")


def test_cache_key_changes_with_teacher_data_k_and_temperature(tmp_path):
    base = _spec(64)
    keys = {
        base.key,
        dataclasses.replace(base, teacher="t2").key,
        dataclasses.replace(base, data="d2").key,
        dataclasses.replace(base, k=32).key,
        dataclasses.replace(base, temperature=2.0).key,
        dataclasses.replace(base, logprob_dtype="bfloat16").key,
    }
    assert len(keys) == 6 and base.key == _spec(64).key
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"a")
    first = teacher_fingerprint(str(folder))
    (folder / "model.safetensors").write_bytes(b"bb")
    assert teacher_fingerprint(str(folder)) != first
    assert teacher_fingerprint("Qwen/Qwen3-8B", "abc") == "hub:Qwen/Qwen3-8B@abc"
    assert bytes_per_token(64) == 392 and bytes_per_token(8) == 56


def test_cli_splits_its_options_and_refuses_random_teachers(embedded_tokenizer):
    from kdlite.cli.cache_teacher import split_args
    from kdlite.config import compose_train as compose
    from kdlite.teacher_cache import teacher_path

    own, overrides = split_args(["k=16", "data=synthetic", "logprob_dtype=float32", "lsp=0.5"])
    assert own.k == 16 and own.logprob_dtype == "float32"
    assert overrides == ["data=synthetic", "lsp=0.5"]
    cfg = compose(["pair.teacher.bootstrap=false", "pair.teacher.init=random"])
    with pytest.raises(CacheError, match="random-weight teacher"):
        teacher_path(cfg, embedded_tokenizer)
    shipped = compose(["pair.teacher.bootstrap=false"])  # the tiny pair's reasoning teacher
    folder, revision = teacher_path(shipped, embedded_tokenizer)
    assert folder.endswith("tiny-teacher-reasoning") and revision is None


# ---- a cache for a grid: resumable shards, manifest checks, estimate, teacher=auto ------------
def _read_all(cache: TeacherCache) -> dict[str, dict[str, torch.Tensor]]:
    return {sid: cache.row(sid, n) for sid, (_, _, n) in cache.index.items()}


def test_plan_covers_every_row_once_within_the_shard_size():
    lengths = [9, 5, 12, 7, 30, 1, 5]
    plan = plan_shards(lengths, shard_tokens=16)
    assert sorted(i for shard in plan for i in shard) == list(range(len(lengths)))
    for shard in plan:
        assert len(shard) == 1 or sum(lengths[i] for i in shard) <= 16
    assert plan == plan_shards(lengths, shard_tokens=16)  # a function of the rows alone
    with pytest.raises(ValueError, match="shard_tokens"):
        plan_shards(lengths, 0)


def test_an_interrupted_build_resumes_and_equals_an_uninterrupted_one(teacher, tmp_path):
    rows = _rows() + [(f"more-{i}", list(range(1, 4 + i))) for i in range(6)]
    spec = _spec(8)
    kw = {"batch_tokens": 24, "shard_tokens": 16}
    whole = TeacherCache(build_cache(teacher, rows, tmp_path / "whole", spec, **kw))
    n_shards = len(plan_shards([len(r) for _, r in rows], 16))
    assert n_shards >= 4

    def crash_after_two(shard):
        built.append(shard)
        if len(built) == 2:
            raise KeyboardInterrupt  # a crash mid-build, in-process

    folder, built = tmp_path / "resumed", []
    with pytest.raises(KeyboardInterrupt):
        build_cache(teacher, rows, folder, spec, on_shard=crash_after_two, **kw)
    assert not folder.exists()
    assert partial_status(folder) == f"2 of {n_shards} shards complete"
    with pytest.raises(CacheError, match=rf"{folder.name} is partial \(2 of {n_shards} shards"):
        TeacherCache(folder)

    built = []
    build_cache(teacher, rows, folder, spec, on_shard=built.append, **kw)
    assert built == list(range(2, n_shards))  # only the missing shards
    resumed = TeacherCache(folder)
    assert not partial_folder(folder).exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in whole.folder.iterdir()
    )
    got, want = _read_all(resumed), _read_all(whole)
    assert sorted(got) == sorted(sid for sid, _ in rows)  # every row, once (index keys)
    assert resumed.tokens == sum(len(r) for _, r in rows)
    for sid in want:
        for name in want[sid]:
            assert torch.equal(got[sid][name], want[sid][name]), (sid, name)

    other = [*rows[:-1], ("changed", [1, 2, 3])]  # a partial build of other rows is discarded
    built = []
    with pytest.raises(KeyboardInterrupt):
        build_cache(teacher, rows, tmp_path / "x", spec, on_shard=crash_after_two, **kw)
    built = []
    build_cache(teacher, other, tmp_path / "x", spec, on_shard=built.append, **kw)
    assert built == list(range(len(plan_shards([len(r) for _, r in other], 16))))
    assert "changed" in TeacherCache(tmp_path / "x").index


def test_reader_refuses_damaged_and_stale_caches_by_name(teacher, tmp_path):
    folder = build_cache(teacher, _rows(), tmp_path / "c", _spec(4), shard_tokens=16)
    cache = TeacherCache(folder)
    with pytest.raises(CacheError, match=r"stale for this run: k: cache 4, run 8") as err:
        cache.check_run(lsp=0.5, crop="left", temperature=1.0, spec=_spec(8))
    assert str(folder) in str(err.value)
    teacher_changed = dataclasses.replace(_spec(4), teacher="t2")
    with pytest.raises(CacheError, match=r"teacher: cache 't', run 't2'"):
        cache.check_run(lsp=0.5, crop="left", temperature=1.0, spec=teacher_changed)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [s["file"] for s in manifest["shards"]] == sorted(
        p.name for p in folder.glob("shard-*.safetensors")
    )
    assert manifest["bytes_per_token"] == bytes_per_token(4) and manifest["rows"] == 4
    shard = folder / manifest["shards"][1]["file"]
    shard.write_bytes(shard.read_bytes()[:-8])
    with pytest.raises(CacheError, match=rf"{folder.name} is damaged \(shard-00001"):
        TeacherCache(folder)
    shard.unlink()
    with pytest.raises(CacheError, match="shard-00001.safetensors is missing"):
        TeacherCache(folder)


def test_estimate_is_the_disk_a_build_takes(teacher, tmp_path):
    # The docs' arithmetic: 40k examples × 4,096 tokens at k = 64 (6·64 + 8 = 392 B/token).
    study = estimate([4096] * 40_000, k=64)
    assert study.tokens == 163_840_000 and study.bytes == 64_225_280_000  # 64.2 GB, 59.8 GiB
    rows = _rows()
    est = estimate([len(r) for _, r in rows], k=4, shard_tokens=16)
    folder = build_cache(teacher, rows, tmp_path / "c", _spec(4), shard_tokens=16)
    shards = list(folder.glob("shard-*.safetensors"))
    assert est.shards == len(shards) and est.examples == 4 and est.tokens == 33
    on_disk = sum(p.stat().st_size for p in shards)
    assert est.bytes <= on_disk <= est.bytes + 400 * len(shards)  # + one safetensors header each
    assert "33 tokens (longest 12) × 32 B/token = 1,056 bytes" in est.describe()


def test_dry_run_prints_the_estimate_and_loads_no_teacher(monkeypatch, capsys, embedded_tokenizer):
    import kdlite.cli.cache_teacher as cli
    from kdlite.paths import cache_root

    def no_teacher(*args, **kwargs):
        raise AssertionError("a dry run loaded the teacher")

    monkeypatch.setattr(cli, "load_teacher", no_teacher)
    caches = cache_root() / "teacher_logits"
    before = sorted(caches.glob("*"))  # other tests of the session may have built caches
    est = cli.main([*CLI_DATA, "k=16", "dry_run=true"])
    assert isinstance(est, Estimate)
    out = capsys.readouterr().out
    assert f"{est.examples} examples, {est.tokens:,} tokens" in out
    assert f"× 104 B/token = {est.tokens * 104:,} bytes" in out and "(not built)" in out
    assert est.examples == 40 and est.tokens > 1000
    assert sorted(caches.glob("*")) == before  # nothing written
    with pytest.raises(SystemExit):
        cli.split_args(["dry_run=maybe"])
    assert "dry_run=maybe" in capsys.readouterr().err


CLI_DATA = ["data.synthetic_size=48", "data.train_size=32", "data.val_size=8"]


def test_teacher_auto_reads_the_cache_for_left_crops_and_runs_online_for_right_crops(
    caplog, embedded_tokenizer
):
    import logging

    from kdlite.cli.cache_teacher import main
    from kdlite.config import compose_train
    from kdlite.teacher_cache import full_row_datamodule, select_for_run

    folder = main([*CLI_DATA, "k=8", "progress=false"])

    def select(*overrides):
        cfg = compose_train([*CLI_DATA, "teacher_cache_k=8", *overrides])
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="kdlite.teacher_cache"):
            cache = select_for_run(
                cfg, embedded_tokenizer, full_row_datamodule(cfg, embedded_tokenizer)
            )
        return cache, caplog.text

    for overrides in (["lsp=0.5"], ["lsp=1.0", "crop=right"], ["supervise=cot"]):
        cache, said = select("teacher=auto", *overrides)
        assert cache is not None and cache.folder == folder
        assert f"teacher=auto: reading the teacher cache {folder} (k=8)" in said
    cache, said = select("teacher=auto", "lsp=0.5", "crop=right")
    assert cache is None
    assert "teacher=auto: online teacher (crop=right at lsp=0.5" in said
    cache, said = select("teacher=auto", "lsp=0.5", "temperature=2.0")  # no cache for τ = 2
    assert cache is None and "online teacher (no teacher cache" in said
    assert f"{folder} is stale for it: temperature: cache 1.0, run 2.0" in said
    # teacher=cache requires the cache: the same two runs are refused, naming why
    with pytest.raises(CacheError, match="crop=right with lsp=0.5"):
        select("teacher=cache", "lsp=0.5", "crop=right")
    with pytest.raises(CacheError, match="temperature: cache 1.0, run 2.0"):
        select("teacher=cache", "temperature=2.0")
    cache, said = select("teacher=cache", "lsp=0.3")
    assert cache is not None and "teacher=cache: reading the teacher cache" in said
