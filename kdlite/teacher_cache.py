"""Teacher logit cache: run the frozen teacher once per (teacher, dataset), train many runs from it.

What is stored, per position of every full-length rendered row (train and validation):
the k largest teacher log-probs log softmax(z_T/τ) (fp16), their ids (int32), the log of the
remaining mass log r_T = log(1 − Σ_k p_T) (fp32, a log-sum-exp over the other ids, so no
cancellation), and the input token id (int32, to check that a batch really is a prefix of the
cached row). Bytes per token = 6·k + 8: k = 64 is 392 B/token (388 B of teacher terms + 4 B of
check), k = 8 is 56 B. OpenThoughts' 40k training rows of < 4k tokens (about 60M tokens at a
mean of ~1.5k) take ~24 GB at k = 64 — against a 32B teacher forward per token per run.

Why it is exact up to top-k: a causal teacher's logits at position t depend on tokens 0..t only, so
the full row's positions 0..n−1 are exactly what the teacher computes for a left crop of n tokens,
whatever the supervision mask. A right crop starts the teacher's context mid-row, so its logits
differ; the reader refuses any segment that is not a prefix of its cached row. The KD term built
from the cache (`kdlite.losses.distill_loss_chunked_cached`) is the KL of the (k + 1)-bucket
coarsening (k ids + "rest"); measured errors against the exact KL are in BENCHMARKS.md.

Layout: `<folder>/index.json` (metadata, key, source_id -> [shard, start, length]) and
`<folder>/shard-00000.safetensors` … (tensors `tokens` [N], `topk_ids` [N, k], `topk_logprobs`
[N, k], `rest_logmass` [N]); no pickle, memory-mapped on read. A cache is written to a temporary
folder and renamed into place, so an interrupted build leaves nothing that looks complete.

Shape suffixes: B rows, T positions per row, K cached ids per position, N positions, V vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

FORMAT_VERSION = "1"
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


@torch.no_grad()
def build_cache(
    teacher: torch.nn.Module,
    rows: Sequence[tuple[str, Sequence[int]]],
    folder: Path,
    spec: CacheSpec,
    *,
    batch_tokens: int = 16_384,
    chunk_size: int = 1024,
    shard_tokens: int = 1 << 22,
    device: torch.device | str = "cpu",
) -> Path:
    """Write the cache of `rows` = [(source_id, full input_ids)] into `folder`.

    `teacher` is a `kdlite.models.HiddenLM` (forward -> last hidden states, `head_weight`).
    Rows are right-padded into length-sorted batches: causal attention never lets a real position
    see the padding after it, so no mask is needed.
    """
    folder = Path(folder)
    if (folder / "index.json").exists():
        return folder
    ids_seen = [sid for sid, _ in rows]
    if len(set(ids_seen)) != len(ids_seen):
        raise CacheError("duplicate source_id in the rows to cache")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    device = torch.device(device)
    head_VH = teacher.head_weight[: spec.vocab_size or None]  # type: ignore[index]
    store = LOGPROB_DTYPES[spec.logprob_dtype]
    index: dict[str, list[int]] = {}
    pending: dict[str, list[Tensor]] = {n: [] for n in _TENSORS}
    filled, shard = 0, 0

    def flush() -> None:
        nonlocal filled, shard
        if not filled:
            return
        from safetensors.torch import save_file

        save_file(
            {n: torch.cat(parts).contiguous() for n, parts in pending.items()},
            str(tmp / f"shard-{shard:05d}.safetensors"),
        )
        for parts in pending.values():
            parts.clear()
        filled, shard = 0, shard + 1

    lengths = [len(r) for _, r in rows]
    bar = tqdm(total=len(rows), desc="teacher cache", unit="row", disable=None)  # TTY only
    for batch in _batches(lengths, batch_tokens):
        bar.update(len(batch))
        width = max(lengths[i] for i in batch)
        input_ids_BT = torch.zeros(len(batch), width, dtype=torch.long)
        for b, i in enumerate(batch):
            input_ids_BT[b, : lengths[i]] = torch.as_tensor(rows[i][1], dtype=torch.long)
        hidden_BTH = teacher(input_ids_BT.to(device))
        for b, i in enumerate(batch):
            n = lengths[i]
            if filled and filled + n > shard_tokens:
                flush()
            parts = [
                topk_logprobs(h_CH @ head_VH.to(h_CH.dtype).T, spec.k, spec.temperature)
                for h_CH in hidden_BTH[b, :n].split(chunk_size)
            ]
            pending["tokens"].append(input_ids_BT[b, :n].to(torch.int32))
            pending["topk_ids"].append(torch.cat([p[0] for p in parts]).cpu())
            logp_NK = torch.cat([p[1] for p in parts]).clamp_min(torch.finfo(store).min)
            pending["topk_logprobs"].append(logp_NK.to(store).cpu())
            pending["rest_logmass"].append(torch.cat([p[2] for p in parts]).cpu())
            index[rows[i][0]] = [shard, filled, n]
            filled += n
    flush()
    bar.close()
    meta = {
        "spec": asdict(spec),
        "key": spec.key,
        "format": FORMAT_VERSION,
        "rows": len(rows),
        "tokens": sum(lengths),
        "bytes_per_token": bytes_per_token(spec.k, spec.logprob_dtype),
        "index": index,
    }
    (tmp / "index.json").write_text(json.dumps(meta))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


_TENSORS = ("tokens", "topk_ids", "topk_logprobs", "rest_logmass")


# ---- read ------------------------------------------------------------------------------------
class TeacherCache:
    """Serves a batch's cached teacher terms; see the module docstring for what it refuses."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        index_path = folder / "index.json"
        if not index_path.is_file():
            raise CacheError(
                f"no teacher cache at {folder}; build it with "
                "`python -m kdlite.cache_teacher <the run's overrides> k=<k>`"
            )
        meta = json.loads(index_path.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise CacheError(f"{folder}: cache format {meta.get('format')} != {FORMAT_VERSION}")
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
                "teacher for right crops (the cache serves left crops and any supervision mask)"
            )
        if temperature != self.spec.temperature:
            raise CacheError(
                f"the cache holds log softmax(z/τ) at τ={self.spec.temperature}, the run asks "
                f"τ={temperature}; top-k log-probs cannot be re-tempered exactly: rebuild the cache "
                "with this temperature"
            )
        if spec is not None and spec.key != self.spec.key:
            raise CacheError(f"cache {self.folder} was built for {self.spec}, the run needs {spec}")

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
