"""`evaluate(cfg)`: every model x every benchmark -> generations.jsonl, results.json, a printed table.

Order of work: check the config, load every benchmark, resolve every model and its tokenizer (all the
ways a call can fail cheaply), then per model: one backend, all benchmarks' missing samples submitted
together (vLLM keeps every GPU busy across benchmark boundaries), generations persisted as they
complete, then grading and metrics from the JSONL alone. Generation is ~all of the cost (AIME on a
1.7B model: 3,840 samples of up to 32k tokens, hours per GPU); grading the same samples takes minutes
on 2 cores, so it is simply redone from the stored text on every call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, ListConfig
from tqdm.auto import tqdm

from kdlite.analysis.answer import (
    boxed_contents,
    derived_anywhere,
    derived_before_reflection,
    normalize,
)
from kdlite.chat import END_THINK
from kdlite.eval.benchmarks import EvalError, Problem, load_problems, user_prompt
from kdlite.eval.config import BACKENDS, PROMPTS, SOURCES
from kdlite.eval.generate import (
    Job,
    Sampling,
    TransformersBackend,
    VLLMBackend,
    pick_backend,
    versions,
)
from kdlite.eval.grade import grade_all
from kdlite.eval.metrics import summarize
from kdlite.eval.models import (
    ModelRef,
    chat_prompt_ids,
    load_eval_tokenizer,
    resolve_model,
    stop_token_ids,
)
from kdlite.eval.store import GenerationStore

log = logging.getLogger(__name__)


def as_list(value) -> list[str]:
    if isinstance(value, (list, tuple, ListConfig)):
        items = [str(v) for v in value]
    else:
        items = str(value).split(",")
    items = [v.strip() for v in items if str(v).strip()]
    if not items:
        raise EvalError(f"empty list: {value!r}")
    return items


def sampling_for(cfg: DictConfig, bench) -> Sampling:
    def pick(key):
        top = cfg.get(key)
        return bench[key] if top is None else top

    s = Sampling(
        n_samples=int(pick("n_samples")),
        temperature=float(pick("temperature")),
        top_p=float(pick("top_p")),
        top_k=int(pick("top_k")),
        max_new_tokens=int(pick("max_new_tokens")),
    )
    if (
        s.n_samples < 1
        or s.max_new_tokens < 1
        or not 0 <= s.temperature < math.inf  # False for nan too
        or not 0 < s.top_p <= 1
        or s.top_k < 0
    ):
        raise EvalError(
            f"bench {bench.name}: invalid sampling {s} (need n_samples >= 1, max_new_tokens >= 1, "
            "a finite temperature >= 0, top_p in (0, 1], top_k >= 0)"
        )
    return s


def check_config(cfg: DictConfig) -> list[str]:
    """Validate values Hydra's types cannot; return the benchmark names to run."""
    if cfg.backend not in BACKENDS:
        raise EvalError(f"backend={cfg.backend!r}: expected one of {BACKENDS}")
    for key in ("batch_size", "grade_workers"):
        if cfg[key] < 1:
            raise EvalError(f"{key} must be >= 1, got {cfg[key]}")
    if cfg.grade_timeout_s <= 0:
        raise EvalError("grade_timeout_s must be > 0")
    names = list(cfg.benches)
    if not names:
        raise EvalError("no benchmark selected: bench=<name> (conf/bench/*.yaml)")
    for name in names:
        b = cfg.benches[name]
        if b.source not in SOURCES or b.prompt not in PROMPTS:
            raise EvalError(
                f"bench {name}: source must be one of {SOURCES}, prompt one of {PROMPTS}"
            )
    return names


def evaluate(cfg: DictConfig) -> list[dict]:
    """Evaluate cfg.model (one or several) on cfg.bench (one or several); returns the results dicts."""
    names = check_config(cfg)
    benches = {n: cfg.benches[n] for n in names}
    problems = {n: load_problems(b) for n, b in benches.items()}
    sampling = {n: sampling_for(cfg, b) for n, b in benches.items()}
    refs = [resolve_model(spec, cfg.out_dir) for spec in model_specs(cfg)]
    if len({r.results_root for r in refs}) != len(refs):
        raise EvalError(f"two models write to the same results directory: {[r.spec for r in refs]}")
    tokenizers = [load_eval_tokenizer(r) for r in refs]
    backend = pick_backend(cfg.backend)
    if backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise EvalError(
                "backend=vllm needs the optional extra: pip install 'kdlite[vllm]'"
            ) from e
    results = []
    for ref, tok in zip(refs, tokenizers, strict=True):
        results += evaluate_model(cfg, ref, tok, backend, benches, problems, sampling)
    print(format_table(results))
    log_to_wandb(cfg, refs, results)
    return results


DEFAULT_MODEL = "runs/default"


def sweep_models(sweep: str) -> list[str]:
    """The finished runs under a sweep directory; the others are logged (state, count) and skipped."""
    from kdlite.analysis.runs import discover
    from kdlite.run_state import read_status

    root = Path(sweep)
    if not root.is_dir():
        raise EvalError(f"sweep={sweep}: no such directory")
    found: list[str] = []
    skipped: Counter[str] = Counter()
    for path in discover(root):
        if not (path / "config.yaml").is_file():
            continue  # a baseline's results, not a training run
        if (path / "export" / "config.json").is_file():
            found.append(str(path))
        else:
            skipped[read_status(path).state] += 1
    if skipped:
        log.warning(
            "sweep %s: skipping %d runs without an export (%s); `python -m kdlite.cli.sweep action=status sweep=%s`",
            sweep, sum(skipped.values()), dict(skipped), sweep,
        )  # fmt: skip
    if not found:
        raise EvalError(f"sweep={sweep}: no finished run (with export/) under it")
    return found


def model_specs(cfg: DictConfig) -> list[str]:
    """`model` (one or a list) then every finished run of `sweep`; runs/default when neither."""
    specs = [] if cfg.model is None or cfg.model == [] else as_list(cfg.model)
    for sweep in [] if cfg.sweep is None else as_list(cfg.sweep):
        specs += sweep_models(sweep)

    def key(spec: str) -> str:  # `runs/x/` (shell completion) and `runs/x` are one model
        return str(Path(spec).resolve()) if Path(spec).exists() else spec

    unique: dict[str, str] = {}
    for spec in specs:
        unique.setdefault(key(spec), spec)  # the first spelling of each model, in order
    return list(unique.values()) or [DEFAULT_MODEL]


def log_to_wandb(cfg: DictConfig, refs: list[ModelRef], results: list[dict]) -> None:
    """Scores to W&B (kdlite/wandb_run.py): a run's own W&B run, or an eval run (logger.wandb)."""
    if cfg.logger.wandb is False:
        return
    by_root: dict[Path, tuple[Path | None, list[dict]]] = {}
    for ref in refs:
        run_dir = ref.results_root.parent if ref.kind == "run" else None
        mine = [r for r in results if r["model"] == ref.spec]
        by_root[ref.results_root] = (run_dir, mine)
    if cfg.logger.wandb is None and not any(
        d is not None and (d / "wandb.json").is_file() for d, _ in by_root.values()
    ):
        return  # nothing trained with W&B: do not import wandb at all
    try:
        import wandb  # noqa: F401
    except ImportError:
        log.warning("W&B logging skipped: wandb is not installed (pip install wandb)")
        return
    from kdlite.wandb_run import log_eval

    ids = log_eval(cfg.logger, by_root)
    if ids:
        mode = cfg.logger.mode or "each run's own mode"
        print(f"kdlite: scores logged to W&B run(s) {', '.join(ids)} ({mode})")


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def evaluate_model(
    cfg, ref: ModelRef, tok, backend_name: str, benches, problems, sampling
) -> list[dict]:
    stop_ids = stop_token_ids(tok)
    stores: dict[str, GenerationStore] = {}
    protocols: dict[str, dict] = {}
    jobs: list[Job] = []
    for name, bench in benches.items():
        s = sampling[name]
        prompts = {p.id: chat_prompt_ids(tok, user_prompt(p, bench.prompt)) for p in problems[name]}
        protocols[name] = {
            "model": ref.path,
            "bench": name,
            "source": bench.hub_id
            or bench.path
            or f"synthetic(size={bench.size}, seed={bench.seed})",
            "revision": bench.revision,
            "prompt": bench.prompt,
            "chat_template": "thinking on, add_generation_prompt",
            "prompts_sha": _sha([[p.id, prompts[p.id], p.answer] for p in problems[name]]),
            "stop_token_ids": stop_ids,
            "seed": int(cfg.seed),
            **asdict(s),
        }
        stores[name] = store = GenerationStore(ref.results_dir(name), protocols[name])
        for p in problems[name]:
            missing = tuple(i for i in range(s.n_samples) if (p.id, i) not in store)
            if missing:
                jobs.append(Job(name, p.id, tuple(prompts[p.id]), missing, s))
    n_done, n_tokens, seconds = 0, 0, 0.0
    if jobs:
        n_todo = sum(len(j.samples) for j in jobs)
        log.info(
            "%s: %d samples to generate (%d prompts) with %s",
            ref.spec,
            n_todo,
            len(jobs),
            backend_name,
        )
        backend: VLLMBackend | TransformersBackend
        if backend_name == "vllm":
            backend = VLLMBackend(ref.path, tok, stop_ids, seed=int(cfg.seed))
        else:
            backend = TransformersBackend(
                ref.path,
                tok,
                stop_ids,
                batch_size=int(cfg.batch_size),
                seed=int(cfg.seed),
                dtype=cfg.dtype,
            )
        t0 = time.perf_counter()
        bar = tqdm(total=n_todo, desc=f"generating ({ref.spec})", unit="sample", disable=None)
        for bench, recs in backend.generate(jobs):
            stores[bench].append(recs)
            n_done += len(recs)
            n_tokens += sum(r["n_tokens"] for r in recs)
            rate = n_tokens / max(time.perf_counter() - t0, 1e-9)
            bar.update(len(recs))
            bar.set_postfix_str(f"{rate:.0f} new tok/s")
            log.info("%s %s: %d/%d samples, %.0f new tok/s", ref.spec, bench, n_done, n_todo, rate)
        bar.close()
        seconds = time.perf_counter() - t0
        del backend
    gen_stats = {
        "samples": n_done,
        "new_tokens": n_tokens,
        "seconds": seconds,
        "tokens_per_s": n_tokens / seconds if seconds else None,
    }

    # Grade every benchmark of this model in one pool (workers start once).
    layout: list[tuple[str, int, int]] = []  # (bench, problem row, sample)
    pairs: list[tuple[str, str]] = []
    records: dict[str, dict[tuple[str, int], dict]] = {}
    for name in benches:
        records[name] = {(r["id"], int(r["sample"])): r for r in stores[name].records()}
        for row, p in enumerate(problems[name]):
            for i in range(sampling[name].n_samples):
                rec = records[name].get((p.id, i))
                if rec is None:
                    raise RuntimeError(f"{name}: sample {i} of {p.id} missing after generation")
                layout.append((name, row, i))
                pairs.append((p.answer, rec["text"]))
    t0 = time.perf_counter()
    graded = grade_all(pairs, workers=int(cfg.grade_workers), timeout_s=float(cfg.grade_timeout_s))
    log.info("%s: graded %d samples in %.1fs", ref.spec, len(pairs), time.perf_counter() - t0)

    out = []
    for name in benches:
        P, n = len(problems[name]), sampling[name].n_samples
        full = [[0] * n for _ in range(P)]
        strict = [[0] * n for _ in range(P)]
        statuses: Counter[str] = Counter()
        errors: list[str] = []
        for (b, row, i), (status, f, st) in zip(layout, graded, strict=True):
            if b != name:
                continue
            full[row][i], strict[row][i] = int(f), int(st)
            kind = status.split(":")[0]
            statuses[kind] += 1
            if kind != "ok" and len(errors) < 5:
                errors.append(f"{problems[name][row].id}#{i}: {status}")
        res = build_results(ref, name, problems[name], full, strict, records[name], protocols[name])
        res["grading"] = {
            "ok": statuses["ok"],
            "error": statuses["error"],
            "timeout": statuses["timeout"],
            "first_failures": errors,
        }
        res["generation"]["this_call"] = gen_stats
        if benches[name].source == "synthetic":
            res["think_conclusion"] = think_conclusion_stats(problems[name], records[name])
        path = ref.results_dir(name) / "results.json"
        path.write_text(json.dumps(res, indent=1) + "\n")
        log.info("wrote %s", path)
        out.append(res)
    return out


def think_conclusion_stats(problems: list[Problem], records: dict[tuple[str, int], dict]) -> dict:
    """Synthetic benchmarks only (their think blocks state conclusions in the corpus's sentences,
    `kdlite.data.synthetic.think_conclusion`): the share of outputs whose think block *ends* on the
    gold, and of the outputs that close their think block, the share whose last boxed answer after
    `</think>` is that block's conclusion. Diagnostics, not scores (docs/mini-replication.md §8)."""
    from kdlite.data.synthetic import think_conclusion

    gold = {p.id: normalize(p.answer) for p in problems}
    total = ends_on_gold = ended = boxes_it = 0
    for (pid, _), rec in records.items():
        if pid not in gold:
            continue
        total += 1
        concl = think_conclusion(rec["text"])
        ends_on_gold += concl is not None and concl == gold[pid]
        _, closed, after = rec["text"].partition(END_THINK)
        if closed:
            ended += 1
            boxed = boxed_contents(after)
            boxes_it += concl is not None and bool(boxed) and normalize(boxed[-1]) == concl
    return {
        "ends_on_gold": ends_on_gold / total if total else None,
        "closed_think": ended,
        "boxes_own_conclusion": boxes_it / ended if ended else None,
    }


def build_results(
    ref: ModelRef,
    bench: str,
    problems: list[Problem],
    full,
    strict,
    records: dict[tuple[str, int], dict],
    protocol: dict,
) -> dict:
    """results.json of one (model, bench); `records` are the generations by (problem id, sample)."""
    s_full, s_strict = summarize(full), summarize(strict)
    recs = list(records.values())
    finish = Counter(r["finish_reason"] for r in recs)
    n = len(full[0])

    def per_sample(diagnostic: Callable[[str, str, str], bool]) -> list[list[int]]:
        return [
            [int(diagnostic(records[(p.id, i)]["text"], p.answer, p.problem)) for i in range(n)]
            for p in problems
        ]

    derived, anywhere = per_sample(derived_before_reflection), per_sample(derived_anywhere)
    return {
        "model": ref.spec,
        "model_path": ref.path,
        "model_kind": ref.kind,
        "bench": bench,
        "n_problems": len(problems),
        "n_samples": n,
        **s_full,
        "avg_at_n_strict": s_strict["avg_at_n"],
        "stderr_strict": s_strict["stderr"],
        "ci95_strict": s_strict["ci95"],
        "pass_at_k_strict": s_strict["pass_at_k"],
        "per_problem": [
            {
                "id": p.id,
                "n_correct": sum(full[k]),
                "n_correct_strict": sum(strict[k]),
                "n": len(full[k]),
            }
            for k, p in enumerate(problems)
        ],
        "correct": full,
        "correct_strict": strict,
        # diagnostic, not a score: the gold derived before the first self-reflection cue
        # (kdlite.analysis.answer.derived_before_reflection)
        "derived_before_reflection": summarize(derived)["avg_at_n"],
        "correct_derived_before_reflection": derived,
        # and anywhere in the output, concluded or not (kdlite.analysis.answer.derived_anywhere)
        "derived_anywhere": summarize(anywhere)["avg_at_n"],
        "correct_derived_anywhere": anywhere,
        "generation": {
            "finish_reasons": dict(finish),
            "truncated_share": finish["length"] / max(1, len(recs)),
            "mean_tokens": sum(r["n_tokens"] for r in recs) / max(1, len(recs)),
            "backends": sorted({r["backend"] for r in recs}),
            "seeds": sorted({r["seed"] for r in recs}),
        },
        "protocol": protocol,
        "versions": versions("kdlite", "math-verify", "torch", "transformers", "vllm"),
    }


def format_table(results: list[dict]) -> str:
    """One line per (model, bench); `derived` is the diagnostic derived_before_reflection."""
    head = f"{'model':<32} {'bench':<10} {'P':>4} {'n':>4} {'avg@n':>7} {'±se':>6} {'strict':>7} {'pass@max':>9} {'derived':>8} {'trunc':>6} {'fail':>5}"
    lines = [head, "-" * len(head)]
    for r in results:
        kmax = max(r["pass_at_k"], key=int)
        fails = r["grading"]["error"] + r["grading"]["timeout"]
        lines.append(
            f"{r['model'][-32:]:<32} {r['bench']:<10} {r['n_problems']:>4} {r['n_samples']:>4} "
            f"{r['avg_at_n']:>7.3f} {r['stderr']:>6.3f} {r['avg_at_n_strict']:>7.3f} "
            f"{r['pass_at_k'][kmax]:>9.3f} {r['derived_before_reflection']:>8.3f} "
            f"{r['generation']['truncated_share']:>6.1%} {fails:>5}"
        )
    return "\n".join(lines)
