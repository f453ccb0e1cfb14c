"""Not Linux-only: the index lock comes from filelock (no fcntl import of our own), the default index
folder from platformdirs (Linux: $XDG_DATA_HOME or ~/.local/share, as before)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tinymvlm.index.store import default_index_dir
from tinymvlm.index.writer_lock import IndexLock

from tinymvlm.errors import TmvError

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, home: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("TMV_INDEX", "XDG_DATA_HOME")}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          env={**clean, "HOME": str(home), **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_default_index_folder_on_linux(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("TMV_INDEX", raising=False)
    assert default_index_dir() == tmp_path / ".local" / "share" / "tinymvlm" / "index"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_index_dir() == tmp_path / "data" / "tinymvlm" / "index"
    monkeypatch.setenv("TMV_INDEX", "~/photos-index")
    assert default_index_dir() == tmp_path / "photos-index"


def test_default_index_folder_follows_the_platform(tmp_path):
    """platformdirs chooses its rules when imported; importing it as on macOS shows the folder follows."""
    where = _python("""
        import sys
        real, sys.platform = sys.platform, "darwin"
        import platformdirs
        sys.platform = real
        from tinymvlm.index.store import default_index_dir
        print(default_index_dir())
    """, tmp_path)
    assert Path(where) == tmp_path / "Library" / "Application Support" / "tinymvlm" / "index"


def test_index_and_its_lock_work_without_fcntl(tmp_path):
    out = _python(f"""
        import sys, warnings
        sys.modules["fcntl"] = None  # as on Windows
        warnings.simplefilter("ignore")
        from tinymvlm.errors import TmvError
        from tinymvlm.index import Index
        from tinymvlm.index.writer_lock import IndexLock
        with IndexLock({str(tmp_path / 'idx')!r}):
            try:
                IndexLock({str(tmp_path / 'idx')!r}).acquire()
            except TmvError as exc:
                print(exc)
    """, tmp_path)
    assert out.startswith(f"index {tmp_path / 'idx'} is locked by PID ")


def test_no_module_of_ours_imports_fcntl():
    sources = [p for folder in ("tinymvlm", "index", "serve", "cli") for p in (ROOT / folder).rglob("*.py")]
    assert sources and not [p for p in sources if "import fcntl" in p.read_text(encoding="utf-8")]


def test_lock_keeps_the_holders_pid_through_failed_attempts(tmp_path):
    with IndexLock(tmp_path / "idx"):
        for _ in range(3):  # a contender that opens the file must not wipe the PID for the next one
            with pytest.raises(TmvError, match=f"is locked by PID {os.getpid()} "):
                IndexLock(tmp_path / "idx").acquire()
            assert IndexLock(tmp_path / "idx").held_by_other()
    assert (tmp_path / "idx" / "lock").read_text() == "" and not IndexLock(tmp_path / "idx").held_by_other()
