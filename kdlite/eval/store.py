"""Raw generations of one model x one benchmark as an append-only JSONL that a killed run resumes.

One line per sample: `{"id", "sample", "text", "n_tokens", "finish_reason", "seed", "backend",
"versions"}`. Lines are appended and flushed (and fsync'ed) once per completed batch, so a kill loses
at most the batch in flight: on AIME with vLLM a batch is one problem's 64 samples (~2M tokens at
worst), with transformers `batch_size` sequences. A kill mid-write leaves a partial last line; it is
cut off on open. `protocol.json` beside the file pins what produced it (model, sampling, seed,
prompts): resuming under a different protocol is refused instead of mixing two experiments, and so
is resuming generations whose protocol is unknown (`protocol.json` missing or unreadable: e.g.
copied without it, or written by an older kdlite), since they may come from other settings. A line
that is JSON but not a generation record (a key missing, `"sample": "zero"`) is an error naming
the file and line, like a corrupt middle line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kdlite.eval.benchmarks import EvalError

# Keys every line needs, with their types: what resuming and grading read from a record.
RECORD_KEYS: dict[str, type] = {
    "id": str,
    "sample": int,
    "text": str,
    "n_tokens": int,
    "finish_reason": str,
    "seed": int,
    "backend": str,
}


def _record_key(rec: object, where: str) -> tuple[str, int]:
    """(problem id, sample) of a stored line; EvalError naming `where` if it is not a record."""
    if not isinstance(rec, dict):
        raise EvalError(f"{where}: a JSON {type(rec).__name__}, not a generation record")
    for key, kind in RECORD_KEYS.items():
        if key not in rec:
            raise EvalError(f"{where}: generation record without {key!r}")
        value = rec[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise EvalError(
                f"{where}: {key}={value!r} is a {type(value).__name__}, expected {kind.__name__}"
            )
    if rec["sample"] < 0 or rec["n_tokens"] < 0:
        raise EvalError(f"{where}: sample and n_tokens must be >= 0")
    return rec["id"], rec["sample"]


class GenerationStore:
    def __init__(self, directory: str | Path, protocol: dict) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "generations.jsonl"
        proto_path = self.dir / "protocol.json"
        protocol = json.loads(json.dumps(protocol))  # normalise tuples etc. for the comparison
        has_generations = self.path.is_file() and self.path.stat().st_size > 0
        if has_generations and not proto_path.is_file():
            raise EvalError(
                f"{self.path} exists but {proto_path.name} does not: the protocol its samples were "
                "generated under is unknown, so they cannot be resumed or graded as this call's. "
                "Delete that directory (or the file) to regenerate, or evaluate into another out_dir"
            )
        if has_generations:
            try:
                old = json.loads(proto_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise EvalError(
                    f"{proto_path} is not readable JSON ({err}): the protocol of {self.path} is "
                    "unknown; delete that directory to regenerate, or evaluate into another out_dir"
                ) from None
            if not isinstance(old, dict):
                old = {"protocol.json": old}
            if old != protocol:
                diff = sorted(k for k in set(old) | set(protocol) if old.get(k) != protocol.get(k))
                raise EvalError(
                    f"{self.path} was generated under another protocol (differs in {diff}); "
                    "delete that directory or evaluate into another out_dir"
                )
        proto_path.write_text(json.dumps(protocol, indent=1, sort_keys=True) + "\n")
        self._records: dict[tuple[str, int], dict] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        keep = len(data)
        lines = data.split(b"\n")
        tail = lines.pop()  # bytes after the last newline: empty, or a line cut short by a kill
        if tail:
            try:
                json.loads(tail)
            except json.JSONDecodeError:
                keep = len(data) - len(tail)
            else:
                lines.append(tail)
                keep = len(data) + 1  # valid but unterminated: terminate it
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise EvalError(
                    f"{self.path}:{lineno}: corrupt line in the middle of the file"
                ) from None
            self._records.setdefault(_record_key(rec, f"{self.path}:{lineno}"), rec)
        if keep != len(data):
            with self.path.open("r+b") as f:
                if keep > len(data):
                    f.seek(0, os.SEEK_END)
                    f.write(b"\n")
                else:
                    f.truncate(keep)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[dict]:
        return list(self._records.values())

    def append(self, records: list[dict]) -> None:
        new = [r for r in records if (r["id"], int(r["sample"])) not in self._records]
        if not new:
            return
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        for r in new:
            self._records[(r["id"], int(r["sample"]))] = r
