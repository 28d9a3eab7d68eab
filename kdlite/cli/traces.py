"""`python -m kdlite.cli.traces data=<name> [data.<key>=...] [key=value ...]`

Token statistics per section (docs/paper.md Table 2: kdlite's one Table-2 tool), the first
derivation of the final answer and the self-reflection cues before it (Appendix A.2, Figure 5) for
the first `limit` examples of a source; writes `<out>/traces.md` and `<out>/fig5_answer_position.png`.
`data=<name>` composes `conf/data/<name>.yaml` with Hydra (so `data.path=/local/file.jsonl` etc. work
as in train.py). Counts come from the trainer's rendering (`kdlite.data.stats`); Table 2 describes
the data before the < 4k-token cut, so no length filter applies. The first `limit` rows are not a
random sample: a source sorted by length or topic biases the means; `limit=null` reads them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdlite.cli._args import arg, argv_or_sys, compose_errors, parse

PROG = "python -m kdlite.cli.traces"


@dataclass
class Keys:
    limit: int | None = arg(100, "examples to analyse (the study used 100 per dataset; null: all)")
    tokenizer: str = arg("auto", "auto (embedded for data=synthetic, else Qwen/Qwen3-8B) | a name "
                         "or folder | none: positions in characters, no Table 2")  # fmt: skip
    out: str | None = arg(None, "output folder (null: traces/<data name>)")
    judge: bool = arg(False, "also ask an LLM judge (OpenAI-compatible; key from OPENAI_API_KEY)")
    judge_endpoint: str = arg("http://localhost:8000/v1", "the judge's endpoint")
    judge_model: str = arg("Qwen/Qwen3-32B", "the judge model")
    judge_limit: int = arg(100, "examples judged")


def parse_args(argv: list[str]):
    """(the data config composed from `data=`/`data.<key>=` words, this program's keys)."""
    from hydra import compose, initialize_config_dir

    from kdlite.config import CONF_DIR

    opts, data_args = parse(
        Keys, argv, prog=PROG, doc=__doc__, rest=lambda key: key == "data" or key.startswith("data."),
        rest_help="data=<name> (default synthetic) and data.<key>=value compose conf/data/<name>.yaml.",
    )  # fmt: skip
    if not any(a.startswith("data=") for a in data_args):
        data_args.insert(0, "data=synthetic")
    overrides = [("+" + a if a.startswith("data=") else a) for a in data_args]
    with compose_errors(PROG), initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        data = compose(overrides=overrides).data
    return data, opts


def main(argv: list[str] | None = None) -> Path:
    from kdlite.analysis.traces import write_traces_report
    from kdlite.config import data_spec
    from kdlite.data.sources import load_examples

    data, opts = parse_args(argv_or_sys(argv))
    data.limit = opts.limit
    examples = load_examples(data_spec(data)).examples[: opts.limit]
    name = data.name
    out = Path(opts.out or f"traces/{name}")

    tok_name = opts.tokenizer
    if tok_name == "auto":
        tok_name = "embedded" if name == "synthetic" else "Qwen/Qwen3-8B"
    count: Callable[[str], int] = len
    unit, token_stats = "characters", None
    if tok_name != "none":
        from kdlite.data.render import render
        from kdlite.data.stats import section_stats
        from kdlite.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(tok_name)

        def count_tokens(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        count = count_tokens

        unit = f"tokens of {tok_name}"
        token_stats = section_stats((render(e, tokenizer) for e in examples), name=name)

    verdicts = None
    if opts.judge:
        from kdlite.analysis.judge import judge

        key = os.environ.get("OPENAI_API_KEY")
        verdicts = [
            judge(e, opts.judge_endpoint, opts.judge_model, api_key=key)
            for e in examples[: opts.judge_limit]
        ]
    path = write_traces_report(
        name, examples, out, count=count, unit=unit, token_stats=token_stats, verdicts=verdicts
    )
    print(path.read_text())
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
