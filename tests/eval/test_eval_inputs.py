"""Benchmarks, prompts and model resolution: every bad input fails before generation."""

import json
import shutil
from pathlib import Path

import pytest

from kdlite.eval.benchmarks import (
    AIME_PROMPT,
    EvalError,
    Problem,
    load_problems,
    problems_from_rows,
    user_prompt,
)
from kdlite.eval.models import chat_prompt_ids, load_eval_tokenizer, resolve_model, stop_token_ids

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"


def jsonl_bench(path):
    from kdlite.eval.config import BenchConfig

    return BenchConfig(name="jsonl", source="jsonl", path=str(path))


def test_aime_rows_in_the_hub_layout():
    rows = [  # HuggingFaceH4/aime_2024 columns
        {
            "id": 60,
            "problem": "Every morning Aya ...",
            "solution": "...",
            "answer": "204",
            "url": "u",
            "year": 2024,
        },
        {
            "id": 61,
            "problem": "Let ABC ...",
            "solution": "...",
            "answer": "113",
            "url": "u",
            "year": 2024,
        },
    ]
    assert problems_from_rows(rows, "aime") == [
        Problem("60", "Every morning Aya ...", "204"),
        Problem("61", "Let ABC ...", "113"),
    ]
    # yentinglin/aime_2025 has integer-typed answers in some revisions
    assert problems_from_rows([{"problem": "x", "answer": 70}], "aime25")[0] == Problem(
        "0", "x", "70"
    )


def test_aime_prompt_wording():
    p = user_prompt(Problem("1", "Find x.", "3"), "aime")
    assert p.startswith("Solve the following math problem efficiently and clearly.  The last line")
    assert (
        "'Therefore, the final answer is: $\\boxed{ANSWER}$. I hope it is correct' (without quotes)"
        in p
    )
    assert p.endswith("Think step by step before answering.\n\nFind x.")
    assert p == AIME_PROMPT + "Find x."
    assert user_prompt(Problem("1", "Find x.", "3"), "plain") == "Find x."


def test_jsonl_benchmark_loads():
    probs = load_problems(jsonl_bench(FIXTURES / "tiny.jsonl"))
    assert [p.id for p in probs] == ["p1", "p2", "p3"] and probs[2].answer == "\\frac{1}{2}"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("empty.jsonl", "empty"),
        ("malformed.jsonl", "malformed.jsonl:2: not valid JSON"),
        ("missing_answer.jsonl", "no answer"),
        ("nope.jsonl", "not found"),
    ],
)
def test_bad_jsonl_is_a_clear_error(name, match):
    with pytest.raises(EvalError, match=match):
        load_problems(jsonl_bench(FIXTURES / name))


def test_duplicate_ids_and_bad_fields():
    with pytest.raises(EvalError, match="duplicate"):
        problems_from_rows(
            [{"id": 1, "problem": "a", "answer": "1"}, {"id": 1, "problem": "b", "answer": "2"}],
            "x",
        )
    with pytest.raises(EvalError, match="non-empty"):
        problems_from_rows([{"problem": " ", "answer": "1"}], "x")


def test_synthetic_benchmark_loads():
    from kdlite.eval.config import BenchConfig

    probs = load_problems(
        BenchConfig(name="synthetic", source="synthetic", size=5, seed=0, prompt="plain")
    )
    assert len(probs) == 5 and len({p.id for p in probs}) == 5


def test_synthetic_long_benchmark_config_and_a_bad_min_steps():
    """conf/bench/synthetic_long.yaml: 3- and 4-step problems only (the demo's benchmark); an
    impossible step count is an EvalError naming the key, before any model is touched."""
    from hydra import compose, initialize_config_dir

    from kdlite.eval.config import BenchConfig

    conf = Path(__file__).parents[2] / "conf"
    with initialize_config_dir(str(conf), version_base=None):
        cfg = compose("eval", overrides=["bench=synthetic_long"])
    bench = BenchConfig(**cfg.benches.synthetic_long)
    assert (bench.name, bench.min_steps, bench.prompt) == ("synthetic_long", 3, "plain")
    probs = load_problems(bench)
    assert len(probs) == bench.size
    # problem sentences: the start, one per step, the question
    assert {p.problem.count(".") - 1 for p in probs} == {3, 4}
    bad = BenchConfig(name="s", source="synthetic", size=5, min_steps=6, prompt="plain")
    with pytest.raises(EvalError, match=r"bench s: benches\.s\.min_steps must be an integer"):
        load_problems(bad)


def test_resolve_run_dir_hf_folder_and_hub_id(run_dir, tiny_model_dir, tmp_path):
    ref = resolve_model(str(run_dir), tmp_path / "out")
    assert (ref.kind, ref.path, ref.results_dir("aime24")) == (
        "run",
        str(run_dir / "export"),
        run_dir / "eval" / "aime24",
    )
    ref = resolve_model(str(tiny_model_dir), tmp_path / "out")
    assert ref.kind == "hf" and ref.results_root.parent.parent == tmp_path / "out"
    ref = resolve_model("Qwen/Qwen3-1.7B-Base", tmp_path / "out")
    assert (
        ref.kind == "hf" and ref.results_root == tmp_path / "out" / "Qwen__Qwen3-1.7B-Base" / "eval"
    )


def test_missing_model_folder_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EvalError, match="run `python train.py` first"):
        resolve_model("runs/default", "runs/eval")
    with pytest.raises(EvalError, match="not found"):
        resolve_model(str(tmp_path / "nope"), "runs/eval")
    (tmp_path / "runs" / "half").mkdir(parents=True)
    (tmp_path / "runs" / "half" / "config.yaml").write_text("x: 1\n")
    with pytest.raises(EvalError, match="no export"):
        resolve_model("runs/half", "runs/eval")


def test_model_without_chat_template_errors(tiny_model_dir, tmp_path):
    folder = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, folder)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    for f in folder.glob("chat_template.*"):
        f.unlink()
    with pytest.raises(EvalError, match="no chat template"):
        load_eval_tokenizer(resolve_model(str(folder), tmp_path))


def test_chat_prompt_has_thinking_generation_prompt(tiny_model_dir, tmp_path):
    tok = load_eval_tokenizer(resolve_model(str(tiny_model_dir), tmp_path))
    text = tok.decode(chat_prompt_ids(tok, "What is 2+3?"))
    assert text == "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    assert stop_token_ids(tok) == tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
