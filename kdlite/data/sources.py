"""Raw rows -> `Example`: one adapter per dataset layout, and the loader that feeds them.

Every source the study used keeps reasoning and answer in one string behind tags
(`<|begin_of_thought|>…` / `<|begin_of_solution|>…` or `<think>…</think>answer`); the adapters
strip the tags and keep plain text, so rendering never sees a dataset's own markup. The key
trade-off is strictness: a row whose tags are missing, unclosed, duplicated or surrounded by stray
text is rejected (counted by reason) rather than repaired, because a guessed split between CoT and
answer would silently move tokens between the sections the study masks. The cost is every
malformed row (how many is logged and written to the manifest per reason; not yet measured on the
full Hub datasets); the guard is `SkipCounter.check()`, which fails loudly when most rows are
rejected (a wrong adapter or layout) instead of training on the few that happen to parse.

Loading goes row by row through the Hub (`datasets.load_dataset`, which downloads the whole split
even with `limit`), a local JSONL/JSON/Parquet file, a folder of such files, or a `save_to_disk`
folder, so a bad row is a count, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlite.chat import CHAT_TOKENS, END_THINK, THINK
from kdlite.data.example import DataError, Example, RowRejected, SkipCounter, make_source_id
from kdlite.data.spec import DataSpec

log = logging.getLogger(__name__)

THOUGHT_TAGS = ("<|begin_of_thought|>", "<|end_of_thought|>")
SOLUTION_TAGS = ("<|begin_of_solution|>", "<|end_of_solution|>")
THINK_TAGS = (THINK, END_THINK)
# Text that would break rendering (docs/design.md §3 splits sections at the think tokens) or the chat
# layout if it survived inside a section: every chat control token (`<|endoftext|>` included, which
# rendering would otherwise reject later as `reserved_token_in_text`).
RESERVED_MARKERS = CHAT_TOKENS
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


# ----------------------------------------------------------------------------------------------
# Row helpers
# ----------------------------------------------------------------------------------------------


def _field(row: Mapping[str, Any], key: str) -> Any:
    value = row.get(key)
    if value is None:
        raise RowRejected("missing_field", key)
    return value


def _string(row: Mapping[str, Any], key: str) -> str:
    value = _field(row, key)
    if not isinstance(value, str):
        raise RowRejected("non_string", f"{key} is {type(value).__name__}")
    return value


def _split_tagged(text: str, tags: tuple[str, str], what: str) -> tuple[str, str, str]:
    """`before<open>body<close>after` -> (before, body, after); exactly one well-ordered pair."""
    open_tag, close_tag = tags
    n_open, n_close = text.count(open_tag), text.count(close_tag)
    if n_open > 1 or n_close > 1:
        raise RowRejected(f"duplicate_{what}", f"{n_open} x {open_tag}, {n_close} x {close_tag}")
    if n_open == 0 and n_close == 0:
        raise RowRejected(f"no_{what}", f"no {open_tag}")
    if n_close == 0:
        raise RowRejected(f"unclosed_{what}", f"{open_tag} without {close_tag}")
    if n_open == 0:
        raise RowRejected(f"unopened_{what}", f"{close_tag} without {open_tag}")
    start, end = text.index(open_tag), text.index(close_tag)
    if end < start:
        raise RowRejected(f"unopened_{what}", f"{close_tag} before {open_tag}")
    return text[:start], text[start + len(open_tag) : end], text[end + len(close_tag) :]


def _no_stray_text(*pieces: str) -> None:
    for piece in pieces:
        if piece.strip():
            raise RowRejected("text_outside_tags", repr(piece.strip()[:40]))


def _example(dataset: str, index: int, prompt: str, cot: str, answer: str) -> Example:
    prompt, cot, answer = prompt.strip(), cot.strip(), answer.strip()
    for name, text in (("prompt", prompt), ("cot", cot), ("answer", answer)):
        if not text:
            raise RowRejected(f"empty_{name}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:  # a non-UTF-8 byte, or a lone surrogate like "\ud800"
            bad = text[err.start]
            raise RowRejected(
                "bad_encoding", f"{name} is not valid UTF-8 (U+{ord(bad):04X} at char {err.start})"
            ) from None
        for marker in RESERVED_MARKERS:
            if marker in text:
                raise RowRejected("reserved_marker", f"{marker} in {name}")
    return Example(prompt, cot, answer, make_source_id(dataset, index, prompt, cot, answer))


def _split_think(text: str) -> tuple[str, str]:
    """`<think>cot</think>answer` -> (cot, answer); nothing but whitespace before `<think>`."""
    before, cot, answer = _split_tagged(text, THINK_TAGS, "think")
    _no_stray_text(before)
    return cot, answer


def _messages(
    value: Any, role_key: str, text_key: str, *, drop_system: bool
) -> list[tuple[str, str]]:
    """A chat list -> [(role, text)], checking types; a leading system turn is dropped if allowed."""
    if not isinstance(value, list) or not all(isinstance(m, Mapping) for m in value):
        raise RowRejected(
            "bad_messages", f"expected a list of messages, got {type(value).__name__}"
        )
    turns = []
    for message in value:
        role, text = message.get(role_key), message.get(text_key)
        if role is None or text is None:
            raise RowRejected("missing_field", f"message without {role_key!r}/{text_key!r}")
        if not isinstance(role, str) or not isinstance(text, str):
            raise RowRejected("non_string", f"message {role_key}/{text_key} not strings")
        turns.append((role, text))
    if drop_system and turns and turns[0][0] == "system":
        turns = turns[1:]
    return turns


def _prompt(row: Mapping[str, Any], key: str) -> str:
    """A prompt column: a string, or a list of messages `[system?, user]` (`role`/`content`), as
    some datasets store it; the user turn's text is the prompt (a system turn is dropped)."""
    value = _field(row, key)
    if isinstance(value, list):
        return _only_user(_messages(value, "role", "content", drop_system=True))
    if not isinstance(value, str):
        raise RowRejected("non_string", f"{key} is {type(value).__name__}")
    return value


def _user_then_assistant(turns: list[tuple[str, str]]) -> tuple[str, str]:
    roles = [role for role, _ in turns]
    if roles.count("assistant") > 1:
        raise RowRejected("several_assistant_turns", f"roles {roles}")
    if roles != ["user", "assistant"]:
        raise RowRejected("wrong_roles", f"roles {roles}, expected ['user', 'assistant']")
    return turns[0][1], turns[1][1]


def _only_user(turns: list[tuple[str, str]]) -> str:
    roles = [role for role, _ in turns]
    if roles != ["user"]:
        raise RowRejected("wrong_roles", f"roles {roles}, expected ['user']")
    return turns[0][1]


# ----------------------------------------------------------------------------------------------
# Adapters: (row, dataset name, row index) -> Example, or RowRejected
# ----------------------------------------------------------------------------------------------


def adapt_thought_solution(row: Mapping[str, Any], dataset: str, index: int) -> Example:
    """OpenThoughts-114k / Bespoke-Stratos-17k / Sky-T1_data_17k (`system` is dropped)."""
    turns = _messages(_field(row, "conversations"), "from", "value", drop_system=False)
    prompt, reply = _user_then_assistant(turns)
    before, cot, rest = _split_tagged(reply, THOUGHT_TAGS, "thought")
    if any(tag in before or tag in cot for tag in SOLUTION_TAGS):
        raise RowRejected("tag_order", "solution tags before or inside the thought")
    between, answer, after = _split_tagged(rest, SOLUTION_TAGS, "solution")
    _no_stray_text(before, between, after)
    return _example(dataset, index, prompt, cot, answer)


def adapt_synthetic1(row: Mapping[str, Any], dataset: str, index: int) -> Example:
    """SYNTHETIC-1: `prompt`, `llm_response` = `<think>cot</think>answer` (task type filtered by the loader)."""
    prompt = _prompt(row, "prompt")
    cot, answer = _split_think(_string(row, "llm_response"))
    return _example(dataset, index, prompt, cot, answer)


def adapt_nemotron(row: Mapping[str, Any], dataset: str, index: int) -> Example:
    """Llama-Nemotron SFT math: `input` = [system?, user], `output` = `<think>cot</think>answer`."""
    prompt = _only_user(_messages(_field(row, "input"), "role", "content", drop_system=True))
    cot, answer = _split_think(_string(row, "output"))
    return _example(dataset, index, prompt, cot, answer)


def adapt_jsonl(row: Mapping[str, Any], dataset: str, index: int) -> Example:
    """A user's file: `prompt`/`cot`/`answer` (strings; `prompt` may be a [system?, user] message
    list), or `messages` [system?, user, assistant] with think tags."""
    if row.get("messages") is not None:
        turns = _messages(row["messages"], "role", "content", drop_system=True)
        prompt, reply = _user_then_assistant(turns)
        cot, answer = _split_think(reply)
        return _example(dataset, index, prompt, cot, answer)
    return _example(
        dataset, index, _prompt(row, "prompt"), _string(row, "cot"), _string(row, "answer")
    )


Adapter = Callable[[Mapping[str, Any], str, int], Example]


@dataclass(frozen=True)
class DatasetInfo:
    """One row of the study's dataset table; sizes are docs/paper.md's (Setup; after the < 4k-token filter)."""

    hub_id: str | None
    hf_config: str | None
    split: str
    adapter: Adapter | None  # None: the embedded synthetic corpus, which yields Examples directly
    # Column sets of which at least one must be present (checked once per source, before rows).
    columns: tuple[frozenset[str], ...]
    study_train_size: int | None
    study_val_size: int | None
    # Rows kept by `task_type` when the spec's task_types is None (None: no filter).
    task_types: tuple[str, ...] | None = None


_CONVERSATIONS = (frozenset({"conversations"}),)
_THINK_OUTPUT = (frozenset({"input", "output"}),)
DATASETS: dict[str, DatasetInfo] = {
    "openthoughts": DatasetInfo(
        hub_id="open-thoughts/OpenThoughts-114k",
        hf_config=None,
        split="train",
        adapter=adapt_thought_solution,
        columns=_CONVERSATIONS,
        study_train_size=40000,
        study_val_size=1000,
    ),
    "bespoke": DatasetInfo(
        hub_id="bespokelabs/Bespoke-Stratos-17k",
        hf_config=None,
        split="train",
        adapter=adapt_thought_solution,
        columns=_CONVERSATIONS,
        study_train_size=8000,
        study_val_size=1000,
    ),
    "skyt1": DatasetInfo(
        hub_id="NovaSky-AI/Sky-T1_data_17k",
        hf_config=None,
        split="train",
        adapter=adapt_thought_solution,
        columns=_CONVERSATIONS,
        study_train_size=8000,
        study_val_size=1000,
    ),
    "synthetic1": DatasetInfo(
        hub_id="PrimeIntellect/SYNTHETIC-1",
        hf_config=None,
        split="train",
        adapter=adapt_synthetic1,
        columns=(frozenset({"prompt", "llm_response"}),),
        study_train_size=16000,
        study_val_size=1000,
        task_types=("verifiable_math",),
    ),
    "nemotron": DatasetInfo(
        hub_id="nvidia/Llama-Nemotron-Post-Training-Dataset",
        hf_config="SFT",
        split="math",
        adapter=adapt_nemotron,
        columns=_THINK_OUTPUT,
        study_train_size=16000,
        study_val_size=1000,
    ),
    "jsonl": DatasetInfo(
        hub_id=None,
        hf_config=None,
        split="train",
        adapter=adapt_jsonl,
        columns=(frozenset({"prompt", "cot", "answer"}), frozenset({"messages"})),
        study_train_size=None,
        study_val_size=None,
    ),
    "synthetic": DatasetInfo(
        hub_id=None,
        hf_config=None,
        split="train",
        adapter=None,
        columns=(),
        study_train_size=None,
        study_val_size=None,
    ),
}


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


@dataclass
class LoadedSource:
    """Examples of one source plus what the run manifest needs to name exactly what was read."""

    name: str
    location: str  # hub id, local path, or "embedded"
    hf_config: str | None
    split: str | None
    revision: str | None  # resolved Hub commit where known, else the requested revision
    fingerprint: str | None  # datasets' fingerprint, or a content hash of local files
    examples: list[Example]
    counter: SkipCounter
    # Rows dropped on purpose (e.g. task type), by reason; not errors, so not in `counter`.
    filtered: Counter[str] = field(default_factory=Counter)


def _check_columns(
    name: str, found: Iterable[str], need_one_of: tuple[frozenset[str], ...]
) -> None:
    found = set(found)
    if not need_one_of or any(need <= found for need in need_one_of):
        return
    closest = min(need_one_of, key=lambda need: len(need - found))
    missing = sorted(closest - found)
    options = " or ".join(str(sorted(need)) for need in need_one_of)
    raise DataError(
        f"data={name}: column(s) {missing} not found; this adapter needs {options}; "
        f"columns found: {sorted(found)}"
    )


def _looks_local(path: str) -> bool:
    return path.startswith(("/", ".", "~")) or path.endswith(LOCAL_SUFFIXES) or "\\" in path


def _read_json_file(file: Path) -> Iterator[Any]:
    """JSON Lines (one row per line), or a .json file holding one list of rows.

    Bytes that are not UTF-8 are decoded with `surrogateescape`, so the line still parses and the
    row is rejected as `bad_encoding` by `_example` (counted, like `bad_json`) instead of a
    UnicodeDecodeError ending the run. A `.jsonl` file that holds one JSON array is refused with
    the fix (`.json` reads it), not read as rows that all fail.
    """
    with file.open(encoding="utf-8", errors="surrogateescape") as f:
        if file.suffix == ".json":
            text = f.read()
            if text.lstrip().startswith("["):
                yield from json.loads(text)
                return
            lines: Iterable[str] = text.splitlines()
        else:
            lines = f
        first = True
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if first and file.suffix != ".json":
                _refuse_json_array(file, line)
            first = False
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                yield _BadLine(f"{file.name}:{line_no}: {err.msg}")


def _refuse_json_array(file: Path, first_line: str) -> None:
    """JSON Lines has one object per line; a first line that opens a list (`[` alone, or a whole
    array on one line) means the file is one JSON array, e.g. `json.dump(rows)` saved as .jsonl."""
    if first_line.lstrip().startswith("["):
        raise DataError(
            f"{file}: this .jsonl file holds one JSON array, not one JSON object per line; rename "
            f"it to {file.with_suffix('.json').name} (kdlite reads a .json file holding a list of "
            "rows) or write one object per line"
        )


@dataclass(frozen=True)
class _BadLine:
    """A JSONL line that is not JSON: becomes a `bad_json` rejection with the row's index."""

    detail: str


def _parquet(file: Path) -> Any:
    """A ParquetFile; DataError naming the file when it is cut short or not Parquet (a file is
    all or nothing: its rows cannot be counted one by one like JSONL lines)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as err:
        raise DataError(
            f"{file}: not a readable Parquet file ({err}); a download or copy cut short? "
            "Fetch it again, or remove it from the folder"
        ) from err


def _read_parquet_file(file: Path) -> Iterator[dict[str, Any]]:
    import pyarrow as pa

    try:
        for batch in _parquet(file).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    except pa.ArrowException as err:
        raise DataError(f"{file}: Parquet data unreadable past some rows ({err})") from err


def _hash_files(files: list[Path], root: Path | None = None) -> str:
    """sha256 (16 hex) of the files' names (relative to `root`), sizes and bytes, in order."""
    digest = hashlib.sha256()
    for file in files:
        name = file.relative_to(root).as_posix() if root is not None else file.name
        digest.update(f"{name}\x00{file.stat().st_size}\x00".encode())
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _take(rows: Iterable[Any], limit: int | None) -> Iterator[Any]:
    for index, row in enumerate(rows):
        if limit is not None and index >= limit:
            return
        yield row


def _local_files(root: Path) -> list[Path]:
    if root.is_file():
        if root.suffix not in LOCAL_SUFFIXES:
            raise DataError(f"{root}: unsupported file type; use one of {list(LOCAL_SUFFIXES)}")
        return [root]
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES)
    if not files:
        raise DataError(f"{root}: no {'/'.join(LOCAL_SUFFIXES)} files in this folder")
    return files


def _is_saved_dataset(root: Path) -> bool:
    return root.is_dir() and (
        (root / "dataset_dict.json").is_file() or (root / "state.json").is_file()
    )


def _pick_split(dsdict: Any, split: str, where: str) -> Any:
    if split in dsdict:
        return dsdict[split]
    if len(dsdict) == 1:
        return next(iter(dsdict.values()))
    raise DataError(f"{where}: no split {split!r}; splits found: {sorted(dsdict)} (set data.split)")


def _hub_revision(ds: Any) -> str | None:
    """The commit a Hub dataset was read at: datasets caches it as `…/<version>/<commit sha>/`."""
    for cache_file in getattr(ds, "cache_files", None) or []:
        parent = Path(cache_file.get("filename", "")).parent.name
        if re.fullmatch(r"[0-9a-f]{40}", parent):
            return parent
    return None


@dataclass
class _Rows:
    location: str
    hf_config: str | None  # None for local files, which have no configs
    revision: str | None
    fingerprint: str | None
    columns: list[str] | None  # None: no schema (JSON), columns are inferred from the rows read
    rows: Iterator[Any]


def _dataset_rows(
    ds: Any, location: str, hf_config: str | None, revision: str | None, limit: int | None
) -> _Rows:
    fingerprint = getattr(ds, "_fingerprint", None)
    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))
    return _Rows(location, hf_config, revision, fingerprint, list(ds.column_names), iter(ds))


def _open_local(local: Path, split: str, revision: str | None, limit: int | None) -> _Rows:
    if _is_saved_dataset(local):
        import datasets

        ds = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            ds = _pick_split(ds, split, str(local))
        return _dataset_rows(ds, str(local), None, revision, limit)
    files = _local_files(local)
    columns: list[str] | None = None
    if all(f.suffix == ".parquet" for f in files):
        columns = sorted({name for f in files for name in _parquet(f).schema_arrow.names})
    chained = (
        row
        for f in files
        for row in (_read_parquet_file(f) if f.suffix == ".parquet" else _read_json_file(f))
    )
    fingerprint = _hash_files(files, local if local.is_dir() else local.parent)
    return _Rows(str(local), None, revision, fingerprint, columns, _take(chained, limit))


def _open_hub(
    name: str,
    hub_id: str,
    hf_config: str | None,
    split: str,
    revision: str | None,
    limit: int | None,
) -> _Rows:
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, name=hf_config, split=split, revision=revision)
    except Exception as err:  # offline, missing, gated, renamed: one actionable message
        raise DataError(
            f"data={name}: could not load {hub_id} (config={hf_config}, split={split}, "
            f"revision={revision}) from the Hugging Face Hub or its cache: "
            f"{type(err).__name__}: {err}. Offline or no access? Download it elsewhere and point "
            f"kdlite at the local copy: data.path=/path/to/file.jsonl (also .json, .parquet, a "
            f"folder of those, or a datasets.save_to_disk folder)."
        ) from err
    return _dataset_rows(ds, hub_id, hf_config, _hub_revision(ds) or revision, limit)


def _load_synthetic(name: str, spec: DataSpec) -> LoadedSource:
    from kdlite.data.synthetic import generate_examples

    size, limit = spec.synthetic_size, spec.limit
    if size is None:
        raise DataError(f"data={name}: set data.synthetic_size (number of examples to generate)")
    n = size if limit is None else min(size, limit)
    examples = list(generate_examples(n=n, seed=spec.seed, answer_form=spec.synthetic_answer_form))
    counter = SkipCounter(name)
    for _ in examples:
        counter.accept()
    digest = hashlib.sha256("\n".join(e.source_id for e in examples).encode()).hexdigest()[:16]
    return LoadedSource(name, "embedded", None, None, "embedded", digest, examples, counter)


def source_content(spec: DataSpec) -> dict[str, Any]:
    """What the rows a spec names are, read cheaply before they are parsed: the key of caches built
    from them (the tokenised data cache), recorded in the run's manifest.

    - local files: each file's path, size and mtime (`files`, for the manifest), and a sha256 of
      their names, sizes and bytes (`sha256`, the key), so a file edited in place (same path, new
      rows) gets a new key even when its size and mtime are restored, and a `touch` alone does not
      (hashing, not parsing: 1.5 s for 300 MB on one busy core of the build machine);
    - a Hub dataset: the commit the loader will read (`data.revision` when it is a commit sha, else
      the Hub's answer for the branch, or the commit the local cache holds when offline);
    - the embedded corpus: a hash of its generator's source.

    `resolved` is False when the content cannot be told (a Hub branch with no network and no cache
    entry): a new upstream revision could then be served from an old cache, which is logged.
    """
    name = spec.name
    info = DATASETS.get(name)
    if info is None:
        return {"kind": "unknown", "resolved": False}
    if info.adapter is None:
        from kdlite.data import synthetic

        source = Path(str(synthetic.__file__)).read_bytes()
        return {
            "kind": "embedded",
            "generator": hashlib.sha256(source).hexdigest()[:16],
            "resolved": True,
        }
    location = spec.path or info.hub_id
    if location is None:
        return {"kind": "unknown", "resolved": False}
    local = Path(str(location)).expanduser()
    if local.exists():
        root = local if local.is_dir() else local.parent
        saved = _is_saved_dataset(local)
        files = sorted(p for p in local.rglob("*") if p.is_file()) if saved else _local_files(local)
        stats = [
            [f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns] for f in files
        ]
        return {
            "kind": "saved_dataset" if saved else "local",
            "path": str(local.resolve()),
            "files": stats,
            "sha256": _hash_files(files, root),
            "resolved": True,
        }
    if _looks_local(str(location)):
        return {"kind": "local", "path": str(location), "resolved": False}  # load reports it
    revision = _resolve_hub_revision(str(location), spec.revision)
    if revision is None:
        log.warning(
            "data=%s: cannot tell which commit of %s would be read (offline, nothing cached); "
            "pin data.revision=<commit sha> so a new Hub revision is never served from an old "
            "tokenised cache",
            name,
            location,
        )
    return {
        "kind": "hub",
        "id": str(location),
        "revision": revision,
        "resolved": revision is not None,
    }


def _resolve_hub_revision(hub_id: str, revision: str | None) -> str | None:
    """The commit sha a branch/tag of a Hub dataset points to, or None when it cannot be told."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    from huggingface_hub import HfApi, constants

    if not constants.HF_HUB_OFFLINE:
        try:
            sha = HfApi().dataset_info(hub_id, revision=revision, timeout=10).sha
        except Exception:  # noqa: BLE001 - unreachable or private: fall back to the local cache
            sha = None
        if sha:
            return str(sha)
    ref = Path(constants.HF_HUB_CACHE) / f"datasets--{hub_id.replace('/', '--')}" / "refs"
    try:
        sha = (ref / (revision or "main")).read_text().strip()
    except OSError:
        return None
    return sha if re.fullmatch(r"[0-9a-f]{40}", sha) else None


def load_examples(spec: DataSpec) -> LoadedSource:
    """Read the source `spec` names (its name, path, revision, hf_config, split, task_types, limit,
    synthetic_size and seed; the sizes are the data module's) into Examples, counting bad rows.

    Raises DataError for an unknown name (before any I/O), a missing column, an unreachable Hub
    dataset, or a source where most rows are rejected.
    """
    name = spec.name
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {sorted(DATASETS)}")
    info = DATASETS[name]
    if info.adapter is None:
        loaded = _load_synthetic(name, spec)
        log.info("%s: %d examples (embedded corpus)", name, len(loaded.examples))
        return loaded

    path, revision = spec.path, spec.revision
    limit = spec.limit
    split = spec.split or info.split
    hf_config = spec.hf_config or info.hf_config
    task_types = spec.task_types
    if task_types is None and info.task_types is not None:
        task_types = list(info.task_types)
    need = info.columns
    if task_types is not None:
        need = tuple(cols | {"task_type"} for cols in need)

    location = str(path) if path is not None else info.hub_id
    if location is None:
        raise DataError(f"data={name} reads a local file: set data.path=/path/to/file.jsonl")
    local = Path(location).expanduser()
    if local.exists():
        source = _open_local(local, split, revision, limit)
    elif _looks_local(location):
        raise DataError(f"data={name}: local path {location} does not exist")
    else:
        source = _open_hub(name, location, hf_config, split, revision, limit)
    if source.columns is not None:
        _check_columns(name, source.columns, need)

    counter, filtered, examples = SkipCounter(name), Counter[str](), []
    keys_seen: set[str] = set()
    types_seen: Counter[Any] = Counter()
    for index, row in enumerate(source.rows):
        try:
            if isinstance(row, _BadLine):
                raise RowRejected("bad_json", row.detail)
            if not isinstance(row, Mapping):
                raise RowRejected("not_an_object", type(row).__name__)
            keys_seen.update(row)
            if task_types is not None:
                types_seen[row.get("task_type")] += 1
                if row.get("task_type") not in task_types:
                    filtered["task_type_filtered"] += 1
                    continue
            examples.append(info.adapter(row, name, index))
            counter.accept()
        except RowRejected as err:
            counter.reject(index, err)

    if source.columns is None and (keys_seen or counter.seen):
        _check_columns(name, keys_seen, need)
    if filtered:
        log.info("%s: %d rows filtered %s", name, sum(filtered.values()), dict(filtered))
    if counter.rejected:
        log.warning(
            "%s: %d of %d rows rejected %s",
            name,
            counter.rejected,
            counter.seen,
            dict(counter.reasons),
        )
    counter.check()
    if not examples:
        hint = f"; task types found: {dict(types_seen)}, kept: {task_types}" if types_seen else ""
        raise DataError(f"data={name}: no usable rows in {source.location}{hint}")
    log.info(
        "%s: %d examples from %s (revision %s)",
        name,
        len(examples),
        source.location,
        source.revision,
    )
    return LoadedSource(
        name,
        source.location,
        source.hf_config,
        split,
        source.revision,
        source.fingerprint,
        examples,
        counter,
        filtered,
    )
