"""evaluate.py's command line before Hydra reads it: run directories as the shell completes them.

Run directories are named after their overrides (`runs/optim.max_steps=120`,
`runs/demo/crop=right,lsp=0.5`), and Hydra's override parser refuses `=` and `,` inside an unquoted
value. `rewrite_argv` turns what a user types into overrides Hydra accepts:

- an argument that is an existing directory is a model: `python evaluate.py runs/demo/*`; so is
  one without `=` (a Hub id, `Qwen/Qwen3-4B-Base`);
- `model=a,b` splits at the commas that separate existing paths, longest path first, so
  `model=runs/demo/crop=right,lsp=0.5,Qwen/Qwen3-4B-Base` is two models; a piece that is not a path
  (a Hub id) stands alone. The same holds for `sweep=`;
- all of them become one quoted Hydra list, `model=['runs/demo/crop=right,lsp=0.5',...]`;
- `bench=aime24,aime25` becomes the list `bench=[aime24,aime25]` (one engine serves every
  benchmark of a model; Hydra would otherwise read it as a sweep and refuse it without -m).

A value already written as a Hydra list or quoted (`model=[...]`, `"model='...'"`) is left as typed,
and so is everything under `-m`/`--multirun`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

PATH_KEYS = ("model", "sweep")
# Hydra flags that take the next argument as their value.
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-dir", "-cd"}


class ArgvError(ValueError):
    """An argument that is neither an override nor an existing directory."""


def split_paths(value: str, exists: Callable[[str], bool]) -> list[str]:
    """`a,b,c` -> items, joining comma-separated pieces into the longest existing path first."""
    parts = value.split(",")
    items, i = [], 0
    while i < len(parts):
        for j in range(len(parts), i, -1):
            candidate = ",".join(parts[i:j])
            if j == i + 1 or exists(candidate):
                items.append(candidate)
                i = j
                break
    return [item for item in items if item]


def quote(item: str) -> str:
    """A Hydra single-quoted string (`=`, `,`, `/` and spaces allowed inside)."""
    return "'" + item.replace("'", "\\'") + "'"


def _is_override(arg: str) -> bool:
    """`key=value`, `+key=value`, `~key`, `hydra/group=x`; not `runs/lsp=0.5` (a path's `=`)."""
    key = arg.lstrip("+~").split("=", 1)[0]
    if arg.startswith(("+", "~")) or key.startswith("hydra"):
        return True
    return "=" in arg and "/" not in key


def rewrite_argv(argv: list[str], exists: Callable[[str], bool] | None = None) -> list[str]:
    """See the module docstring. Raises ArgvError for a bare argument that is no directory."""
    if any(a in ("-m", "--multirun") for a in argv):
        return list(argv)
    is_dir = exists or (lambda p: Path(p).expanduser().is_dir())
    out: list[str] = []
    paths: dict[str, list[str]] = {key: [] for key in PATH_KEYS}
    seen: set[str] = set()
    skip_next = False
    for arg in argv:
        if skip_next or arg.startswith("-"):
            out.append(arg)
            skip_next = arg in FLAGS_WITH_VALUE
            continue
        if is_dir(arg) or ("=" not in arg and not arg.startswith("~")):
            paths["model"].append(arg)  # a run directory (`=`, `,` inside), a folder, a Hub id
            seen.add("model")
            continue
        if not _is_override(arg):
            raise ArgvError(
                f"{arg!r} is neither key=value nor an existing directory "
                "(pass run directories as they are, or model=<dir>)"
            )
        key, value = arg.split("=", 1)
        if key in PATH_KEYS and value[:1] not in "[\"'":
            paths[key] += split_paths(value, is_dir)
            seen.add(key)
        elif key == "bench" and "," in value and value[:1] not in "[\"'":
            out.append(f"bench=[{value}]")
        else:
            out.append(arg)
    for key in PATH_KEYS:
        if key in seen:
            out.append(f"{key}=[{','.join(quote(p) for p in paths[key])}]")
    return out
