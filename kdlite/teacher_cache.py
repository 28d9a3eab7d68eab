"""Teacher logit cache: run the frozen teacher once per (teacher, dataset), train many runs from it.

What is stored, per position of every full-length rendered row (train and validation):
the k largest teacher log-probs log softmax(z_T/τ) (fp16), their ids (int32), the log of the
remaining mass log r_T = log(1 − Σ_k p_T) (fp32, a log-sum-exp over the other ids, so no
cancellation), and the input token id (int32, to check that a batch really is a prefix of the
cached row). Bytes per token = 6·k + 8: k = 64 is 392 B/token (388 B of teacher terms + 4 B of
check), k = 8 is 56 B. At the study's upper bound, 40k examples × 4,096 tokens = 163.8M tokens,
that is 64.2 GB (59.8 GiB) at k = 64; OpenThoughts' rows average ~1.5k tokens (~60M tokens,
~24 GB) — against a 32B teacher forward per token per run. `estimate()` (the CLI's `dry_run=true`)
gives a data set's exact figure; docs/teacher-cache.md has the design and the arithmetic.

Why it is exact up to top-k: a causal teacher's logits at position t depend on tokens 0..t only, so
the full row's positions 0..n−1 are exactly what the teacher computes for a left crop of n tokens,
whatever the supervision mask. A right crop starts the teacher's context mid-row, so its logits
differ; the reader refuses any segment that is not a prefix of its cached row. The KD term built
from the cache (`kdlite.losses.distill_loss_chunked_cached`) is the run's divergence of the
(k + 1)-bucket coarsening (k ids + "rest"); measured errors against the exact KL are in
BENCHMARKS.md. The reverse KL (`loss.divergence=reverse_kl`, or `jsd` at β = 1) cannot be
approximated from a top-k cache and is refused unless k covers the vocabulary
(`divergence_refusal`, docs/divergences.md).

Layout: `<folder>/manifest.json` (spec = teacher fingerprint, data key, k, τ, vocabulary, dtypes;
the shard list with rows, tokens and bytes of each; bytes/token; source_id -> [shard, start,
length]) and `<folder>/shard-00000.safetensors` … (tensors `tokens` [N], `topk_ids` [N, k],
`topk_logprobs` [N, k], `rest_logmass` [N]); no pickle, memory-mapped on read. A build writes
`<folder>.partial/` shard by shard (several processes in parallel, resumable after a kill; see
`build_cache`) and renames it into place once every row is written exactly once, so an
interrupted build leaves nothing that looks complete; the reader checks every shard's size.

Shape suffixes: B rows, T positions per row, K cached ids per position, N positions, V vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor
from tqdm.auto import tqdm

from kdlite.paths import cache_root

log = logging.getLogger(__name__)

FORMAT_VERSION = "2"  # 2: manifest.json with the shard list (sizes checked on open)
LOGPROB_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def bytes_per_token(k: int, logprob_dtype: str = "float16") -> int:
    """Stored bytes per position: k ids (int32) + k log-probs + rest log-mass (fp32) + token id."""
    return k * (4 + LOGPROB_DTYPES[logprob_dtype].itemsize) + 4 + 4


def topk_logprobs(
    logits_NV: Tensor, k: int, temperature: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    """(ids_NK int32, logprobs_NK fp32, rest_logmass_N fp32) of log softmax(logits / τ).

    k ≥ V keeps every id (rest = −inf). Ids come sorted by decreasing probability.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    logp_NV = F.log_softmax(logits_NV.float() / temperature, dim=-1)
    k = min(k, logp_NV.shape[-1])
    logp_NK, ids_NK = logp_NV.topk(k, dim=-1)
    rest_N = logp_NV.scatter_(1, ids_NK, float("-inf")).logsumexp(-1)
    return ids_NK.to(torch.int32), logp_NK, rest_N


# ---- keys ------------------------------------------------------------------------------------
def teacher_fingerprint(name_or_path: str, revision: str | None = None) -> str:
    """A local folder: its path, config.json and every file's (name, size, mtime); a Hub id: id@rev.

    Hashing 64 GB of 32B weights would take minutes per run; a re-export changes mtimes, which
    changes the key (a false miss costs one rebuild, never a stale cache).
    """
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        return f"hub:{name_or_path}@{revision or 'main'}"
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = path.stat()
        digest.update(f"{path.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns};".encode())
    config = folder / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    return f"dir:{folder.resolve()}:{digest.hexdigest()[:16]}"


@dataclass(frozen=True)
class CacheSpec:
    """Everything the cached numbers depend on; `key` hashes it."""

    teacher: str  # teacher_fingerprint(...)
    data: str  # the data module's cache key (data spec + tokenizer fingerprint)
    k: int
    temperature: float = 1.0
    vocab_size: int = 0  # logits cut to the tokenizer length before the softmax
    logprob_dtype: str = "float16"
    teacher_dtype: str = "float32"

    @property
    def key(self) -> str:
        blob = json.dumps({**asdict(self), "v": FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


class CacheError(ValueError):
    """A cache that cannot serve this run (missing, other data, right crop, other temperature)."""


# ---- build -----------------------------------------------------------------------------------
MANIFEST = "manifest.json"
PLAN = "plan.json"
PARTIAL = ".partial"  # suffix of the folder a build writes into until every shard is complete
SHARD_TOKENS = 1 << 20  # positions per shard: 392 MiB at k = 64, the unit of resumption


def partial_folder(folder: Path) -> Path:
    """Where a build of `folder` writes until it is complete (then renamed to `folder`)."""
    return folder.with_name(folder.name + PARTIAL)


def _shard_file(shard: int) -> str:
    return f"shard-{shard:05d}.safetensors"


def _record_file(shard: int) -> str:
    return f"shard-{shard:05d}.json"


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Row indices sorted by length, grouped so that rows × longest ≤ batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1) * lengths[i] > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def plan_shards(lengths: Sequence[int], shard_tokens: int = SHARD_TOKENS) -> list[list[int]]:
    """Row indices cut into shards of at most `shard_tokens` positions (a longer row: alone).

    Rows are taken by increasing length (ties by index), so the plan depends on the rows and
    `shard_tokens` only, never on the number of processes: rank r builds the shards i with
    i mod world = r, and a build resumed with another number of processes finishes the same plan.
    """
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be >= 1, got {shard_tokens}")
    shards: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if current and filled + lengths[i] > shard_tokens:
            shards.append(current)
            current, filled = [], 0
        current.append(i)
        filled += lengths[i]
    if current:
        shards.append(current)
    return shards


@dataclass(frozen=True)
class Estimate:
    """What a build will write, known before the teacher is loaded (`dry_run=true`)."""

    examples: int
    tokens: int
    longest: int
    shards: int
    bytes_per_token: int

    @property
    def bytes(self) -> int:
        """Tensor bytes; each shard adds a header of ~320 B and the manifest ~50 B per example."""
        return self.tokens * self.bytes_per_token

    def describe(self) -> str:
        return (
            f"{self.examples:,} examples, {self.tokens:,} tokens (longest {self.longest:,}) × "
            f"{self.bytes_per_token} B/token = {self.bytes:,} bytes ({self.bytes / 1e9:,.2f} GB, "
            f"{self.bytes / 2**30:,.2f} GiB) in {self.shards} shards"
        )


def estimate(
    lengths: Sequence[int],
    k: int,
    logprob_dtype: str = "float16",
    shard_tokens: int = SHARD_TOKENS,
) -> Estimate:
    return Estimate(
        examples=len(lengths),
        tokens=sum(lengths),
        longest=max(lengths, default=0),
        shards=len(plan_shards(lengths, shard_tokens)),
        bytes_per_token=bytes_per_token(k, logprob_dtype),
    )


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def _plan_digest(spec: CacheSpec, plan_ids: list[list[str]]) -> str:
    blob = json.dumps({"key": spec.key, "plan": plan_ids})
    return hashlib.sha1(blob.encode()).hexdigest()


def _start_partial(tmp: Path, spec: CacheSpec, plan_ids: list[list[str]]) -> None:
    """Rank 0: keep a partial build of the same plan, or start an empty one."""
    digest = _plan_digest(spec, plan_ids)
    plan_path = tmp / PLAN
    if plan_path.is_file() and json.loads(plan_path.read_text()).get("digest") == digest:
        return
    shutil.rmtree(tmp, ignore_errors=True)  # nothing, or a build of other rows: start over
    tmp.mkdir(parents=True)
    plan = {"key": spec.key, "spec": asdict(spec), "digest": digest, "shards": len(plan_ids)}
    _write_json(plan_path, plan)


def _shard_complete(tmp: Path, shard: int) -> bool:
    return (tmp / _record_file(shard)).is_file() and (tmp / _shard_file(shard)).is_file()


def partial_status(folder: Path) -> str | None:
    """'i of n shards complete' for an interrupted build of `folder`; None when there is none."""
    plan_path = partial_folder(folder) / PLAN
    if not plan_path.is_file():
        return None
    n = int(json.loads(plan_path.read_text())["shards"])
    done = sum(_shard_complete(partial_folder(folder), i) for i in range(n))
    return f"{done} of {n} shards complete"


def _write_shard(
    teacher: torch.nn.Module,
    rows: Sequence[tuple[str, Sequence[int]]],
    members: list[int],
    path: Path,
    spec: CacheSpec,
    batch_tokens: int,
    chunk_size: int,
    device: torch.device,
    bar: Any,
) -> dict[str, Any]:
    """Run the teacher over the rows `members` (plan order), write their tensors to `path`."""
    from safetensors.torch import save_file

    head_VH = teacher.head_weight[: spec.vocab_size or None]  # type: ignore[index]
    store = LOGPROB_DTYPES[spec.logprob_dtype]
    lengths = [len(rows[i][1]) for i in members]
    out: dict[int, list[Tensor]] = {}
    for batch in _batches(lengths, batch_tokens):
        width = max(lengths[j] for j in batch)
        input_ids_BT = torch.zeros(len(batch), width, dtype=torch.long)
        for b, j in enumerate(batch):
            input_ids_BT[b, : lengths[j]] = torch.as_tensor(rows[members[j]][1], dtype=torch.long)
        hidden_BTH = teacher(input_ids_BT.to(device))
        for b, j in enumerate(batch):
            n = lengths[j]
            parts = [
                topk_logprobs(h_CH @ head_VH.to(h_CH.dtype).T, spec.k, spec.temperature)
                for h_CH in hidden_BTH[b, :n].split(chunk_size)
            ]
            logp_NK = torch.cat([p[1] for p in parts]).clamp_min(torch.finfo(store).min)
            out[j] = [
                input_ids_BT[b, :n].to(torch.int32),
                torch.cat([p[0] for p in parts]).cpu(),
                logp_NK.to(store).cpu(),
                torch.cat([p[2] for p in parts]).cpu(),
            ]
        bar.update(sum(lengths[j] for j in batch))
    index: dict[str, list[int]] = {}
    start = 0
    for j, i in enumerate(members):
        index[rows[i][0]] = [start, lengths[j]]
        start += lengths[j]
    tensors = {
        name: torch.cat([out[j][t] for j in range(len(members))]).contiguous()
        for t, name in enumerate(_TENSORS)
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
    return {"rows": len(members), "tokens": start, "bytes": path.stat().st_size, "index": index}


@torch.no_grad()
def build_cache(
    teacher: torch.nn.Module,
    rows: Sequence[tuple[str, Sequence[int]]],
    folder: Path,
    spec: CacheSpec,
    *,
    batch_tokens: int = 16_384,
    chunk_size: int = 1024,
    shard_tokens: int = SHARD_TOKENS,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world: int = 1,
    progress: bool = False,
    on_shard: Callable[[int], None] | None = None,
) -> Path:
    """Write the cache of `rows` = [(source_id, full input_ids)] into `folder`; return it.

    `teacher` is a `kdlite.models.HiddenLM` (forward -> last hidden states, `head_weight`). Rows
    are right-padded into length-sorted batches within a shard: causal attention never lets a real
    position see the padding after it, so no mask is needed.

    Several processes: every rank calls this with the same rows (torch.distributed initialised,
    `rank`/`world` its rank and world size, the folder on a file system they share) and builds the
    shards i ≡ rank (mod world) of one plan (`plan_shards`) into `<folder>.partial/`, each with its
    own whole teacher. A shard is complete once `shard-i.json` is there (renamed into place after
    the shard's tensors): a killed build rerun with the same rows and `shard_tokens` builds only the
    missing shards, with any number of processes. Rank 0 then checks that every row is written
    exactly once, writes `manifest.json` and renames the folder into place. Batches never cross a
    shard, so a row's numbers do not depend on the number of processes or on a resume.
    `progress`: rank 0 prints the plan and a tqdm bar of its own shards (tokens/s, ETA).
    `on_shard(i)` runs after shard i is complete (tests interrupt a build there).
    """
    folder = Path(folder)
    if (folder / MANIFEST).exists():
        return folder
    ids_seen = [sid for sid, _ in rows]
    if len(set(ids_seen)) != len(ids_seen):
        raise CacheError("duplicate source_id in the rows to cache")
    lengths = [len(r) for _, r in rows]
    plan = plan_shards(lengths, shard_tokens)
    plan_ids = [[rows[i][0] for i in shard] for shard in plan]
    tmp = partial_folder(folder)
    if rank == 0:
        _start_partial(tmp, spec, plan_ids)
    _barrier(world)
    done = [i for i in range(len(plan)) if _shard_complete(tmp, i)]
    mine = [i for i in range(len(plan)) if i % world == rank and i not in done]
    show = progress and rank == 0
    if show:
        print(
            f"kdlite: teacher cache: {len(plan)} shards, {len(done)} already complete (resumed), "
            f"{len(plan) - len(done)} to build over {world} process(es) into {tmp}"
            if done
            else f"kdlite: teacher cache: {len(plan)} shards over {world} process(es) into {tmp}",
            flush=True,
        )

    bar = tqdm(
        total=sum(lengths[j] for i in mine for j in plan[i]),
        unit="tok",
        unit_scale=True,
        desc="teacher cache" + (f" (rank 0 of {world})" if world > 1 else ""),
        disable=not show,
    )
    device = torch.device(device)
    for i in mine:
        record = _write_shard(
            teacher,
            rows,
            plan[i],
            tmp / _shard_file(i),
            spec,
            batch_tokens,
            chunk_size,
            device,
            bar,
        )
        _write_json(tmp / _record_file(i), record)
        if on_shard is not None:
            on_shard(i)
    bar.close()
    _barrier(world)
    if rank == 0:
        _finish(tmp, folder, spec, plan_ids, world)
    _barrier(world)
    return folder


def _finish(
    tmp: Path, folder: Path, spec: CacheSpec, plan_ids: list[list[str]], world: int
) -> None:
    """Rank 0: check every planned row is written exactly once, write the manifest, rename."""
    index: dict[str, list[int]] = {}
    shards = []
    for i, want in enumerate(plan_ids):
        if not _shard_complete(tmp, i):
            raise CacheError(f"{tmp}: shard {i} is missing after every process finished")
        record = json.loads((tmp / _record_file(i)).read_text())
        size = (tmp / _shard_file(i)).stat().st_size
        if sorted(record["index"]) != sorted(want) or size != record["bytes"]:
            raise CacheError(f"{tmp}: shard {i} does not hold the rows of the plan")
        for sid, (start, n) in record["index"].items():
            if sid in index:
                raise CacheError(f"{tmp}: {sid!r} is written twice (shards {index[sid][0]}, {i})")
            index[sid] = [i, start, n]
        shards.append(
            {
                "file": _shard_file(i),
                "rows": record["rows"],
                "tokens": record["tokens"],
                "bytes": size,
            }
        )
    meta = {
        "format": FORMAT_VERSION,
        "key": spec.key,
        "spec": asdict(spec),
        "rows": len(index),
        "tokens": sum(s["tokens"] for s in shards),
        "bytes_per_token": bytes_per_token(spec.k, spec.logprob_dtype),
        "bytes": sum(s["bytes"] for s in shards),
        "processes": world,
        "shards": shards,
        "index": index,
    }
    _write_json(tmp / MANIFEST, meta)
    for i in range(len(plan_ids)):
        (tmp / _record_file(i)).unlink()
    (tmp / PLAN).unlink()
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


_TENSORS = ("tokens", "topk_ids", "topk_logprobs", "rest_logmass")


def spec_differences(have: CacheSpec, want: CacheSpec) -> list[str]:
    """'field: cache X, run Y' for each field in which a cache's spec differs from a run's."""
    return [
        f"{f.name}: cache {getattr(have, f.name)!r}, run {getattr(want, f.name)!r}"
        for f in fields(CacheSpec)
        if getattr(have, f.name) != getattr(want, f.name)
    ]


# ---- read ------------------------------------------------------------------------------------
class TeacherCache:
    """Serves a batch's cached teacher terms; see the module docstring for what it refuses."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        manifest = folder / MANIFEST
        if not manifest.is_file():
            if status := partial_status(folder):
                raise CacheError(
                    f"the teacher cache {folder} is partial ({status} in "
                    f"{partial_folder(folder)}): its build was interrupted. Rerun the same "
                    "`python -m kdlite.cli.cache_teacher ...` command; it resumes at the missing shards"
                )
            raise CacheError(
                f"no teacher cache at {folder}; build it with "
                "`python -m kdlite.cli.cache_teacher <the run's overrides> k=<k>`"
            )
        meta = json.loads(manifest.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise CacheError(
                f"{folder}: cache format {meta.get('format')} != {FORMAT_VERSION}; rebuild it"
            )
        damaged = [
            f"{s['file']} is missing or not {s['bytes']:,} bytes"
            for s in meta["shards"]
            if not (folder / s["file"]).is_file()
            or (folder / s["file"]).stat().st_size != s["bytes"]
        ]
        if sum(s["rows"] for s in meta["shards"]) != len(meta["index"]):
            damaged.append("the shard list and the index disagree on the number of rows")
        if damaged:
            raise CacheError(
                f"the teacher cache {folder} is damaged ({'; '.join(damaged[:3])}): "
                "delete the folder and rebuild it"
            )
        self.folder = folder
        self.spec = CacheSpec(**meta["spec"])
        self.index: dict[str, list[int]] = meta["index"]
        self.tokens = int(meta["tokens"])
        self._shards: dict[int, Any] = {}

    @property
    def k(self) -> int:
        return self.spec.k

    def check_run(
        self, *, lsp: float, crop: str, temperature: float, spec: CacheSpec | None = None
    ) -> None:
        """Refuse, before training, a run this cache cannot serve exactly (up to top-k)."""
        if crop == "right" and lsp < 1.0:
            raise CacheError(
                f"crop=right with lsp={lsp}: a right crop changes the teacher's context, so the "
                "cached full-row logits are not the teacher's logits for it; use the online "
                "teacher for right crops (the cache serves left crops and any supervision mask), "
                "or `teacher=auto`, which picks the online teacher for them"
            )
        if temperature != self.spec.temperature:
            raise CacheError(
                f"the cache holds log softmax(z/τ) at τ={self.spec.temperature}, the run asks "
                f"τ={temperature}; top-k log-probs cannot be re-tempered exactly: rebuild the cache "
                "with this temperature"
            )
        if spec is not None and spec.key != self.spec.key:
            raise CacheError(
                f"the teacher cache {self.folder} is stale for this run: "
                + "; ".join(spec_differences(self.spec, spec))
            )

    def _shard(self, shard: int) -> Any:
        if shard not in self._shards:
            from safetensors import safe_open

            path = self.folder / f"shard-{shard:05d}.safetensors"
            self._shards[shard] = safe_open(str(path), framework="pt")
        return self._shards[shard]

    def row(self, source_id: str, n: int) -> dict[str, Tensor]:
        """The first n cached positions of a row."""
        if source_id not in self.index:
            raise CacheError(
                f"{source_id!r} is not in the teacher cache {self.folder} (built for other data?)"
            )
        shard, start, length = self.index[source_id]
        if n > length:
            raise CacheError(f"{source_id!r}: batch has {n} tokens, the cached row {length}")
        f = self._shard(shard)
        return {name: f.get_slice(name)[start : start + n] for name in _TENSORS}

    def lookup(
        self, batch: dict[str, Any], device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(topk_ids_BTK long, topk_logprobs_BTK fp32, rest_logmass_BT fp32) aligned to `batch`.

        Segment s of a row is the micro-batch's item s (`pack` and `pad_collate` both number them
        so), whose source id is `batch["source_ids"][s]`; segments past the list are the sampler's
        zero-weight dummies and padding (segment −1): zeros there, never read by the loss.
        """
        input_ids_BT = batch["input_ids_BT"].cpu()
        segments_BT = batch["segment_ids_BT"].cpu()
        source_ids: list[str] = batch["source_ids"]
        B, T = input_ids_BT.shape
        ids_BTK = torch.zeros(B, T, self.k, dtype=torch.long)
        logp_BTK = torch.zeros(B, T, self.k, dtype=torch.float32)
        rest_BT = torch.zeros(B, T, dtype=torch.float32)
        for b in range(B):
            for s in segments_BT[b].unique().tolist():
                if s < 0 or s >= len(source_ids):
                    continue
                pos = (segments_BT[b] == s).nonzero().squeeze(1)
                a, n = int(pos[0]), len(pos)
                if int(pos[-1]) - a + 1 != n:
                    raise CacheError(f"segment {s} of row {b} is not contiguous")
                cached = self.row(source_ids[s], n)
                if not torch.equal(cached["tokens"].long(), input_ids_BT[b, a : a + n]):
                    raise CacheError(
                        f"{source_ids[s]!r}: the batch's tokens are not a prefix of the cached "
                        "full row. The teacher cache serves left crops only (the teacher's "
                        "context must start at the row's first token); a right crop or other "
                        "data needs the online teacher or a rebuilt cache"
                    )
                ids_BTK[b, a : a + n] = cached["topk_ids"].long()
                logp_BTK[b, a : a + n] = cached["topk_logprobs"].float()
                rest_BT[b, a : a + n] = cached["rest_logmass"]
        if device is not None:
            ids_BTK, logp_BTK, rest_BT = (t.to(device) for t in (ids_BTK, logp_BTK, rest_BT))
        return ids_BTK, logp_BTK, rest_BT


def bootstrap_home(cfg: Any, tokenizer: Any) -> Path:
    """Where the bootstrapped tiny teacher of `cfg` lives (`<home>/run/export` once trained): a
    hash of everything that makes it (teacher spec, bootstrap recipe, data, tokenizer, seed and
    the shipped weights it starts from). `kdlite.training.bootstrap_teacher` trains it there."""
    import hashlib
    import json

    from omegaconf import OmegaConf

    from kdlite.data.tokenizer import tokenizer_fingerprint

    pair = cfg.pair
    recipe = {
        "teacher": OmegaConf.to_container(pair.teacher, resolve=True),
        "bootstrap": OmegaConf.to_container(pair.bootstrap, resolve=True),
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "seed": cfg.seed,
    }
    t = pair.teacher
    if t.shape is not None and t.init != "random":  # rebuilt shipped weights -> a new teacher
        from kdlite.models import asset_fingerprint

        recipe["weights"] = asset_fingerprint(t.shape, t.init)
    key = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "teachers" / f"{pair.name}-{key}"


# ---- the cache of a run (config -> folder -> checked reader) ---------------------------------
def full_row_datamodule(cfg: DictConfig, tokenizer: Any):
    """The run's data module with lsp = 1 and a left crop: every example's full rendered row, the
    rows a cache of the run's (teacher, data) covers."""
    from kdlite.config import data_spec
    from kdlite.data.datamodule import DistillDataModule, Knobs

    spec = data_spec(cfg.data)
    dm = DistillDataModule(spec, tokenizer, Knobs(lsp=1.0, crop="left", examples_per_step=1))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def cache_rows(datamodule: Any) -> list[tuple[str, list[int]]]:
    """(source id, token ids) of every train and validation row of a `full_row_datamodule`."""
    return [(it.source_id, it.input_ids) for it in (*datamodule.train_items, *datamodule.val_items)]


def load_teacher(name: str, revision: str | None, vocab_size: int, dtype: torch.dtype):
    """The frozen teacher a cache is built from, as a `HiddenLM` (hidden states + head)."""
    from kdlite.models import HiddenLM, ModelSpec, load_model

    lm = load_model(ModelSpec(name=name, revision=revision), vocab_size=vocab_size, dtype=dtype)
    return HiddenLM(lm.eval().requires_grad_(False))


def teacher_path(cfg: DictConfig, tokenizer: Any) -> tuple[str, str | None]:
    """(name or folder, revision) of the teacher; refuses random-weight teachers."""
    from kdlite.config import model_spec

    t = cfg.pair.teacher
    if t.bootstrap:  # trained by `kdlite.training.bootstrap_teacher` (the CLI calls it first)
        export = bootstrap_home(cfg, tokenizer) / "run" / "export"
        if not (export / "config.json").exists():
            raise CacheError(
                f"the bootstrapped {cfg.pair.name} teacher is not trained yet ({export}): a run or "
                "`python -m kdlite.cli.cache_teacher` with the same overrides trains it first"
            )
        return str(export), None
    if t.shape is not None and t.init == "random":
        raise CacheError(
            f"pair.teacher.shape={t.shape} is a random-weight teacher: nothing stable to cache"
        )
    if (folder := model_spec(t).asset()) is not None:
        return str(folder), None
    return str(t.name), t.revision


def cache_spec(
    cfg: DictConfig, tokenizer: Any, datamodule: Any, k: int, logprob_dtype: str = "float16"
) -> CacheSpec:
    name, revision = teacher_path(cfg, tokenizer)
    return CacheSpec(
        teacher=teacher_fingerprint(name, revision),
        data=Path(datamodule.cache_path).stem,
        k=int(k),
        temperature=float(cfg.temperature),
        vocab_size=len(tokenizer),
        logprob_dtype=logprob_dtype,
        teacher_dtype=str(cfg.trainer.teacher_dtype),
    )


def cache_folder(spec: CacheSpec, pair_name: str) -> Path:
    return cache_root() / "teacher_logits" / f"{pair_name}-{spec.key}"


def _closest(spec: CacheSpec, pair_name: str) -> str:
    """How the nearest complete cache of the same pair differs from `spec` ('' when none)."""
    best: tuple[int, str] | None = None
    for manifest in (cache_root() / "teacher_logits").glob(f"{pair_name}-*/{MANIFEST}"):
        try:
            have = CacheSpec(**json.loads(manifest.read_text())["spec"])
        except (ValueError, TypeError, KeyError):
            continue  # another format: not a candidate
        diffs = spec_differences(have, spec)
        if best is None or len(diffs) < best[0]:
            best = (
                len(diffs),
                f". The teacher cache {manifest.parent} is stale for it: " + "; ".join(diffs),
            )
    return best[1] if best else ""


def open_for_run(
    cfg: DictConfig, tokenizer: Any, datamodule: Any, k: int, logprob_dtype: str = "float16"
) -> TeacherCache:
    """The cache a training run reads, checked against the run's spec, crop and temperature.

    Refuses, naming the folder: no cache (and how the nearest cache of the pair differs: teacher,
    data, k, τ...), a partial one (an interrupted build: how many shards), a damaged one (a shard
    missing or of the wrong size), a right crop.
    """
    spec = cache_spec(cfg, tokenizer, datamodule, k, logprob_dtype)
    folder = cache_folder(spec, cfg.pair.name)
    if not (folder / MANIFEST).exists() and partial_status(folder) is None:
        raise CacheError(
            f"no teacher cache for this (teacher, data, k={k}, temperature={cfg.temperature}) at "
            f"{folder}{_closest(spec, cfg.pair.name)}. Build it once with "
            f"`python -m kdlite.cli.cache_teacher <the run's overrides> k={k}`"
        )
    cache = TeacherCache(folder)
    cache.check_run(
        lsp=float(cfg.lsp), crop=str(getattr(cfg.crop, "value", cfg.crop)),
        temperature=float(cfg.temperature), spec=spec,
    )  # fmt: skip
    return cache


def divergence_refusal(cfg: DictConfig, vocab_size: int) -> str:
    """Why a top-k cache cannot serve this run's `loss.divergence` ('' when it can).

    The forward KL, the generalized JSD with β < 1 and TV of the (k + 1)-bucket coarsening lose a
    term that vanishes with the teacher's mass outside the top k; the reverse KL loses
    r_S·KL(q_rest ‖ p_rest), which the student's rest mass weighs and the cache cannot see
    (`kdlite.losses.needs_full_teacher`). Exact, so allowed, when k covers the vocabulary.
    """
    from kdlite.losses import needs_full_teacher

    divergence = str(getattr(cfg.loss.divergence, "value", cfg.loss.divergence))
    beta = float(cfg.loss.jsd_beta)
    k = int(cfg.teacher_cache_k)
    if k >= vocab_size or not needs_full_teacher(divergence, beta):
        return ""
    which = f"loss.divergence={divergence}" + (
        f" loss.jsd_beta={beta}" if divergence == "jsd" else ""
    )
    return (
        f"{which} is the reverse KL, which a top-k teacher cache cannot approximate "
        f"(teacher_cache_k={k} < {vocab_size} vocabulary ids): it misses r_S·KL(q_rest ‖ p_rest), "
        "the student's mass outside the teacher's top k weighed by a teacher shape the cache does "
        "not store (docs/divergences.md). Use teacher=online, teacher_cache_k >= the vocabulary, "
        "or loss.divergence=forward_kl|tv|jsd with loss.jsd_beta < 1"
    )


def select_for_run(cfg: DictConfig, tokenizer: Any, datamodule: Any) -> TeacherCache | None:
    """The teacher source of a run with `teacher=cache|auto`: the cache, or None (online).

    `cache`: the cache is required; anything it cannot serve exactly (up to top-k) is refused by
    `open_for_run`, a divergence it cannot approximate by `divergence_refusal` (ConfigError).
    `auto`, for sweeps: the cache where one is complete, matches the run and can serve its crop
    (left crops, or lsp = 1) and divergence, otherwise the online teacher (right crops, the reverse
    KL, no cache yet, a partial or stale one). One log line (rank 0) says which, and why not the
    cache.
    """
    from kdlite.parallel import launch_rank

    k = int(cfg.teacher_cache_k)
    mode = str(getattr(cfg.teacher, "value", cfg.teacher))
    crop = str(getattr(cfg.crop, "value", cfg.crop))
    cache: TeacherCache | None = None
    refusal = divergence_refusal(cfg, len(tokenizer))
    if mode == "cache":
        if refusal:
            from kdlite.errors import ConfigError

            raise ConfigError(f"teacher=cache: {refusal}")
        cache = open_for_run(cfg, tokenizer, datamodule, k=k)
        why = ""
    elif refusal:
        why = refusal
    elif crop == "right" and float(cfg.lsp) < 1.0:
        why = f"crop=right at lsp={cfg.lsp}: the cache serves left crops only"
    else:
        try:
            cache = open_for_run(cfg, tokenizer, datamodule, k=k)
            why = ""
        except CacheError as err:
            why = str(err)
    if launch_rank() == 0:
        if cache is not None:
            log.info("teacher=%s: reading the teacher cache %s (k=%d)", mode, cache.folder, k)
        else:
            log.info("teacher=%s: online teacher (%s)", mode, why)
    return cache
