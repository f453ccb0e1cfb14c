"""Thumbnails for `tmv serve`, made once per file version and kept in a cache folder.

The cache lives outside the index (default $XDG_CACHE_HOME/tinymvlm/thumbs, else ~/.cache/...), so a
read-only index serves thumbnails too, and one cache serves every index. A thumbnail is keyed by the
file's path, size and mtime: an edited photo gets a fresh thumbnail, and entries of deleted files are
merely unused (the folder can be deleted at any time). Files are written atomically, so two requests
racing for the same thumbnail both leave a whole file. When the folder cannot be written, thumbnails are
still made, per request.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

from tinymvlm.atomic import atomic_path
from tinymvlm.data.transform import load_image
from tinymvlm.user_cache import user_cache

log = logging.getLogger(__name__)

THUMB_SIZE = 320


def default_thumb_dir() -> Path:
    return user_cache("thumbs")


def make_thumbnail(path: str, size: int = THUMB_SIZE) -> bytes:
    """JPEG bytes of the image shrunk to fit size x size (upright, transparency on white)."""
    image = load_image(path, draft_size=(size, size))
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=82)
    return buffer.getvalue()


class ThumbnailCache:
    """Thumbnails by file version; `folder` None keeps none (each request makes its own)."""

    def __init__(self, folder: Path | None, size: int = THUMB_SIZE) -> None:
        self.folder, self.size = folder, size
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                probe = folder / f".probe-{os.getpid()}"
                probe.touch()
                probe.unlink()
            except OSError as exc:
                log.warning("thumbnail cache %s is not writable (%s); thumbnails are made per request", folder, exc)
                self.folder = None

    def key(self, path: str) -> str:
        """Names this version of the file (raises OSError when it is gone)."""
        st = os.stat(path)
        ident = b"\0".join([os.fsencode(path), str(st.st_size).encode(), str(st.st_mtime_ns).encode(),
                            str(self.size).encode()])
        return hashlib.sha256(ident).hexdigest()

    def get(self, path: str) -> bytes:
        """JPEG bytes of `path`'s thumbnail; raises OSError or a decoding error for a bad file."""
        key = self.key(path)
        cached = self.folder / key[:2] / f"{key}.jpg" if self.folder is not None else None
        if cached is not None:
            try:
                return cached.read_bytes()
            except FileNotFoundError:
                pass
        data = make_thumbnail(path, self.size)
        if cached is not None:
            try:
                with atomic_path(cached) as tmp:
                    tmp.write_bytes(data)
            except OSError as exc:
                log.warning("cannot cache a thumbnail in %s: %s", self.folder, exc)
        return data
