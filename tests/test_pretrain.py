"""Base-model pre-training of the tiny shapes and the weights shipped in kdlite/assets."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import torch

from kdlite.cli.pretrain import RECIPE_FILE, PretrainRecipe, lr_at, packed_rows, pretrain
from kdlite.config import ConfigError, validate
from kdlite.models import ASSETS, INITS, ModelLoadError, ModelSpec, asset_dir, load_model


class _CharTok:
    """ids = code points; `<|endoftext|>` is 0."""

    def convert_tokens_to_ids(self, token: str) -> int:
        assert token == "<|endoftext|>"
        return 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [ord(c) for c in text]}


def test_packed_rows_are_documents_back_to_back_with_eos():
    rows = packed_rows(iter(["ab", "cde", "f", "ghij", "k"]), _CharTok(), seq_len=4, batch=2)
    first = next(rows)
    a, b, c, d, e, f = (ord(x) for x in "abcdef")
    assert first.tolist() == [[a, b, 0, c], [d, e, 0, f]]
    g, h, i, j, k = (ord(x) for x in "ghijk")
    # the carried-over eos after "f", then "ghij", eos, "k", eos: 8 ids fill the next 2 rows
    assert next(rows).tolist() == [[0, g, h, i], [j, 0, k, 0]]


def test_lr_warms_up_then_decays_to_zero():
    r = PretrainRecipe(shape="tiny-student", steps=110, lr=1e-3, warmup_steps=10)
    assert lr_at(0, r) == pytest.approx(1e-4)
    assert lr_at(9, r) == pytest.approx(1e-3)
    assert lr_at(10, r) == pytest.approx(1e-3)
    assert lr_at(60, r) == pytest.approx(5e-4)
    assert lr_at(110, r) == pytest.approx(0.0, abs=1e-12)
    values = [lr_at(s, r) for s in range(10, 111)]
    assert all(x >= y for x, y in itertools.pairwise(values))


def test_pretrain_writes_a_loadable_bf16_model_with_its_recipe(tmp_path, embedded_tokenizer):
    recipe = PretrainRecipe(shape="tiny-student", steps=4, seq_len=32, batch=2, warmup_steps=2)
    record = pretrain(recipe, tmp_path / "base", log_every=2, eval_problems=2)
    saved = json.loads((tmp_path / "base" / RECIPE_FILE).read_text())
    assert saved["recipe"]["steps"] == 4 and saved["tokens"] == 4 * 2 * 32
    assert saved == json.loads(json.dumps(record))
    assert 0.0 < saved["final_loss"] < 10.0 and saved["direct_accuracy"] in (0.0, 0.5, 1.0)
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and config["vocab_size"] == len(embedded_tokenizer)
    lm = load_model(ModelSpec(name=str(tmp_path / "base")))
    ids = torch.tensor([[1, 2, 3]])
    assert torch.isfinite(lm(input_ids=ids).logits).all()


@pytest.mark.parametrize(
    "shape, init",
    [("tiny-teacher", "base"), ("tiny-student", "base"), ("tiny-student", "base-restate")],
)
def test_shipped_base_weights_load_and_match_the_embedded_tokenizer(
    shape, init, embedded_tokenizer
):
    from kdlite.data.tokenizer import tokenizer_fingerprint

    record = json.loads((asset_dir(shape, init) / RECIPE_FILE).read_text())
    # A tokenizer change without `make tiny-models` would silently scramble every id.
    assert record["tokenizer"] == tokenizer_fingerprint(embedded_tokenizer)
    assert record["recipe"]["shape"] == shape
    assert record["recipe"].get("answer_form", "chain") == (
        "restate" if "restate" in init else "chain"
    )
    lm = load_model(ModelSpec(shape=shape, init=init), vocab_size=len(embedded_tokenizer))
    random = load_model(ModelSpec(shape=shape), vocab_size=len(embedded_tokenizer), seed=0)
    assert lm.config.hidden_size == random.config.hidden_size
    assert lm.config.num_hidden_layers == random.config.num_hidden_layers
    assert not torch.equal(lm.model.embed_tokens.weight, random.model.embed_tokens.weight)


def test_make_tiny_models_rebuilds_the_shipped_recipes():
    """Each `kdlite.cli.pretrain shape=...` line of the Makefile's tiny-models target is the recipe
    recorded next to the shipped weights it writes (e.g. the teacher's stepwise_share=0; the
    restate base's answer_form=restate, written to tiny-student-base-restate)."""
    from dataclasses import asdict

    from kdlite.cli.pretrain import PretrainRecipe, parse_recipe

    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    lines = re.findall(r"-m kdlite\.cli\.pretrain (shape=.*)", makefile)
    assert len(lines) == 3
    outs = []
    for line in lines:
        recipe, out = parse_recipe(line.split())
        record = json.loads((Path(out) / RECIPE_FILE).read_text())
        # a record written before a recipe field existed has that field's default (chat_share: 0)
        assert set(record["recipe"]) <= set(asdict(recipe)), line
        assert PretrainRecipe(**record["recipe"]) == recipe, line
        outs.append(Path(out).relative_to(ASSETS).as_posix())
    assert outs == ["tiny-student-base", "tiny-teacher-base", "tiny-student-base-restate"]


@pytest.mark.parametrize("init, form", [("reasoning", "chain"), ("reasoning-restate", "restate")])
def test_shipped_reasoning_teachers_were_trained_from_the_shipped_base(
    init, form, embedded_tokenizer
):
    from kdlite.cli.pretrain import REASONING_OVERRIDES, default_asset
    from kdlite.data.tokenizer import tokenizer_fingerprint
    from kdlite.models import asset_fingerprint

    record = json.loads((asset_dir("tiny-teacher", init) / RECIPE_FILE).read_text())
    # rebuilding the base without the reasoning stage (`make tiny-models` does both) is caught here
    assert record["base_weights"] == asset_fingerprint("tiny-teacher", "base")
    assert record["tokenizer"] == tokenizer_fingerprint(embedded_tokenizer)
    # what `python -m kdlite.cli.pretrain stage=reasoning answer_form=<form>` trains with
    extra = [] if form == "chain" else [f"data.synthetic_answer_form={form}"]
    assert record["train_overrides"] == REASONING_OVERRIDES + extra
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    stage = "stage=reasoning" + ("" if form == "chain" else f" answer_form={form}")
    assert re.search(rf"-m kdlite\.cli\.pretrain {stage}$", makefile, re.M), stage
    # ... and writes, without out=, to the folder `pair.teacher.init=<init>` loads
    assert asset_dir("tiny-teacher", init).name == default_asset("tiny-teacher", "reasoning", form)
    lm = load_model(ModelSpec(shape="tiny-teacher", init=init), vocab_size=len(embedded_tokenizer))
    assert lm.config.num_hidden_layers == 4


def test_shipped_base_student_solves_problems_the_random_one_cannot(embedded_tokenizer):
    """What pre-training is for: greedy answers in the pre-training format ("Solution:")."""
    from kdlite.cli.pretrain import direct_accuracy

    base = load_model(ModelSpec(shape="tiny-student", init="base"))
    assert direct_accuracy(base, embedded_tokenizer, n=20) >= 0.1
    random = load_model(ModelSpec(shape="tiny-student"), vocab_size=len(embedded_tokenizer))
    assert direct_accuracy(random, embedded_tokenizer, n=20) == 0.0


def test_missing_shipped_weights_name_the_folder_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr("kdlite.models.ASSETS", tmp_path)
    with pytest.raises(ModelLoadError, match=r"tiny-student-base.*make tiny-models"):
        load_model(ModelSpec(shape="tiny-student", init="base"))
    with pytest.raises(ModelLoadError, match="unknown init 'tuned'"):
        asset_dir("tiny-student", "tuned")


def test_shipped_weights_refuse_another_vocabulary():
    with pytest.raises(ModelLoadError, match="vocabulary rows.*embedded tokenizer"):
        load_model(ModelSpec(shape="tiny-student", init="base"), vocab_size=1000)


def test_init_is_validated_at_config_time():
    from kdlite.config import compose_train

    cfg = compose_train(["pair.student.init=tuned"])
    with pytest.raises(ConfigError, match=r"pair.student.init=tuned: must be one of"):
        validate(cfg)
    cfg = compose_train(["pair=8b_4b", "pair.student.name=null", "pair.student.shape=4b"])
    cfg.pair.student.init = "base"
    with pytest.raises(ConfigError, match="tiny shapes only"):
        validate(cfg)


def test_assets_hold_only_the_expected_files():
    """Package data stays small: config, bf16 safetensors and the recipe per shipped model, and the
    embedded tokenizer's files with their marker."""
    tokenizer = {p.name for p in (ASSETS / "tokenizer").iterdir()}
    assert tokenizer == {
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "kdlite_tokenizer.json",
    }
    for folder in sorted(p for p in ASSETS.iterdir() if p.is_dir() and p.name != "tokenizer"):
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "model.safetensors", RECIPE_FILE} <= names, folder
        assert (folder / "model.safetensors").stat().st_size < 4_000_000, folder
        # every folder is one a `pair.<role>.init` can name (no stray copies or leftovers)
        assert folder.name in {f"{s}-{i}" for s in ("tiny-teacher", "tiny-student") for i in INITS}


def test_export_of_the_pairs_teacher_is_the_shipped_model_with_a_tokenizer(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdlite.cli.export import main
    from kdlite.export import export_initial_model

    out = export_initial_model([], tmp_path / "teacher", role="teacher")
    info = json.loads((out / "kdlite_export.json").read_text())
    assert info["kind"] == "initial teacher" and info["init"] == "reasoning"
    assert AutoTokenizer.from_pretrained(out).chat_template
    got = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    want = load_model(ModelSpec(shape="tiny-teacher", init="reasoning"), dtype=torch.bfloat16)
    for (name, a), (_, b) in zip(got.state_dict().items(), want.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="role='coach'"):
        export_initial_model([], tmp_path / "x", role="coach")
    with pytest.raises(SystemExit) as done:
        main(["role=teacher"])
    assert done.value.code == 2


def test_pretrain_arguments_are_parsed_and_checked(capsys):
    from kdlite.cli.pretrain import parse_recipe

    recipe, out = parse_recipe(["shape=tiny-student", "steps=8", "stepwise_share=0", "out=/x"])
    assert (recipe.steps, recipe.stepwise_share, recipe.max_steps, out) == (8, 0.0, None, "/x")
    assert parse_recipe(["shape=tiny-student", "steps=8", "max_steps=2"])[0].max_steps == 2
    checked = parse_recipe(["shape=tiny-student", "steps=8", "chat_share=0.3", "check_share=0.5"])
    assert checked[0].check_share == 0.5
    restated = parse_recipe(
        ["shape=tiny-student", "steps=8", "chat_share=0.3", "answer_form=restate"]
    )
    assert (restated[0].answer_form, checked[0].answer_form) == ("restate", "chain")
    assert parse_recipe(["shape=tiny-student", "steps=8"])[1].endswith("tiny-student-base")
    for argv, said in (
        (["shape=tiny-student", "steps=8", "shares=1"], "unknown key 'shares'"),
        (["shape=tiny-student", "steps=eight"], "steps=eight"),
        (["shape=tiny-student"], "needs shape=... and steps=..."),
        (
            ["shape=tiny-student", "steps=8", "max_steps=5"],
            "max_steps must be an integer in [2, 4]",
        ),
        (["shape=tiny-student", "steps=8", "chat_share=2"], "chat_share must be in [0, 1]"),
        (["shape=tiny-student", "steps=8", "check_share=0.5"], "chat_share is 0"),
        (["shape=tiny-student", "steps=8", "answer_form=restate"], "chat_share is 0"),
        (["shape=tiny-student", "steps=8", "answer_form=summary"], "answer_form"),
    ):
        with pytest.raises(SystemExit):
            parse_recipe(argv)
        assert said in capsys.readouterr().err, argv


def test_reasoning_stage_passes_the_answer_form_to_the_traces(monkeypatch, tmp_path, capsys):
    """stage=reasoning answer_form=restate trains the teacher on restate traces (the data key in its
    overrides); the default keeps the shipped teacher's overrides; base keys are refused."""
    import kdlite.training
    from kdlite.cli import pretrain as cli

    seen = []

    def fake_train(cfg):
        seen.append(cfg)
        raise RuntimeError("stop after compose")

    monkeypatch.setattr(kdlite.training, "train", fake_train)
    for argv, form in ((["answer_form=restate"], "restate"), ([], "chain")):
        with pytest.raises(RuntimeError, match="stop after compose"):
            cli.main(["stage=reasoning", f"out={tmp_path / 'teacher'}", *argv])
        assert seen[-1].data.synthetic_answer_form == form
        assert seen[-1].lam == 0 and seen[-1].pair.student.shape == "tiny-teacher"
    with pytest.raises(SystemExit):
        cli.main(["stage=reasoning", "check_share=0.5"])
    assert "a key of stage=base, not of reasoning" in capsys.readouterr().err
