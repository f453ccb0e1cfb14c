"""One writer at a time: a `filelock` lock file that holds the writer's PID.

The lock is the operating system's (flock on Unix, LockFileEx on Windows, through the filelock
library), released by the kernel when the process dies, however it dies, so a killed `tmv index` never
leaves a stale lock behind; the PID written into the file is only there for the message a second
writer shows ("index is locked by PID N"). Readers (`tmv search`) never take the lock: they read a
consistent snapshot instead (see catalog.py and search.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import filelock

from tinymvlm.errors import TmvError

LOCK_NAME = "lock"
STALE_PREFIXES = (".manifest.json.", ".images.", ".captions.")  # atomic-write temp files of an index


class IndexLock:
    """Exclusive lock on an index folder, created if missing (so take it only once the command's
    inputs are checked: a failing command leaves nothing behind); use as a context manager."""

    def __init__(self, folder: Path, wait: bool = False, poll_s: float = 0.2) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.wait = wait
        self._lock = filelock.FileLock(str(self.path), timeout=-1 if wait else 0, poll_interval=poll_s)

    def holder(self) -> int | None:
        """The PID recorded by the current holder, if readable."""
        try:
            return int(self.path.read_text(encoding="ascii").strip() or 0) or None
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            pid = self.holder()
            who = f"PID {pid}" if pid else "another process"
            raise TmvError(f"index {self.path.parent} is locked by {who} (another 'tmv index' is running); "
                           "wait for it to finish or pass --wait") from None
        self._write_pid(f"{os.getpid()}\n")
        for stale in self.path.parent.glob(".*.tmp"):  # temp files of a writer killed mid-write (atomic.py)
            if stale.name.startswith(STALE_PREFIXES):
                stale.unlink(missing_ok=True)

    def _write_pid(self, text: str) -> None:
        try:
            with open(self.path, "r+", encoding="ascii") as fh:
                fh.truncate(0)
                fh.write(text)
        except OSError:  # Windows refuses a second handle on the locked byte: the message says "another process"
            pass

    def release(self) -> None:
        if self._lock.is_locked:
            self._write_pid("")
            self._lock.release()

    def held_by_other(self) -> bool:
        """True when some other process holds the lock right now (a reader's hint, not a guarantee)."""
        if self._lock.is_locked or not self.path.exists():
            return False
        probe = filelock.FileLock(str(self.path), timeout=0)
        try:
            probe.acquire()
        except filelock.Timeout:
            return True
        except OSError:  # a read-only index: no writer can hold it either
            return False
        probe.release()
        return False

    def __enter__(self) -> "IndexLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
