"""Section statistics on hand-made rendered items, the table, and the data/stats configs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kdlite.data.example import COT, A, P
from kdlite.data.stats import SectionStats, format_table, section_stats

CONF = Path(__file__).resolve().parents[2] / "conf"
DATA_NAMES = ["bespoke", "jsonl", "nemotron", "openthoughts", "skyt1", "synthetic", "synthetic1"]
DATA_KEYS = [
    "name",
    "path",
    "revision",
    "hf_config",
    "split",
    "task_types",
    "train_size",
    "val_size",
    "max_tokens",
    "limit",
    "synthetic_size",
    "synthetic_answer_form",
    "seed",
]


@dataclass(frozen=True)
class Item:
    section_ids: list[int]


def test_section_means_and_shares():
    items = [
        Item([P, P, COT, COT, COT, A]),
        Item([P, COT, COT, COT, COT, COT, COT, A, A, A]),
    ]
    stats = section_stats(items, name="hand")
    assert stats == SectionStats("hand", n=2, full=8.0, p=1.5, cot=4.5, a=2.0)
    assert (stats.share("p"), stats.share("cot"), stats.share("a")) == (0.1875, 0.5625, 0.25)


def test_empty_source():
    assert section_stats([], name="none") == SectionStats("none", 0, 0.0, 0.0, 0.0, 0.0)
    assert SectionStats("none", 0, 0.0, 0.0, 0.0, 0.0).share("p") == 0.0


def test_table_layout_matches_paper_table_2():
    rows = [
        SectionStats("OpenThoughts", 100, 2497.5, 116.6, 1910.4, 470.5),
        section_stats([Item([P, COT, COT, A])], name="tiny"),
    ]
    assert format_table(rows) == (
        "| | n | Full | P | CoT | A |\n"
        "|---|---|---|---|---|---|\n"
        "| OpenThoughts | 100 | 2497.5 | 116.6 (4.7%) | 1910.4 (76.5%) | 470.5 (18.8%) |\n"
        "| tiny | 1 | 4.0 | 1.0 (25.0%) | 2.0 (50.0%) | 1.0 (25.0%) |"
    )


@pytest.mark.parametrize("name", DATA_NAMES)
def test_data_configs_share_one_key_set(name):
    path = CONF / "data" / f"{name}.yaml"
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith(("# python train.py data=", "# python train.py  (the default"))
    cfg = OmegaConf.load(path)
    assert list(cfg.keys()) == DATA_KEYS
    assert cfg.name == name and cfg.max_tokens == 4096 and cfg.seed == 0
    if name == "synthetic":
        assert (cfg.train_size, cfg.val_size, cfg.synthetic_size) == (1200, 200, 1400)
    else:
        assert cfg.synthetic_size is None


def test_data_configs_use_the_study_sizes():
    from kdlite.data.sources import DATASETS

    for name in DATA_NAMES:
        cfg = OmegaConf.load(CONF / "data" / f"{name}.yaml")
        info = DATASETS[name]
        assert (cfg.hf_config, cfg.split) == (info.hf_config, info.split)
        if info.study_train_size is not None:
            assert (cfg.train_size, cfg.val_size) == (info.study_train_size, info.study_val_size)
    assert OmegaConf.load(CONF / "data" / "synthetic1.yaml").task_types == ["verifiable_math"]


def test_table2_tool_composes_a_data_config():
    from kdlite.cli.traces import parse_args

    data, opts = parse_args(["data=nemotron", "limit=10", "tokenizer=embedded"])
    assert (data.name, data.hf_config, data.split) == ("nemotron", "SFT", "math")
    assert (opts.tokenizer, opts.limit) == ("embedded", 10)
    assert parse_args([])[0].name == "synthetic"


@pytest.mark.slow  # builds the embedded tokenizer in a fresh cache: ~10-20 s on 2 shared cores
def test_stats_end_to_end_on_a_fixture(tmp_path, monkeypatch, data_dir):
    pytest.importorskip("kdlite.data.render")
    pytest.importorskip("kdlite.data.tokenizer")
    from kdlite.analysis import traces
    from kdlite.cli.traces import main

    monkeypatch.setenv("KDLITE_CACHE", str(tmp_path / "cache"))
    seen = []
    monkeypatch.setattr(traces, "token_table", lambda name, stats: seen.append(stats) or "")
    argv = ["data=bespoke", f"data.path={data_dir / 'bespoke.jsonl'}", "tokenizer=embedded"]
    main([*argv, "limit=3", f"out={tmp_path / 'out'}"])
    (stats,) = seen
    assert stats.n == 2  # rows 0 and 2 of the first three; row 1 is rejected
    assert stats.full == pytest.approx(stats.p + stats.cot + stats.a)
    assert min(stats.p, stats.cot, stats.a) > 0
    assert format_table([stats]).splitlines()[2].startswith("| bespoke | 2 | ")
