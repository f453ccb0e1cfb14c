"""One writer at a time: an advisory lock file holding the writer's PID.

`fcntl.flock` is released by the kernel when the process dies, however it dies, so a killed `tmv index`
never leaves a stale lock behind; the PID written into the file is only there for the message a second
writer shows ("index is locked by PID N"). Readers (`tmv search`) never take the lock: they read a
consistent snapshot instead (see catalog.py and search.py).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from tinymvlm.errors import TmvError

LOCK_NAME = "lock"
STALE_PREFIXES = (".manifest.json.", ".images.", ".captions.")  # atomic-write temp files of an index


class IndexLock:
    """Exclusive lock on an index folder; use as a context manager."""

    def __init__(self, folder: Path, wait: bool = False, poll_s: float = 0.2) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.wait = wait
        self.poll_s = poll_s
        self._fd: int | None = None

    def holder(self) -> int | None:
        """The PID recorded by the current holder, if readable."""
        try:
            return int(self.path.read_text(encoding="ascii").strip() or 0) or None
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not self.wait:
                    os.close(fd)
                    pid = self.holder()
                    who = f"PID {pid}" if pid else "another process"
                    raise TmvError(f"index {self.path.parent} is locked by {who} (another 'tmv index' is running); "
                                   "wait for it to finish or pass --wait") from None
                time.sleep(self.poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        for stale in self.path.parent.glob(".*.tmp"):  # temp files of a writer killed mid-write (atomic.py)
            if stale.name.startswith(STALE_PREFIXES):
                stale.unlink(missing_ok=True)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def held_by_other(self) -> bool:
        """True when some other process holds the lock right now (a reader's hint, not a guarantee)."""
        if self._fd is not None or not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def __enter__(self) -> "IndexLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
