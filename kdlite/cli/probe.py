"""`python -m kdlite.cli.probe model=<run dir | model folder> [key=value ...]`

The closing probe (kdlite/analysis/probe.py): the mean log-prob of ` The answer is \\boxed{N}.` +
an end token after a held-out synthetic trace's first pass and after its re-check, in the chat
layout, and of the chat closing (`</think>`, the answer) there and after the whole think block;
the probability of each closing's lead alone (the decision to close); greedy continuations. Writes `probe.json` into the directory the report reads a
model's results from, the same one `evaluate.py` uses (kdlite/eval/models.py):
`<run>/probe.json` for a run directory (its `export/` is probed), `<out_dir>/<slug>/probe.json`
for a model folder, so `python -m kdlite.cli.report` shows it as a column beside the evaluation.
Held-out traces are the synthetic corpus's examples after the first `data.synthetic_size` (the
pool `data=synthetic` draws its training and validation examples from; conf/data/synthetic.yaml),
same seed: never trained on, never validated on. Their answer sections have the form the model
was distilled on (`answer_form=auto`: a run's `data.synthetic_answer_form`, from its
`config.yaml`; "chain" for a model folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kdlite.chat import ENDOFTEXT
from kdlite.cli._args import arg, argv_or_sys, parse_keys
from kdlite.data.synthetic import ANSWER_FORMS

PROG = "python -m kdlite.cli.probe"


@dataclass
class Keys:
    model: list[str] = arg(["runs/default"], "a run dir or an HF folder; several: model=[a,b] "
                           "(quote paths with commas)")  # fmt: skip
    n: int = arg(40, "held-out traces probed")
    end: str = arg(ENDOFTEXT, "the end token after the closing (the tiny base's document end)")
    greedy: int = arg(5, "traces whose greedy continuation is kept as a sample")
    max_new_tokens: int = arg(48, "length of those continuations")
    out_dir: str = arg("runs/eval", "where results of model folders go (as evaluate.py's out_dir)")
    tokenizer: str = arg("auto", "auto: the folder's own tokenizer, else the embedded one | "
                         "embedded | a name or folder")  # fmt: skip
    answer_form: str = arg("auto", "the traces' answer sections: auto (a run's "
                           "data.synthetic_answer_form; chain for a model folder) | chain | "
                           "restate", choices=("auto", *ANSWER_FORMS))  # fmt: skip


def held_out_examples(n: int, answer_form: str = "chain"):
    """`n` synthetic traces after the pool `data=synthetic` selects from (prefix-stable corpus)."""
    from omegaconf import OmegaConf

    from kdlite.config import CONF_DIR
    from kdlite.data.synthetic import generate_examples

    data = OmegaConf.load(CONF_DIR / "data" / "synthetic.yaml")
    pool, seed = int(data.synthetic_size), int(data.seed)
    return generate_examples(pool + n, seed, answer_form)[pool:]


def answer_form_of(ref, wanted: str) -> str:
    """`wanted`, or for "auto" the answer form a run was trained on (its config.yaml's
    `data.synthetic_answer_form`; "chain" for a model folder or a run written before the key)."""
    from omegaconf import OmegaConf

    if wanted != "auto":
        return wanted
    config = Path(ref.path).parent / "config.yaml"
    if ref.kind != "run" or not config.is_file():
        return "chain"
    form = OmegaConf.select(OmegaConf.load(config), "data.synthetic_answer_form", default="chain")
    return str(form)


def load_tokenizer_for(path: Path, name: str):
    from kdlite.data.tokenizer import embedded_tokenizer, load_tokenizer

    if name == "auto":
        has_own = any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
        return load_tokenizer(str(path)) if has_own else embedded_tokenizer()
    return embedded_tokenizer() if name == "embedded" else load_tokenizer(name)


def probe_model(spec: str, opts: Keys) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    from kdlite.analysis.probe import closing_probe
    from kdlite.eval.models import resolve_model

    ref = resolve_model(spec, opts.out_dir)
    path = Path(ref.path)
    tokenizer = load_tokenizer_for(path, str(opts.tokenizer))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    # 2× n candidates: ~10% of traces have a first-pass slip and are skipped
    answer_form = answer_form_of(ref, str(opts.answer_form))
    examples = held_out_examples(2 * int(opts.n), answer_form)
    result = closing_probe(
        model,
        tokenizer,
        examples,
        n=int(opts.n),
        end=str(opts.end),
        n_greedy=int(opts.greedy),
        max_new_tokens=int(opts.max_new_tokens),
    )
    result["model"] = spec
    result["answer_form"] = answer_form
    out = ref.results_root.parent / "probe.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> list[Path]:
    opts = parse_keys(Keys, argv_or_sys(argv), prog=PROG, doc=__doc__)
    written = []
    for spec in opts.model:
        out = probe_model(spec, opts)
        points = json.loads(out.read_text())["points"]
        summary = "; ".join(
            f"{k}: {v['logprob']:.2f} ({v['logprob_per_token']:.3f}/token, greedy closes "
            f"{100 * v['greedy_closes']:.0f}%, lead {100 * v['p_lead']:.0f}%)"
            for k, v in points.items()
        )
        print(f"{spec}: {summary}\nwrote {out}")
        written.append(out)
    return written


if __name__ == "__main__":
    main()
