"""Atomic file writes: a reader or a crash never sees half a file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from tinymvlm import killpoint
from tinymvlm.errors import TmvError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        killpoint.reached(path.name)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


FIGURE_FORMATS = {".png": "png", ".svg": "svg"}


def figure_format(path: str | Path) -> str:
    """'png' or 'svg' by the file's suffix; anything else is an error worth raising before the work."""
    kind = FIGURE_FORMATS.get(Path(path).suffix.lower())
    if kind is None:
        raise TmvError(f"cannot draw {path}: name a .png or .svg file")
    return kind


def write_figure(path: str | Path, figure) -> Path:
    """Save a matplotlib Figure as PNG or SVG (by the file's suffix), atomically: a page or viewer that
    reloads it mid-write still sees the previous drawing."""
    path = Path(path)
    kind = figure_format(path)
    import matplotlib

    with atomic_path(path) as tmp, matplotlib.rc_context({"svg.fonttype": "none"}):  # SVG text stays text
        figure.savefig(tmp, format=kind, dpi=110)
    return path
