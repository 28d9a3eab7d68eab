"""Pre-training of the tiny pair's *base* models: what Qwen3-*-Base is to the study, in miniature.

The study distils into pretrained base models, which already read, copy and do arithmetic, and
whose teacher is a reasoning model post-trained from such a base. A random-init student trained for
the demo's ~150 optimizer steps learns the trace layout but not to copy a number from the prompt
(measured: the from-scratch teacher and students of the first demo solved 2-8% of the embedded
benchmark, with the restatement of the problem already wrong). So the tiny shapes are first
pre-trained here, once, on `generate_base_documents` (worked solutions, one-line or one step per
sentence, and arithmetic facts; for the student also `chat_share` of the solutions in the chat
layout with a short think block, as Qwen3's bases have read instruction-style data; never a
long-CoT trace or a self-reflection), and the weights
ship in `kdlite/assets/<shape>-base/` (bf16, with `kdlite_base.json`: the recipe, the tokenizer
fingerprint, the loss, the wall time and the direct-answer accuracy). `make tiny-models` rebuilds
them.

Documents are packed back to back into `seq_len` rows separated by `<|endoftext|>`, with attention
crossing document boundaries, as usual for LM pre-training (unlike distillation, where
`kdlite.data.packing` keeps examples apart): every token is trained, none is padding.

    python -m kdlite.cli.pretrain shape=tiny-student steps=1600 chat_share=0.3 max_steps=2  # -> ...-student-base
    python -m kdlite.cli.pretrain shape=tiny-teacher steps=1500 stepwise_share=0   # -> ...-base
    python -m kdlite.cli.pretrain stage=reasoning   # -> kdlite/assets/tiny-teacher-reasoning

The restate pair of `experiment=replication` (docs/mini-replication.md §8-9): answer sections that
restate the think block's conclusion, in the student base's chat-layout solutions and in the
teacher's traces; `answer_form=restate` writes to `...-restate` beside the defaults:

    python -m kdlite.cli.pretrain shape=tiny-student steps=1600 chat_share=0.3 max_steps=2 \
        check_share=0.5 answer_form=restate        # -> kdlite/assets/tiny-student-base-restate
    python -m kdlite.cli.pretrain stage=reasoning answer_form=restate   # -> ...-reasoning-restate

The teacher is then post-trained on the embedded long-CoT traces with the hard loss alone, as the
study's teachers are reasoning models post-trained from their bases: that takes ~800 optimizer
steps (14 min on 2 cores), more than the 15-minute demo can spend, so it ships as
`tiny-teacher-reasoning` too; `pair.teacher.bootstrap=true` still trains one in line (cached).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from kdlite.chat import ENDOFTEXT
from kdlite.cli._args import UsageError, arg, argv_or_sys, parse_keys
from kdlite.data.packing import packed_rows
from kdlite.data.synthetic import ANSWER_FORMS
from kdlite.models import RECIPE_FILE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainRecipe:
    shape: str
    steps: int
    seq_len: int = 256
    batch: int = 16  # rows per step: 4,096 tokens
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    seed: int = 0  # model init and the corpus stream
    # share of worked solutions written one step per sentence (generate_base_documents); the
    # shipped tiny-teacher-base was pretrained before those existed, with 0
    stepwise_share: float = 0.5
    # share of worked solutions written in the chat layout with a short think block (the base's
    # instruction-style data; docs/mini-replication.md §5); the shipped bases before it had 0
    chat_share: float = 0.0
    # worked solutions only of problems with at most this many steps (null: every problem); the
    # student base is built with 2, so the 3-4-step problems are the teacher's to teach
    # (docs/mini-replication.md §6); the shipped bases before it had null
    max_steps: int | None = None
    # share of the chat-layout solutions whose think block verifies the answer before it ends
    # (docs/mini-replication.md §7); the shipped bases before it had 0
    check_share: float = 0.0
    # the chat-layout solutions' answer sections: chain | restate (docs/mini-replication.md §8);
    # the shipped bases before it had chain
    answer_form: str = "chain"

    def documents(self) -> Iterator[str]:
        """The recipe's pre-training corpus stream (`generate_base_documents`); raises ValueError
        naming a bad corpus knob on the first draw."""
        from kdlite.data.synthetic import generate_base_documents

        return generate_base_documents(
            self.seed,
            stepwise_share=self.stepwise_share,
            chat_share=self.chat_share,
            max_steps=self.max_steps,
            check_share=self.check_share,
            answer_form=self.answer_form,
        )


def save_record(out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write `record` as `<out>/kdlite_base.json`, stamped with the machine and the UTC time;
    returns what was written."""
    record = {
        **record,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    (out / RECIPE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def lr_at(step: int, recipe: PretrainRecipe) -> float:
    """Linear warmup, then cosine to zero at `recipe.steps`."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def direct_accuracy(
    model: Any, tokenizer: Any, n: int = 40, seed: int = 0, min_steps: int = 2
) -> float:
    """Greedy accuracy on `n` embedded-benchmark problems (of at least `min_steps` steps) in the
    pre-training format (problem, then "Solution:"): what the base can do before it ever sees a
    reasoning trace."""
    from kdlite.data.synthetic import BOXED_RE, generate_benchmark

    model.eval()
    eos = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    correct = 0
    for item in generate_benchmark(n, seed, min_steps=min_steps):
        ids = tokenizer(item["problem"] + "\nSolution:", return_tensors="pt")["input_ids"]
        out = model.generate(
            ids, max_new_tokens=160, do_sample=False, eos_token_id=eos, pad_token_id=eos
        )
        m = BOXED_RE.search(tokenizer.decode(out[0, ids.shape[1] :]))
        correct += bool(m and m.group(1) == item["answer"])
    return correct / n


def pretrain(
    recipe: PretrainRecipe, out_dir: str | Path, log_every: int = 50, eval_problems: int = 40
) -> dict[str, Any]:
    """Train `recipe.shape` from random init on the base corpus; save it (bf16) to `out_dir`."""
    import transformers

    from kdlite.data.tokenizer import embedded_tokenizer, tokenizer_fingerprint
    from kdlite.models import random_model

    tokenizer = embedded_tokenizer()
    model = random_model(recipe.shape, vocab_size=len(tokenizer), seed=recipe.seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=recipe.lr,
        betas=(0.9, 0.95),
    )
    rows = packed_rows(
        recipe.documents(),
        tokenizer,
        recipe.seq_len,
        recipe.batch,
    )
    model.train()
    start, losses = time.perf_counter(), []
    for step in range(recipe.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, recipe)
        ids = next(rows)
        loss = model(input_ids=ids, labels=ids).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretrain {recipe.shape}: loss {loss.item()} at step {step}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            log.info(
                "pretrain %s step %d/%d loss %.4f (%.0f s)",
                recipe.shape,
                step + 1,
                recipe.steps,
                sum(losses[-log_every:]) / len(losses[-log_every:]),
                time.perf_counter() - start,
            )
    wall_s = time.perf_counter() - start
    accuracy = direct_accuracy(model, tokenizer, n=eval_problems)
    accuracy_long = direct_accuracy(model, tokenizer, n=eval_problems, min_steps=3)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)  # type: ignore[operator]  # HF method
    tail = losses[-min(len(losses), 50) :]
    record = {
        "kind": f"{recipe.shape} base model (kdlite.pretrain)",
        "recipe": asdict(recipe),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "tokens": recipe.steps * recipe.batch * recipe.seq_len,
        "final_loss": sum(tail) / len(tail),
        "direct_accuracy": accuracy,
        "direct_accuracy_problems": eval_problems,
        # the same on problems of 3-4 steps (the demo's benchmark, bench=synthetic_long)
        "direct_accuracy_long": accuracy_long,
        "wall_s": round(wall_s, 1),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    record = save_record(out, record)
    log.info(
        "pretrain %s: %d steps in %.0f s, loss %.4f, direct accuracy %.1f%% (3-4 steps %.1f%%) -> %s",
        recipe.shape,
        recipe.steps,
        wall_s,
        record["final_loss"],
        100 * accuracy,
        100 * accuracy_long,
        out,
    )
    return record


# The teacher's reasoning post-training: the hard loss alone on long-CoT traces (the `lam=0` path,
# the same as `pair.teacher.bootstrap`), from the teacher's base. 800 steps: 4 epochs of 3,200
# traces. Measured on 2 cores (2026-11-26): ~14 min; 150 steps (the demo's old in-line bootstrap)
# left the teacher at 12% on the embedded benchmark, 800 steps reached 99%.
REASONING_OVERRIDES = [
    "lam=0",
    "pair.student.shape=tiny-teacher",
    "pair.student.init=base",
    "pair.teacher.bootstrap=false",
    "data.synthetic_size=3400",
    "data.train_size=3200",
    "data.val_size=200",
    "optim.epochs=4",
    "optim.lr=3e-3",
    "batch.examples_per_step=16",
    "batch.micro_examples=16",
    "export=true",
    "logger.wandb=false",
    "trainer.progress_bar=false",
]


def reasoning_teacher(
    out_dir: str | Path, run_dir: str | Path, answer_form: str = "chain"
) -> dict[str, Any]:
    """Post-train the shipped teacher base on the embedded traces, their answer sections in
    `answer_form` (`data.synthetic_answer_form`); keep its weights in `out_dir`."""
    import shutil

    from kdlite.config import compose_train
    from kdlite.data.tokenizer import embedded_tokenizer, tokenizer_fingerprint
    from kdlite.models import asset_fingerprint
    from kdlite.training import train

    overrides = [*REASONING_OVERRIDES]
    if answer_form != "chain":  # the shipped teacher's record lists the overrides without it
        overrides.append(f"data.synthetic_answer_form={answer_form}")
    overrides.append(f"run_dir={run_dir}")
    start = time.perf_counter()
    result = train(compose_train(overrides))
    wall_s = time.perf_counter() - start
    assert result.export_dir is not None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(result.export_dir / name, out / name)
    record = {
        "kind": "tiny-teacher reasoning model: tiny-teacher-base + hard-loss training on traces",
        "train_overrides": overrides[:-1],
        "base_weights": asset_fingerprint("tiny-teacher", "base"),
        "tokenizer": tokenizer_fingerprint(embedded_tokenizer()),
        "steps": result.global_step,
        "best_val_loss": result.best_val_loss,
        "wall_s": round(wall_s, 1),
    }
    record = save_record(out, record)
    log.info("reasoning teacher: %d steps in %.0f s -> %s", result.global_step, wall_s, out)
    return record


PROG = "python -m kdlite.cli.pretrain"
_RECIPE = PretrainRecipe(shape="", steps=0)


@dataclass
class Keys:
    stage: str = arg("base", "base: pretrain a tiny base model; reasoning: post-train the tiny "
                     "teacher on the embedded traces", choices=("base", "reasoning"))  # fmt: skip
    shape: str | None = arg(None, "stage=base: tiny-student | tiny-teacher (required)")
    steps: int | None = arg(None, "stage=base: optimizer steps (required)")
    out: str | None = arg(None, "output folder (null: kdlite/assets/<shape>-base, or "
                          "kdlite/assets/tiny-teacher-reasoning; either with -restate after it "
                          "for answer_form=restate)")  # fmt: skip
    seq_len: int = arg(_RECIPE.seq_len, "stage=base: tokens per packed row")
    batch: int = arg(_RECIPE.batch, "stage=base: rows per step")
    lr: float = arg(_RECIPE.lr, "stage=base: peak learning rate")
    warmup_steps: int = arg(_RECIPE.warmup_steps, "stage=base: linear warm-up steps")
    weight_decay: float = arg(_RECIPE.weight_decay, "stage=base: AdamW weight decay")
    seed: int = arg(_RECIPE.seed, "stage=base: model init and the corpus stream")
    stepwise_share: float = arg(_RECIPE.stepwise_share, "stage=base: share of worked solutions "
                                "written one step per sentence")  # fmt: skip
    chat_share: float = arg(_RECIPE.chat_share, "stage=base: share of worked solutions written "
                            "in the chat layout with a short think block")  # fmt: skip
    max_steps: int | None = arg(_RECIPE.max_steps, "stage=base: worked solutions only of problems "
                                "with at most this many steps (null: all)")  # fmt: skip
    check_share: float = arg(_RECIPE.check_share, "stage=base: share of chat-layout solutions "
                             "that check the answer before the think block ends")  # fmt: skip
    answer_form: str = arg(_RECIPE.answer_form, "answer sections: chain (the derivation again in "
                           "one line) | restate (the conclusion); stage=base: of the chat-layout "
                           "solutions; stage=reasoning: of the traces",
                           choices=ANSWER_FORMS)  # fmt: skip


def parse_recipe(argv: list[str]) -> tuple[PretrainRecipe, str]:
    """`shape=S steps=N [out=DIR] [field=value ...]` -> (recipe, output folder)."""
    return _base_job(parse_keys(Keys, argv, prog=PROG, doc=__doc__))


def _base_job(keys: Keys) -> tuple[PretrainRecipe, str]:
    """stage=base's recipe and output folder (`out=`, else the asset folder `default_asset` names)."""
    from kdlite.models import ASSETS

    recipe = _recipe(keys)
    return recipe, keys.out or str(ASSETS / default_asset(recipe.shape, "base", keys.answer_form))


def default_asset(shape: str, stage: str, answer_form: str) -> str:
    """The asset folder a stage writes by default: `<shape>-<stage>`, with `-restate` for the
    restate pair (`pair.*.init=base-restate|reasoning-restate`, docs/mini-replication.md §9)."""
    return f"{shape}-{stage}" + ("" if answer_form == "chain" else f"-{answer_form}")


def _recipe(keys: Keys) -> PretrainRecipe:
    if keys.shape is None or keys.steps is None:
        raise UsageError(PROG, "stage=base needs shape=... and steps=... (see --help)")
    fields = {k: v for k, v in asdict(keys).items() if k in PretrainRecipe.__annotations__}
    recipe = PretrainRecipe(**fields)
    try:  # the corpus checks its own knobs on the first draw: refuse before any model is built
        next(recipe.documents())
    except ValueError as e:
        raise UsageError(PROG, str(e)) from None
    return recipe


def main(argv: list[str] | None = None) -> None:
    """Pretrain a base model (stage=base), or post-train the tiny teacher (stage=reasoning)."""
    import tempfile

    from kdlite.models import ASSETS

    keys = parse_keys(Keys, argv_or_sys(argv), prog=PROG, doc=__doc__)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if keys.stage == "reasoning":
        recipe_keys = [
            k for k in PretrainRecipe.__annotations__ if k not in ("seed", "answer_form")
        ]
        given = [w for w in argv_or_sys(argv) if w.partition("=")[0] in recipe_keys]
        if given:
            raise UsageError(PROG, f"{', '.join(given)}: a key of stage=base, not of reasoning")
        out = keys.out or str(ASSETS / default_asset("tiny-teacher", "reasoning", keys.answer_form))
        with tempfile.TemporaryDirectory(prefix="kdlite-reasoning-") as tmp:
            reasoning_teacher(out, Path(tmp) / "run", str(keys.answer_form))
        return
    pretrain(*_base_job(keys))


if __name__ == "__main__":
    main()
