"""Both backends yield the same record format; vLLM's path runs against a stand-in engine."""

import pytest
from eval_stubs import FakeEngine, fake_params

from kdlite.eval.generate import Job, Sampling, TransformersBackend, VLLMBackend, derive_seed

KEYS = {"id", "sample", "text", "n_tokens", "finish_reason", "seed", "backend", "versions"}
S = Sampling(n_samples=3, temperature=0.6, top_p=0.95, top_k=0, max_new_tokens=8)


def jobs():
    return [
        Job("b1", "p1", (1, 2, 3), (0, 1, 2), S),
        Job("b1", "p2", (1, 2), (1,), S),  # resumed: only sample 1 missing
        Job("b2", "q1", (4, 5, 6, 7), (0, 1, 2), S),
    ]


@pytest.fixture
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_vllm_path_with_stand_in_engine(tok):
    engines = []

    def factory(*args):
        engines.append(FakeEngine(*args))
        return engines[-1]

    backend = VLLMBackend(
        "m",
        tok,
        tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]),
        seed=5,
        n_engines=1,
        engine_factory=factory,
        params_factory=fake_params,
    )
    out = list(backend.generate(jobs()))
    (engine,) = engines
    assert (
        engine.max_model_len == 4 + 8 and engine.seed == 5
    )  # context = longest prompt + max new tokens
    recs = {(b, r["id"], r["sample"]): r for b, batch in out for r in batch}
    assert set(recs) == {
        ("b1", "p1", 0),
        ("b1", "p1", 1),
        ("b1", "p1", 2),
        ("b1", "p2", 1),
        ("b2", "q1", 0),
        ("b2", "q1", 1),
        ("b2", "q1", 2),
    }
    r = recs[("b1", "p2", 1)]
    assert set(r) == KEYS and r["backend"] == "vllm" and r["seed"] == 5
    assert r["n_tokens"] == 3 and r["finish_reason"] == "stop"
    assert r["text"].endswith("\\boxed{2}")  # stop string stripped
    assert (
        recs[("b2", "q1", 2)]["n_tokens"] == 5
    )  # completion index 2 -> sample 2 despite reverse order


def test_vllm_shards_balance_samples():
    backend = VLLMBackend.__new__(VLLMBackend)
    backend.n_engines = 2
    shards = backend.shards([Job("b", str(i), (1,), tuple(range(64)), S) for i in range(60)])
    assert [len(s) for s in shards] == [30, 30]


def test_transformers_backend_records(tok, tiny_model_dir):
    backend = TransformersBackend(
        str(tiny_model_dir), tok, [tok.convert_tokens_to_ids("<|im_end|>")], batch_size=4, seed=3
    )
    out = list(backend.generate(jobs()))
    recs = [r for _, batch in out for r in batch]
    assert sorted((r["id"], r["sample"]) for r in recs) == [
        ("p1", 0),
        ("p1", 1),
        ("p1", 2),
        ("p2", 1),
        ("q1", 0),
        ("q1", 1),
        ("q1", 2),
    ]
    for r in recs:
        assert set(r) == KEYS and r["backend"] == "transformers" and 1 <= r["n_tokens"] <= 8
        assert r["finish_reason"] in ("stop", "length")
        assert (r["finish_reason"] == "length") == (
            r["n_tokens"] == 8 and "<|im_end|>" not in r["text"]
        )
    # same seed -> same samples; batch seeds derive from the run seed
    again = [r for _, batch in backend.generate(jobs()) for r in batch]
    assert [r["text"] for r in again] == [r["text"] for r in recs]
    assert recs[0]["seed"] == derive_seed(3, "b1", "p2", 1, 4)


def test_transformers_backend_disables_top_k(tok, tiny_model_dir):
    backend = TransformersBackend(str(tiny_model_dir), tok, [1], batch_size=1, seed=0)
    gc = backend._generation_config(S)
    assert gc.top_k == 0 and gc.top_p == 0.95 and gc.temperature == 0.6 and gc.do_sample
