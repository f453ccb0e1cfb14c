"""Splitting `tmv index` across processes or machines: which files a shard owns, where it writes, and
joining torchrun's process group.

Partition rule: a file belongs to shard `blake2b(path relative to its root) mod N`, its root being the
first (sorted) indexed folder that contains it. The hash of the path alone, not a position in a file
list, means every shard decides on its own without seeing the others' files, adding files never moves
existing ones to another shard (so incremental re-runs of a shard stay incremental), and the split is
balanced for any naming scheme.

Layout: shard i of N is a normal index folder at INDEX/shards/i-of-N whose manifest records the
shard, so it is never mistaken for (or updated as) a whole index; merge.py combines the shards into
INDEX itself. Under torchrun, rank r indexes shard r of WORLD_SIZE, all ranks meet at a barrier on a
gloo group (nothing but that barrier crosses between processes, so gloo serves GPU jobs too), and rank
0 merges.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tinymvlm.errors import TmvError

SHARDS_DIR = "shards"
_SHARD_SYNTAX = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_FOLDER_NAME = re.compile(r"^(\d+)-of-(\d+)$")
# Ranks that finish their shard early wait here for the slowest one; torchrun's agent stops the whole
# job if any rank dies, so a long wait never hangs on a dead peer.
BARRIER_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise TmvError(f"shard {self.index}/{self.count} does not exist: use I/N with 0 <= I < N, e.g. 0/4")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        match = _SHARD_SYNTAX.match(text)
        if not match:
            raise TmvError(f"--shard takes I/N (shard I of N, counting from 0), e.g. 0/4, not '{text}'")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"

    def folder(self, index_dir: Path) -> Path:
        return Path(index_dir) / SHARDS_DIR / self.name

    def to_dict(self) -> dict:
        return {"index": self.index, "count": self.count}

    def owns(self, roots: Sequence[str]) -> Callable[[str], bool]:
        """Predicate: does this shard own the file at `path`, found under one of `roots`?"""
        ordered = sorted(roots)
        return lambda path: owner(partition_key(path, ordered), self.count) == self.index


def partition_key(path: str, roots: Sequence[str]) -> str:
    """`path` relative to the first of the sorted `roots` holding it (a file root: its name)."""
    for root in roots:
        if path == root:
            return os.path.basename(path)
        prefix = root.rstrip(os.sep) + os.sep
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


def owner(key: str, count: int) -> int:
    """The shard of a partition key: a stable hash (not Python's salted hash()) mod `count`."""
    digest = hashlib.blake2b(os.fsencode(key), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def shard_folders(index_dir: Path) -> list[Path]:
    """The shard folders under INDEX/shards, all of one shard count (else the caller must choose)."""
    base = Path(index_dir) / SHARDS_DIR
    found = sorted((p for p in base.iterdir() if p.is_dir() and _FOLDER_NAME.match(p.name)) if base.is_dir() else [],
                   key=lambda p: tuple(int(x) for x in _FOLDER_NAME.match(p.name).groups()))
    if not found:
        raise TmvError(f"no shards to merge under {base}; index them first with --shard I/N or under torchrun")
    counts = sorted({int(_FOLDER_NAME.match(p.name).group(2)) for p in found})
    if len(counts) > 1:
        raise TmvError(f"{base} holds shards of {' and '.join(map(str, counts))} processes; "
                       "name the shard folders to merge: tmv index --merge DIR...")
    return found


# ------------------------------------------------------------------------------------------ torchrun

def torchrun_shard() -> Shard | None:
    """This process's shard when launched by torchrun with several processes, else None."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError as exc:
        raise TmvError(f"RANK/WORLD_SIZE from the launcher are not whole numbers: {exc}") from exc
    return Shard(rank, world) if world > 1 else None


@contextlib.contextmanager
def process_group() -> Iterator[Callable[[], None]]:
    """Join torchrun's group (gloo, address from the environment) and yield a barrier; leave on exit."""
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        yield dist.barrier
    finally:
        if created:
            dist.destroy_process_group()


def check_role(folder: Path, manifest: dict, shard: Shard | None) -> None:
    """Refuse to update a shard as a whole index or as another shard: a run drops the catalogue rows
    it does not own, so the wrong role would silently throw away the other shards' files."""
    have = manifest.get("shard")
    if have == (shard.to_dict() if shard is not None else None):
        return
    if shard is None:
        raise TmvError(f"{folder} is shard {have['index']}/{have['count']} of a sharded index: update it with "
                       f"--shard {have['index']}/{have['count']}, or merge the shards with 'tmv index --merge'")
    held = f"shard {have['index']}/{have['count']}" if have else "a whole index, not a shard"
    raise TmvError(f"{folder} holds {held}, not shard {shard}; choose another --index or start it over with --rebuild")
