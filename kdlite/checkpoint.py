"""Checkpoints a run can trust: written atomically, read weights-only, checked before models load.

- **Save** (`AtomicCheckpointIO`, Lightning's checkpoint plugin): the file is written beside its
  destination as `.<name>.partial`, fsync'ed, then renamed over it (`os.replace`). A kill, a full
  disk or a lost node during a save leaves the previous checkpoint whole; `last.ckpt` is either the
  old complete file or the new complete one. (Lightning's default serialises the whole checkpoint
  into memory, writes it to the system temp folder and moves it: a copy, not a rename, when that
  folder is on another file system, and no fsync.)
- **Load** (`safe_load`): `torch.load(weights_only=True)`. The unpickler then builds only tensors,
  storages, containers and primitives (torch's weights-only set), plus the types in `SAFE_GLOBALS`.
  A checkpoint that names any other callable (a planted `last.ckpt` whose pickle would run a
  command) is refused before anything in it is called. A real kdlite `last.ckpt` (model, AdamW and
  scheduler states, loops, callbacks, data-module and tokens-seen state) needs nothing else: its
  pickle references `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and storages only
  (tests/reliability/test_faults.py checks a real one), so `SAFE_GLOBALS` is empty; a type added to
  the checkpoint later must be added there deliberately.
- **Resume check** (`resume_checkpoint`): before any model loads, `last.ckpt` is opened the same
  way, memory-mapped (no tensor bytes are read), so a truncated, foreign or unsafe file is an error
  naming the file and how to start over, instead of a zip-reader error after both models load.
- **Writability** (`ensure_writable`): the checkpoints folder must take a file before training
  starts, so a multi-day run cannot end with no checkpoint.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

# Types beyond torch's weights-only defaults that a kdlite training checkpoint may hold (none: see
# the module docstring). Listed as objects, as `torch.serialization.safe_globals` takes them.
SAFE_GLOBALS: list[Any] = []

START_OVER = "start over with `resume=false` (the run's checkpoints are rewritten) or delete it"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written, or one refused on load; names the file and the fix."""


def ensure_writable(folder: str | Path) -> Path:
    """Create `folder` and prove a file can be written in it; CheckpointError naming it if not."""
    folder = Path(folder)
    probe = folder / f".kdlite-write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise CheckpointError(
            f"checkpoints folder {folder} is not writable ({err.strerror or err}): the run would "
            "end with no checkpoint to resume from or export. Fix its permissions, or choose "
            "another run_dir=..."
        ) from err
    return folder


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save `obj` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {err}") from err
    except BaseException:  # a kill (KeyboardInterrupt, SystemExit) mid-save: leave no debris
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def safe_load(path: str | Path, map_location: Any = "cpu", *, mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)` with `SAFE_GLOBALS`; CheckpointError naming `path` when the
    file is cut short, not a checkpoint, or holds objects a checkpoint never needs."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        # torch's text also advises `weights_only=False`; only the line naming the object is kept.
        named = [ln.strip() for ln in str(err).splitlines() if "unsupported" in ln.lower()]
        raise CheckpointError(
            f"{path} was refused: it holds objects a checkpoint never needs "
            f"({named[0] if named else 'outside the weights-only allow-list'}). kdlite loads "
            "checkpoints weights-only, so a file planted in a run directory cannot run code. If "
            f"you did not write it, do not trust this run directory; {START_OVER}."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a complete checkpoint ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else 'empty'}): it was cut "
            "short (copied while written, a full disk) or is not a torch checkpoint. kdlite writes "
            f"its own checkpoints atomically, so a kill never leaves one like this; {START_OVER}."
        ) from None


def resume_checkpoint(path: str | Path, resume: bool) -> str | None:
    """The checkpoint to resume from, checked before any model loads, or None (no file, or
    `resume=false`). Opens the file weights-only and memory-mapped: the pickle is read and vetted,
    tensor bytes are not."""
    path = Path(path)
    if not resume or not path.exists():
        return None
    state = safe_load(path, mmap=zipfile.is_zipfile(path))
    keys = state if isinstance(state, dict) else {}
    missing = [k for k in ("state_dict", "loops", "optimizer_states") if k not in keys]
    if missing:
        raise CheckpointError(
            f"{path} is not a resumable training checkpoint (missing {missing}): {START_OVER}."
        )
    del state
    return str(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint plugin: `atomic_save` on save, `safe_load` on load (always weights-only,
    whatever the caller asks for)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                "AtomicCheckpointIO.save_checkpoint takes no storage_options, "
                f"got {storage_options!r}"
            )
        atomic_save(checkpoint, path)

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable | str | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if not Path(path).exists():
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        return safe_load(path, map_location=map_location)
