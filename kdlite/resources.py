"""Every model and tokenizer a run needs, checked before anything loads.

Offline (HF_HUB_OFFLINE=1), a Hub id resolves only from the local Hugging Face cache, and a missing
one used to surface as the last line of a long traceback, one resource at a time. `check(cfg)`
looks at all of them first (the pair's tokenizer, the teacher unless lam = 0 or it is bootstrapped,
the student) and raises one `ModelLoadError` that names each missing resource, the command that
fetches it (`hf download <repo>`, the huggingface_hub CLI) and the key that points at a local folder
instead (`pair.teacher.name=/path`). Online, a Hub id is left to the loaders (they download it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kdlite.models import ModelLoadError

OFF = ("", "0", "false", "no", "off")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in OFF


def _looks_local(name: str) -> bool:
    return (
        name.startswith(("/", ".", "~")) or Path(name).expanduser().exists() or name.count("/") != 1
    )


def _cached(repo: str, revision: str | None, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo, filename, revision=revision)
    except ValueError:  # not a valid repo id
        return False
    return isinstance(found, str)


def needed(cfg: Any) -> list[tuple[str, str, str | None, str]]:
    """(key, name, revision, file that must exist) of each resource given by name."""
    pair = cfg.pair
    out: list[tuple[str, str, str | None, str]] = []
    if pair.tokenizer != "embedded":
        out.append(("pair.tokenizer", str(pair.tokenizer), None, "tokenizer_config.json"))
    roles = ["student"]
    source = str(getattr(cfg.teacher, "value", cfg.teacher))  # online | cache (no teacher loads)
    if float(cfg.lam) > 0 and not pair.teacher.bootstrap and source != "cache":
        roles.insert(0, "teacher")
    for role in roles:
        m = pair[role]
        if m.shape is None and m.name:
            out.append((f"pair.{role}.name", str(m.name), m.revision, "config.json"))
    return out


def missing(cfg: Any) -> list[str]:
    """One line per resource that cannot be found: what, why, and what to do."""
    problems = []
    for key, name, revision, filename in needed(cfg):
        what = "tokenizer" if key == "pair.tokenizer" else f"{key.split('.')[1]} model"
        if _looks_local(name):
            folder = Path(name).expanduser()
            if not (folder / filename).is_file():
                problems.append(
                    f"{what} {name}: no {filename} in that folder -> set {key}=<a local folder>"
                )
        elif _offline() and not _cached(name, revision, filename):
            problems.append(
                f"{what} {name}: not in the local Hugging Face cache (HF_HUB_OFFLINE=1) -> "
                f"`hf download {name}` on a machine with network, or set {key}=<a local folder>"
            )
    return problems


def check(cfg: Any) -> None:
    """Raise one ModelLoadError naming every missing model and tokenizer (see the module doc)."""
    problems = missing(cfg)
    if problems:
        raise ModelLoadError(
            f"{len(problems)} of the run's models/tokenizers cannot be found:\n  "
            + "\n  ".join(problems)
        )
