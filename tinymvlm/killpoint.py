"""Test-only kill points: with `TMV_KILL_AT=PATTERN` (or `PATTERN#N`) in its environment a process
SIGKILLs itself the first (or Nth) time it reaches a point whose name matches PATTERN (fnmatch).

The points:
* every atomic write, named by its file, after the temp file is written and fsynced and before it is
  renamed over the file (`latest.safetensors`, `images.*.faiss`, `manifest.json`);
* `merge shard I`, after a merge copied shard I's rows into its open transaction;
* `index command`, once `tmv index` has imported what it needs and before it touches the disk;
* `model load`, as an index starts loading its model (in `tmv index`, with the lock held);
* `download FILE`, after each block of a hub model's FILE is written to its .part file.
Tests stop a process exactly there, by event rather than by timing. Unset, a point costs one
environment lookup.
"""

from __future__ import annotations

import fnmatch
import os
import signal

ENV = "TMV_KILL_AT"
_hits: dict[str, int] = {}


def reached(point: str) -> None:
    """Die here if TMV_KILL_AT names this point (this time)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    pattern, _, nth = wanted.partition("#")
    if not fnmatch.fnmatchcase(point, pattern):
        return
    _hits[wanted] = _hits.get(wanted, 0) + 1
    if _hits[wanted] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
