"""`python -m kdlite.traces data=<name> [data.<key>=...] [key=value ...]`

Token statistics per section (Table 2), the first derivation of the final answer and the
self-reflection cues before it (Appendix A.2, Figure 5) for the first `limit` examples of a source;
writes `<out>/traces.md` and `<out>/fig5_answer_position.png`. `data=<name>` composes
`conf/data/<name>.yaml` with Hydra (so `data.path=/local/file.jsonl` etc. work as in train.py).
Other keys:
  limit=100            examples to analyse (the study used 100 per dataset)
  tokenizer=auto       auto (`embedded` for data=synthetic, else Qwen/Qwen3-8B) | a name or folder;
                       `none` measures positions in characters and skips Table 2
  out=traces/<name>    output folder
  judge=false          also ask an LLM judge (OpenAI-compatible endpoint; key from OPENAI_API_KEY)
  judge_endpoint=http://localhost:8000/v1   judge_model=Qwen/Qwen3-32B   judge_limit=100
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
OPTIONS = {
    "limit": 100,
    "tokenizer": "auto",
    "out": None,
    "judge": False,
    "judge_endpoint": "http://localhost:8000/v1",
    "judge_model": "Qwen/Qwen3-32B",
    "judge_limit": 100,
}


def check_args(argv: list[str], known: Collection[str], doc: str | None, also: str = "") -> None:
    """Print `doc` and exit on -h/--help; exit naming them on arguments that are not `key=value`
    with a known key (`also` lists what else the caller accepted before)."""
    if any(a in ("-h", "--help") for a in argv):
        print(doc)
        sys.exit(0)
    bad = [a for a in argv if "=" not in a or a.split("=", 1)[0] not in known]
    if bad:
        sys.exit(f"unknown argument(s) {bad}; known: {also}{sorted(known)}")


def parse(argv: list[str]):
    """Split argv into Hydra overrides for the data group and this tool's own options."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    data_args = [a for a in argv if a.startswith(("data=", "data."))]
    own = [a for a in argv if a not in data_args]
    check_args(own, OPTIONS, __doc__, also="data=..., data.<key>=..., ")
    if not any(a.startswith("data=") for a in data_args):
        data_args.insert(0, "data=synthetic")
    overrides = [("+" + a if a.startswith("data=") else a) for a in data_args]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        data = compose(overrides=overrides).data
    opts = OmegaConf.to_container(
        OmegaConf.merge(OmegaConf.create(OPTIONS), OmegaConf.from_dotlist(own))
    )
    return data, opts


def main(argv: list[str] | None = None) -> Path:
    from kdlite.analysis.traces import write_traces_report
    from kdlite.config import data_spec
    from kdlite.data.sources import load_examples

    data, opts = parse(sys.argv[1:] if argv is None else argv)
    data.limit = opts["limit"]
    examples = load_examples(data_spec(data)).examples[: opts["limit"]]
    name = data.name
    out = Path(opts["out"] or f"traces/{name}")

    tok_name = opts["tokenizer"]
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
    if opts["judge"]:
        from kdlite.analysis.judge import judge

        key = os.environ.get("OPENAI_API_KEY")
        verdicts = [
            judge(e, opts["judge_endpoint"], opts["judge_model"], api_key=key)
            for e in examples[: opts["judge_limit"]]
        ]
    path = write_traces_report(
        name, examples, out, count=count, unit=unit, token_stats=token_stats, verdicts=verdicts
    )
    print(path.read_text())
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
