"""Sampling backends behind one interface: `backend.generate(jobs)` yields `(bench, records)` batches.

A `Job` is one prompt with the sample indices still missing (a resumed run asks only for those).
Records have the same fields whatever the backend (see `store.py`), and every batch is yielded as
soon as it completes so the caller can persist it.

- `VLLMBackend` (GPU, optional extra `kdlite[vllm]`, imported lazily): one engine per visible GPU,
  each in its own process; all prompts of all benchmarks are submitted at once with `n` samples per
  request (64 AIME samples share one prefill via prefix caching), context = longest prompt + max new
  tokens, and a request is yielded the moment its n samples finish, through the engine's
  `add_request`/`step` loop, instead of after the whole `generate()` call (17 GPU-hours per model in
  the study: a crash must not cost them). The engine is injectable so tests drive this path with a
  stand-in.
- `TransformersBackend` (everywhere): static batches of `batch_size` sequences, sorted by prompt
  length so left padding stays small, one seed per batch (recorded on every sample). Continuous
  batching (`generate_batch`) is not used: it could not be measured here (no GPU), and vLLM is the
  GPU path.
"""

from __future__ import annotations

import hashlib
import os
import queue as queue_mod
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    n_samples: int
    temperature: float
    top_p: float
    top_k: int  # 0 = off
    max_new_tokens: int


@dataclass(frozen=True)
class Job:
    bench: str
    id: str
    prompt_ids: tuple[int, ...]
    samples: tuple[int, ...]  # sample indices to generate
    sampling: Sampling


Batch = tuple[str, list[dict]]  # (bench, records)


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 31-bit seed from the run seed and a batch's identity (same on every machine)."""
    h = hashlib.sha256("\x1f".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def versions(*packages: str) -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for p in packages:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def record(
    job: Job,
    sample: int,
    text: str,
    n_tokens: int,
    finish: str,
    seed: int,
    backend: str,
    vers: dict,
) -> dict:
    return {
        "id": job.id,
        "sample": sample,
        "text": text,
        "n_tokens": n_tokens,
        "finish_reason": finish,
        "seed": seed,
        "backend": backend,
        "versions": vers,
    }


def strip_stop(text: str, stop_strings: tuple[str, ...]) -> str:
    for s in stop_strings:
        if text.endswith(s):
            return text[: -len(s)]
    return text


def pick_backend(name: str) -> str:
    if name != "auto":
        return name
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "transformers"
    return "vllm" if torch.cuda.is_available() else "transformers"


# --- transformers ---------------------------------------------------------------------------------


class TransformersBackend:
    name = "transformers"

    def __init__(
        self,
        model_path: str,
        tokenizer,
        stop_ids: list[int],
        *,
        batch_size: int,
        seed: int,
        dtype: str = "auto",
    ) -> None:
        from transformers import AutoModelForCausalLM

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
        self.model = model.to(self.device).eval()  # type: ignore[arg-type]
        self.tok = tokenizer
        self.stop_ids = list(stop_ids)
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[-1]
        )
        self.batch_size = batch_size
        self.seed = seed
        self.versions = versions("torch", "transformers")
        self.stop_strings = tuple(tokenizer.convert_ids_to_tokens(self.stop_ids))

    def _generation_config(self, s: Sampling):
        from transformers import GenerationConfig

        greedy = s.temperature <= 0
        return GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else s.temperature,
            top_p=None if greedy else s.top_p,
            top_k=s.top_k,  # 0 disables top-k (transformers' own default would be 50)
            max_new_tokens=s.max_new_tokens,
            eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id,
        )

    def generate(self, jobs: list[Job]) -> Iterator[Batch]:
        items = [(job, s) for job in jobs for s in job.samples]
        items.sort(
            key=lambda it: (
                it[0].sampling.max_new_tokens,
                len(it[0].prompt_ids),
                it[0].bench,
                it[0].id,
                it[1],
            )
        )
        batches: list[list[tuple[Job, int]]] = []
        for item in items:  # same sampling within a batch, at most batch_size sequences
            if (
                batches
                and len(batches[-1]) < self.batch_size
                and batches[-1][0][0].sampling == item[0].sampling
            ):
                batches[-1].append(item)
            else:
                batches.append([item])
        for batch in batches:
            yield from self._run_batch(batch)

    @torch.no_grad()
    def _run_batch(self, batch: list[tuple[Job, int]]) -> Iterator[Batch]:
        first_job, first_sample = batch[0]
        seed = derive_seed(self.seed, first_job.bench, first_job.id, first_sample, len(batch))
        torch.manual_seed(seed)
        width = max(len(job.prompt_ids) for job, _ in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (job, _) in enumerate(batch):
            n = len(job.prompt_ids)
            input_ids[row, width - n :] = torch.tensor(job.prompt_ids)
            attention[row, width - n :] = 1
        out = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention.to(self.device),
            generation_config=self._generation_config(first_job.sampling),
        )
        new = out[:, width:].tolist()
        stops = set(self.stop_ids)
        by_bench: dict[str, list[dict]] = {}
        for row, (job, sample) in enumerate(batch):
            tokens = new[row]
            end = next((i for i, t in enumerate(tokens) if t in stops), None)
            if end is None:
                body, n_tokens, finish = tokens, len(tokens), "length"
            else:
                body, n_tokens, finish = tokens[:end], end + 1, "stop"
            text = self.tok.decode(body, skip_special_tokens=False)
            rec = record(job, sample, text, n_tokens, finish, seed, self.name, self.versions)
            by_bench.setdefault(job.bench, []).append(rec)
        yield from by_bench.items()


# --- vLLM -----------------------------------------------------------------------------------------


def vllm_engine(model: str, seed: int, max_model_len: int, device_index: int):
    """One vLLM engine on the (single) visible GPU; returns the object with add_request/step."""
    from vllm import LLM

    llm = LLM(
        model=model,
        seed=seed,
        max_model_len=max_model_len,
        enable_prefix_caching=True,
        tensor_parallel_size=1,
        dtype="auto",
    )
    return llm.llm_engine


def vllm_sampling_params(s: Sampling, n: int, stop_ids: list[int]):
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        n=n,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k if s.top_k > 0 else -1,
        max_tokens=s.max_new_tokens,
        stop_token_ids=stop_ids,
        skip_special_tokens=False,  # keep </think>: the strict score needs it
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def run_engine(
    engine,
    make_params: Callable,
    jobs: list[Job],
    stop_ids: list[int],
    stop_strings: tuple[str, ...],
    seed: int,
) -> Iterator[Batch]:
    """Submit every job, then step the engine and yield each request when all its samples finish."""
    vers = versions("vllm", "torch")
    pending: dict[str, Job] = {}
    for k, job in enumerate(jobs):
        rid = f"{k}:{job.bench}:{job.id}"
        pending[rid] = job
        engine.add_request(
            rid,
            {"prompt_token_ids": list(job.prompt_ids)},
            make_params(job.sampling, len(job.samples), stop_ids),
        )
    while pending and engine.has_unfinished_requests():
        for out in engine.step():
            if not out.finished or out.request_id not in pending:
                continue
            job = pending.pop(out.request_id)
            recs = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                text = strip_stop(c.text, stop_strings)
                finish = "length" if c.finish_reason == "length" else str(c.finish_reason)
                recs.append(
                    record(
                        job,
                        job.samples[c.index],
                        text,
                        len(c.token_ids),
                        finish,
                        seed,
                        "vllm",
                        vers,
                    )
                )
            if len(recs) != len(job.samples):
                raise RuntimeError(
                    f"engine returned {len(recs)} samples for {job.id}, asked {len(job.samples)}"
                )
            yield job.bench, recs
    if pending:
        raise RuntimeError(f"engine stopped with {len(pending)} requests unfinished")


def _engine_worker(
    factory, make_params, model, seed, max_len, device, jobs, stop_ids, stop_strings, q
) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = str(device)  # before vLLM initialises CUDA in this process
    try:
        engine = factory(model, seed, max_len, device)
        for bench, recs in run_engine(engine, make_params, jobs, stop_ids, stop_strings, seed):
            q.put(("records", bench, recs))
        q.put(("done", device, None))
    except BaseException:
        q.put(("error", device, traceback.format_exc()))


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        model_path: str,
        tokenizer,
        stop_ids: list[int],
        *,
        seed: int,
        n_engines: int | None = None,
        engine_factory: Callable = vllm_engine,
        params_factory: Callable = vllm_sampling_params,
    ) -> None:
        self.model_path = model_path
        self.stop_ids = list(stop_ids)
        self.stop_strings = tuple(tokenizer.convert_ids_to_tokens(self.stop_ids))
        self.seed = seed
        self.n_engines = n_engines or max(1, torch.cuda.device_count())
        self.engine_factory = engine_factory
        self.params_factory = params_factory

    def engine_seed(self, device: int) -> int:
        return self.seed + device

    def shards(self, jobs: list[Job]) -> list[list[Job]]:
        """Greedy balance of sample counts over engines (AIME: 60 prompts x 64 -> 30 per GPU on 2)."""
        shards: list[list[Job]] = [[] for _ in range(self.n_engines)]
        load = [0] * self.n_engines
        for job in sorted(jobs, key=lambda j: -len(j.samples) * j.sampling.max_new_tokens):
            i = load.index(min(load))
            shards[i].append(job)
            load[i] += len(job.samples) * job.sampling.max_new_tokens
        return [s for s in shards if s]

    def generate(self, jobs: list[Job]) -> Iterator[Batch]:
        if not jobs:
            return
        max_len = max(len(j.prompt_ids) + j.sampling.max_new_tokens for j in jobs)
        shards = self.shards(jobs)
        if len(shards) == 1:
            engine = self.engine_factory(self.model_path, self.engine_seed(0), max_len, 0)
            yield from run_engine(
                engine,
                self.params_factory,
                shards[0],
                self.stop_ids,
                self.stop_strings,
                self.engine_seed(0),
            )
            return
        yield from self._generate_multi(shards, max_len)

    def _generate_multi(self, shards: list[list[Job]], max_len: int) -> Iterator[Batch]:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # CUDA cannot be forked
        q = ctx.Queue()
        procs = []
        for device, shard in enumerate(shards):
            args = (
                self.engine_factory,
                self.params_factory,
                self.model_path,
                self.engine_seed(device),
                max_len,
                device,
                shard,
                self.stop_ids,
                self.stop_strings,
                q,
            )
            p = ctx.Process(
                target=_engine_worker, args=args
            )  # not daemonic: vLLM starts its own processes
            p.start()
            procs.append(p)
        running = len(procs)
        try:
            while running:
                try:
                    kind, a, b = q.get(timeout=5)
                except queue_mod.Empty:
                    dead = [i for i, p in enumerate(procs) if not p.is_alive() and p.exitcode != 0]
                    if dead:
                        raise RuntimeError(
                            f"vLLM engine process(es) {dead} died (exit {procs[dead[0]].exitcode})"
                        ) from None
                    continue
                if kind == "records":
                    yield a, b
                elif kind == "done":
                    running -= 1
                else:
                    raise RuntimeError(f"vLLM engine on GPU {a} failed:\n{b}")
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                p.join(timeout=30)
