"""Finding image files under folders: recursive, hidden and junk folders skipped, symlink loops safe."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Iterable, Iterator

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
JUNK_DIRS = frozenset({".git", "@eaDir", "node_modules", "__MACOSX", "$RECYCLE.BIN", "System Volume Information"})


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def printable(path: str) -> str:
    """`path` for people to read: bytes of a file name that are not UTF-8 (which Python spells as
    surrogate escapes, and which no UTF-8 text can hold) shown as U+FFFD."""
    try:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate no file name has
        return path.encode("utf-8", "replace").decode("utf-8")


def _excluded(path: str, root: str, patterns: Iterable[str]) -> bool:
    """A glob matches the base name, or the path below `root` with a leading separator, so that
    `*/thumbnails/*` and `/thumbnails` both reach a folder right under the root too."""
    rel = os.sep + os.path.relpath(path, root)
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel[1:], p) or fnmatch.fnmatch(name, p) for p in patterns)


def iter_image_files(root: str | Path, exclude: Iterable[str] = ()) -> Iterator[Path]:
    """Yield image files under `root` in a stable (sorted) order. Hidden and junk folders are
    skipped; `exclude` globs match a path relative to `root` or a base name; a folder reached twice
    through symlinks is walked once. An image-named symlink that cannot be followed (dangling, or a loop)
    is yielded too, so that whoever opens it reports why it failed."""
    root = os.fspath(root)
    patterns = tuple(exclude)
    if os.path.isfile(root):
        if is_image_name(root):
            yield Path(root)
        return
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith(".") or _excluded(entry.path, root, patterns):
                continue
            try:
                is_dir = entry.is_dir()
                is_file = entry.is_file()
            except OSError:  # a symlink loop: yielded, so the caller reports it instead of losing it
                is_dir, is_file = False, is_image_name(entry.name)
            if (not (is_dir or is_file) and entry.is_symlink() and is_image_name(entry.name)
                    and not os.path.exists(entry.path)):
                is_file = True  # a dangling link: reported by the caller, not silently dropped
            # A link to a FIFO, socket or device is no image file, as those are not: opening one can block.
            if is_dir:
                if entry.name not in JUNK_DIRS:
                    subdirs.append(entry.path)
            elif is_file and is_image_name(entry.name):
                yield Path(entry.path)
        stack.extend(reversed(subdirs))
