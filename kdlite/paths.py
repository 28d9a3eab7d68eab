"""Where kdlite keeps things it builds once and reuses: the embedded tokenizer, the bootstrapped
tiny teacher, tokenised datasets. `KDLITE_CACHE` overrides the default `~/.cache/kdlite`; tests
point it at a temporary folder so they never depend on a previous run.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = Path(os.environ.get("KDLITE_CACHE", Path.home() / ".cache" / "kdlite")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
