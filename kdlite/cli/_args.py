"""The one argument style of every program in `kdlite/cli`: Hydra-style `key=value` words.

Each program declares its keys as a dataclass whose fields carry a default and a one-line help
(`arg(default, "help")`); `parse(Keys, argv, ...)` returns a filled instance. Values are typed the
way OmegaConf types a dotlist (`n=40` an int, `judge=true` a bool, `out=null` None) and validated
against the field's type by OmegaConf's structured config; a `str` field keeps the word as written
(`end=<|endoftext|>`). List fields take `[a,b]`, or `a,b` where the field allows commas
(`arg(..., commas=True)`), or one bare value. `choices=` limits a field to named values.

`-h`/`--help` prints the program's summary and every key with its default and help, and exits 0.
A word that is not `key=value`, an unknown key or a bad value exits 2 with a message naming it.
Programs that also take `train.py` (or data) overrides pass `rest=`, a predicate for the keys they
hand on; those words come back unparsed, in order, and the program's compose reports them.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, field, fields
from typing import Any, TypeVar

K = TypeVar("K")


class UsageError(SystemExit):
    """A bad command line: the message goes to stderr, the exit status is 2 (as argparse's)."""

    def __init__(self, prog: str, message: str) -> None:
        print(f"{prog}: error: {message}", file=sys.stderr)
        super().__init__(2)
        self.message = message


def arg(
    default: Any,
    help: str,  # noqa: A002 - the word every CLI library uses
    *,
    choices: Sequence[Any] | None = None,
    commas: bool = False,
) -> Any:
    """A key of a program: its default (lists are copied per instance), one line of help, the
    values allowed (`choices`), and whether `a,b` splits into a list (`commas`)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "commas": commas}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return "(required)"


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return str(value)


def help_text(keys: type, prog: str, doc: str | None, rest: str = "") -> str:
    """`usage`, the program's docstring, then one line per key: `key=default  help`."""
    lines = [f"usage: {prog} [key=value ...]", ""]
    if doc:
        lines += [doc.strip(), ""]
    lines.append("keys (key=default):")
    items = [(f"{f.name}={_shown(_default(f))}", f) for f in fields(keys)]
    width = min(24, max(len(name) for name, _ in items)) + 2  # a longer default: its own line
    for name, f in items:
        note = f.metadata.get("help", "")
        if f.metadata.get("choices"):
            note += f" ({' | '.join(_shown(c) for c in f.metadata['choices'])})"
        fits = len(name) < width
        lines.append(f"  {name:<{width}}{note}" if fits else f"  {name}\n  {'':<{width}}{note}")
    if rest:
        lines += ["", rest]
    return "\n".join(lines)


def _is_str(tp: Any) -> bool:
    return tp is str or (typing.get_origin(tp) is typing.Union and str in typing.get_args(tp))


def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) is typing.Union and type(None) in typing.get_args(tp)


def _value(raw: str, tp: Any, commas: bool) -> Any:
    """One word's value for a field of type `tp` (before OmegaConf's type check)."""
    from omegaconf import OmegaConf

    if raw == "null" and _optional(tp):
        return None
    # `list[X]` or `list[X] | None`: the list type itself
    lists = [t for t in (tp, *typing.get_args(tp)) if typing.get_origin(t) is list]
    if lists:
        if raw.startswith("["):
            return OmegaConf.from_dotlist([f"v={raw}"])["v"]
        items = raw.split(",") if commas else [raw]
        (item_type,) = typing.get_args(lists[0])
        return [v if _is_str(item_type) else _value(v, item_type, False) for v in items]
    if _is_str(tp):
        return raw
    return OmegaConf.from_dotlist([f"v={raw}"])["v"]


def parse(
    keys: type[K],
    argv: Sequence[str],
    *,
    prog: str,
    doc: str | None,
    rest: Callable[[str], bool] | None = None,
    rest_help: str = "",
) -> tuple[K, list[str]]:
    """(the program's keys filled from argv, the words handed on) — see the module docstring."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if any(a in ("-h", "--help") for a in argv):
        print(help_text(keys, prog, doc, rest_help))
        raise SystemExit(0)
    hints = typing.get_type_hints(keys)
    known = {f.name: f for f in fields(keys)}  # type: ignore[arg-type]  # a dataclass type
    given: dict[str, Any] = {}
    passed: list[str] = []
    for word in argv:
        key, sep, raw = word.partition("=")
        if key in known and sep:
            f = known[key]
            try:
                given[key] = _value(raw, hints[key], f.metadata.get("commas", False))
            except OmegaConfBaseException as err:
                raise UsageError(prog, f"{word}: {str(err).splitlines()[0]}") from None
            choices = f.metadata.get("choices")
            if choices and given[key] not in choices:
                allowed = ", ".join(_shown(c) for c in choices)
                raise UsageError(prog, f"{word}: {key} must be one of {allowed}")
        elif rest is not None and sep and rest(key):
            passed.append(word)
        else:
            what = f"unknown key {key!r}" if sep else f"{word!r} is not key=value"
            raise UsageError(prog, f"{what}; keys: {', '.join(known)} (see --help)")
    schema = OmegaConf.structured(keys)
    try:
        merged = OmegaConf.merge(schema, OmegaConf.create(given))
    except OmegaConfBaseException as err:
        bad = getattr(err, "full_key", None) or "?"
        shown = f"{bad}={argv_value(argv, bad)}" if bad in given else bad
        raise UsageError(prog, f"{shown}: {str(err).splitlines()[0]}") from None
    missing = [k for k in known if OmegaConf.is_missing(merged, k)]
    if missing:
        raise UsageError(prog, f"missing key(s) {', '.join(missing)} (see --help)")
    return typing.cast(K, OmegaConf.to_object(merged)), passed


def argv_value(argv: Sequence[str], key: str) -> str:
    """The value as written on the command line for `key` (the last one given)."""
    values = [w.partition("=")[2] for w in argv if w.partition("=")[0] == key]
    return values[-1] if values else ""


def parse_keys(keys: type[K], argv: Sequence[str], *, prog: str, doc: str | None) -> K:
    """`parse` for a program that takes only its own keys."""
    return parse(keys, argv, prog=prog, doc=doc)[0]


def argv_or_sys(argv: Sequence[str] | None) -> list[str]:
    """The words a `main(argv=None)` reads: its argument, or the process's command line."""
    return list(sys.argv[1:] if argv is None else argv)


def compose_errors(prog: str):
    """A context in which a Hydra compose error (unknown key, bad value, missing group option) of
    the overrides a program hands on becomes a `UsageError` naming it."""
    from contextlib import contextmanager

    from hydra.errors import HydraException

    @contextmanager
    def guard():
        try:
            yield
        except HydraException as err:
            raise UsageError(prog, str(err).split("\nConfig search path")[0].strip()) from None

    return guard()
