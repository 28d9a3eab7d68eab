"""The teacher-cache build driven from a test, under `torchrun` (N processes) or plain `python`.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \
        tests/distributed/cache_driver.py KILL -- key=value ...

Runs `python -m kdlite.cli.cache_teacher key=value ...` (`kdlite.cli.cache_teacher.main`). With KILL = 1
every rank ends with `os._exit(17)` right after its first shard is complete, after a barrier so
that which shards are complete is deterministic (shards 0 … world − 1): a kill, not a clean stop
(no manifest, no clean-up, torchrun reports the failure).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import kdlite.teacher_cache as teacher_cache  # noqa: E402
from kdlite.cli.cache_teacher import main as cache_teacher  # noqa: E402


def kill_after_first_shard(shard: int) -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(17)


def main() -> None:
    args = sys.argv[1:]
    split = args.index("--")
    if args[:split] == ["1"]:
        build = teacher_cache.build_cache  # cache_teacher imports it from the module at call time
        teacher_cache.build_cache = functools.partial(build, on_shard=kill_after_first_shard)
    cache_teacher(args[split + 1 :])


if __name__ == "__main__":
    main()
