"""evaluate(cfg) end to end on CPU with a tiny random Qwen3: files, resume after a kill, bad inputs."""

import functools
import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest
from eval_stubs import flaky_grader

import kdlite.eval.run as run_mod
from kdlite.eval.benchmarks import EvalError
from kdlite.eval.run import evaluate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"
TINY = str(FIXTURES / "tiny.jsonl")
CONTRACT = {
    "model",
    "model_kind",
    "bench",
    "n_problems",
    "n_samples",
    "avg_at_n",
    "avg_at_n_strict",
    "stderr",
    "ci95",
    "pass_at_k",
    "per_problem",
    "correct",
    "correct_strict",
    "derived_before_reflection",
    "derived_anywhere",
    "protocol",
    "versions",
}


def small(*extra):
    return (
        "bench=jsonl",
        f"benches.jsonl.path={TINY}",
        "n_samples=2",
        "max_new_tokens=6",
        "batch_size=4",
        "grade_workers=1",
        *extra,
    )


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("bench", ["aime24", "aime25", "synthetic", "jsonl"])
def test_every_shipped_bench_config_composes(compose_eval, bench):
    cfg = compose_eval(f"bench={bench}")
    assert list(cfg.benches) == [bench] and cfg.benches[bench].name == bench
    run_mod.check_config(cfg)


def test_defaults_are_the_protocols(compose_eval):
    cfg = compose_eval()
    assert cfg.model is None and list(cfg.benches) == ["synthetic"]  # None: runs/default
    syn = run_mod.sampling_for(cfg, cfg.benches.synthetic)
    assert (syn.n_samples, syn.max_new_tokens) == (4, 640)
    cfg = compose_eval("bench=[aime24,aime25]")
    study = run_mod.sampling_for(cfg, cfg.benches.aime25)
    assert (study.n_samples, study.temperature, study.top_p, study.top_k, study.max_new_tokens) == (
        64,
        0.6,
        0.95,
        0,
        32768,
    )
    assert (
        cfg.benches.aime24.hub_id == "HuggingFaceH4/aime_2024"
        and cfg.benches.aime25.hub_id == "yentinglin/aime_2025"
    )


def test_no_arguments_without_training_says_run_train(compose_eval, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EvalError, match="python train.py"):
        evaluate(compose_eval())


def test_evaluate_writes_generations_and_results(compose_eval, run_dir, capsys):
    cfg = compose_eval(*small(f"model={run_dir}"))
    (res,) = evaluate(cfg)
    out = run_dir / "eval" / "jsonl"
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) >= CONTRACT and saved["model_kind"] == "run" and saved["n_problems"] == 3
    assert len(saved["correct"]) == 3 and all(len(r) == 2 for r in saved["correct"])
    assert saved["pass_at_k"]["1"] == pytest.approx(saved["avg_at_n"])
    assert saved["grading"]["ok"] == 6 and saved["generation"]["this_call"]["samples"] == 6
    assert saved["protocol"]["n_samples"] == 2 and saved["protocol"]["max_new_tokens"] == 6
    gens = lines(out / "generations.jsonl")
    assert sorted((g["id"], g["sample"]) for g in gens) == [
        (p, s) for p in ("p1", "p2", "p3") for s in (0, 1)
    ]
    assert "avg@n" in capsys.readouterr().out
    assert "think_conclusion" not in saved  # the synthetic corpus's diagnostic only
    # a second call generates nothing and scores the same
    (again,) = evaluate(cfg)
    assert again["generation"]["this_call"]["samples"] == 0 and again["correct"] == res["correct"]
    assert len(lines(out / "generations.jsonl")) == 6


def test_several_models_in_one_call(compose_eval, run_dir, tiny_model_dir, tmp_path):
    results = evaluate(
        compose_eval(*small(f"model=[{run_dir},{tiny_model_dir}]", f"out_dir={tmp_path / 'ev'}"))
    )
    assert [r["model_kind"] for r in results] == ["run", "hf"]
    assert (run_dir / "eval" / "jsonl" / "results.json").is_file()
    assert len(list((tmp_path / "ev").glob("*/eval/jsonl/results.json"))) == 1


def test_grader_crash_is_scored_wrong_and_counted(compose_eval, run_dir, monkeypatch):
    cfg = compose_eval(*small(f"model={run_dir}"))
    evaluate(cfg)
    path = run_dir / "eval" / "jsonl" / "generations.jsonl"
    texts = {
        ("p1", 0): "<think>2+3=5</think> \\boxed{5}",
        ("p1", 1): "CRASH",
        ("p2", 0): "<think>so \\boxed{6}",  # truncated: full right, strict wrong
        ("p2", 1): "RAISE",
        ("p3", 0): "<think>x</think> $\\boxed{0.5}$",
        ("p3", 1): "<think>x</think> no answer",
    }
    gens = lines(path)
    for g in gens:
        g["text"] = texts[(g["id"], g["sample"])]
    path.write_text("".join(json.dumps(g) + "\n" for g in gens))
    monkeypatch.setattr(run_mod, "grade_all", functools.partial(run_mod.grade_all, fn=flaky_grader))
    (res,) = evaluate(cfg)
    assert res["correct"] == [[1, 0], [1, 0], [1, 0]]
    assert res["correct_strict"] == [[1, 0], [0, 0], [1, 0]]
    assert res["grading"]["error"] == 2 and res["grading"]["ok"] == 4
    assert res["avg_at_n"] == pytest.approx(0.5) and res["avg_at_n_strict"] == pytest.approx(1 / 3)
    # the diagnostic matches text, not math: 0.5 is not the gold's \frac{1}{2} for it
    assert res["correct_derived_before_reflection"] == [[1, 0], [1, 0], [0, 0]]
    assert res["derived_before_reflection"] == pytest.approx(1 / 3)
    # no cue in these outputs: anywhere reads the same text
    assert res["correct_derived_anywhere"] == res["correct_derived_before_reflection"]


def test_bad_input_fails_before_generation(compose_eval, run_dir, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("generation started")

    monkeypatch.setattr(run_mod, "TransformersBackend", boom)
    with pytest.raises(EvalError, match="not valid JSON"):
        evaluate(
            compose_eval(
                *small(f"model={run_dir}", f"benches.jsonl.path={FIXTURES / 'malformed.jsonl'}")
            )
        )
    with pytest.raises(EvalError, match="not found"):
        evaluate(compose_eval(*small(f"model=[{run_dir},{run_dir}_missing]")))
    assert not (run_dir / "eval").exists()


def test_interrupted_run_resumes_without_duplicates(compose_eval, run_dir, monkeypatch):
    cfg = compose_eval(*small(f"model={run_dir}", "batch_size=1"))
    real_append = run_mod.GenerationStore.append
    calls = []

    def append_then_die(self, recs):
        real_append(self, recs)
        calls.append(len(recs))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed right after the 2nd batch reached the disk

    monkeypatch.setattr(run_mod.GenerationStore, "append", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        evaluate(cfg)
    path = run_dir / "eval" / "jsonl" / "generations.jsonl"
    first = lines(path)
    assert len(first) == 2
    monkeypatch.setattr(run_mod.GenerationStore, "append", real_append)
    (res,) = evaluate(cfg)
    assert res["generation"]["this_call"]["samples"] == 4
    final = lines(path)
    assert final[:2] == first
    assert sorted((g["id"], g["sample"]) for g in final) == [
        (p, s) for p in ("p1", "p2", "p3") for s in (0, 1)
    ]


def _evaluate_in_child(overrides):
    os.environ["OMP_NUM_THREADS"] = "1"
    from hydra import compose, initialize_config_dir

    import kdlite.eval.config  # noqa: F401

    with initialize_config_dir(
        config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"
    ):
        cfg = compose("eval", overrides=list(overrides))
    evaluate(cfg)


def test_sigkill_midway_then_resume(compose_eval, run_dir):
    overrides = (*small(f"model={run_dir}", "batch_size=1", "n_samples=8", "max_new_tokens=96"),)
    path = run_dir / "eval" / "jsonl" / "generations.jsonl"
    child = mp.get_context("spawn").Process(target=_evaluate_in_child, args=(overrides,))
    child.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and child.is_alive():
        if path.is_file() and len(path.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    done_at_kill = len(lines(path))
    assert 3 <= done_at_kill < 24, "the kill must land mid-generation"
    (res,) = evaluate(compose_eval(*overrides))
    final = lines(path)
    keys = [(g["id"], g["sample"]) for g in final]
    assert len(keys) == len(set(keys)) == 24  # nothing generated twice, nothing lost
    assert res["generation"]["this_call"]["samples"] == 24 - done_at_kill


def test_think_conclusion_stats_counts_where_think_blocks_end_and_what_is_boxed():
    from kdlite.eval.benchmarks import Problem
    from kdlite.eval.run import think_conclusion_stats

    problems = [Problem("a", "q", "10"), Problem("b", "q", "7")]
    texts = {
        ("a", 0): "<think>\nSo Ava has 10 pens at the end.\n</think>\n\nThe answer is \\boxed{10}.",
        # ends on the gold, boxes another value
        ("a", 1): "<think>\nso 10 is right.\n</think>\n\nThe answer is \\boxed{1}.",
        # a drifted re-check after the gold: ends on 5, boxes its own (wrong) conclusion
        ("b", 0): "<think>\nso 7 is right. Then the answer is 5.\n</think>\n\\boxed{5}",
        # never closes its think block
        ("b", 1): "<think>\nSo the answer is 7. Wait, let me check",
        ("other", 0): "<think>\nthe answer is 3.\n</think> \\boxed{3}",  # not in problems
    }
    records = {k: {"text": t} for k, t in texts.items()}
    stats = think_conclusion_stats(problems, records)
    assert stats == {"ends_on_gold": 3 / 4, "closed_think": 3, "boxes_own_conclusion": 2 / 3}
    assert think_conclusion_stats(problems, {}) == {
        "ends_on_gold": None,
        "closed_think": 0,
        "boxes_own_conclusion": None,
    }
