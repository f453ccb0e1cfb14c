"""Finding image files under folders: recursive, hidden and junk folders skipped, symlink loops safe.

Which files are pictures is decided by the decoders installed, once per process: every still format
Pillow opens (its registered extensions, less video, documents and the formats it only names), HEIC/HEIF
through pillow-heif and AVIF through Pillow (or pillow-heif where Pillow lacks it), and camera RAW files
through rawpy (LibRaw). Names alone decide: a file of any other extension is never opened, and the walk
hands it back as passed over, with its kind, so nothing is left out silently.
"""

from __future__ import annotations

import fnmatch
import functools
import mimetypes
import os
from pathlib import Path
from typing import Iterable, Iterator

JUNK_DIRS = frozenset({".git", "@eaDir", "node_modules", "__MACOSX", "$RECYCLE.BIN", "System Volume Information"})
# Camera RAW formats LibRaw reads (its list of supported cameras' extensions).
RAW_EXTENSIONS = frozenset({
    ".3fr", ".ari", ".arw", ".bay", ".cap", ".cr2", ".cr3", ".crw", ".dcr", ".dcs", ".dng", ".drf", ".eip",
    ".erf", ".fff", ".gpr", ".iiq", ".k25", ".kdc", ".mdc", ".mef", ".mos", ".mrw", ".nef", ".nrw", ".orf",
    ".pef", ".ptx", ".pxn", ".raf", ".raw", ".rw2", ".rwl", ".rwz", ".sr2", ".srf", ".srw", ".sti", ".x3f"})
# Pillow formats that are no pictures of a photo folder: video (MPEG, FLI animations), documents that
# need Ghostscript (EPS), IPTC metadata, and Windows-only metafiles.
NOT_PICTURES = frozenset({"MPEG", "FLI", "EPS", "IPTC", "WMF"})
OPENED_AS = {"MPO": "JPEG"}  # registered for saving, opened by another format's opener
# Kinds of the files a walk passes over, by extension first (camera video that the MIME tables miss or
# misname), then by the standard library's built-in MIME table (the same on every machine).
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".mts", ".m2ts", ".3gp", ".wmv", ".mpg",
                              ".mpeg", ".webm", ".flv", ".lrv", ".insv", ".vob", ".mxf", ".dv", ".fli", ".flc"})
DOCUMENT_TYPES = ("text/", "application/pdf", "application/msword", "application/vnd.openxmlformats",
                  "application/vnd.oasis.opendocument", "application/vnd.ms-", "application/rtf",
                  "application/epub", "application/postscript", "application/json", "application/xml")
FILE_KINDS = {"video": "videos", "audio file": "audio files", "document": "documents",
              "picture of an unread format": "pictures of an unread format", "other file": "other files"}


@functools.cache
def register_decoders() -> None:
    """Teach Pillow the optional picture formats installed (HEIC/HEIF, and AVIF where Pillow has no
    AVIF of its own), so that every `Image.open` reads them. Safe to call again."""
    from PIL import Image, features

    try:
        import pillow_heif
    except ImportError:  # a platform without pillow-heif wheels: no HEIC, the rest as usual
        return
    pillow_heif.register_heif_opener()
    if not features.check("avif") and hasattr(pillow_heif, "register_avif_opener"):
        pillow_heif.register_avif_opener()  # pillow-heif < 1.0 with a Pillow built without libavif
    Image.init()


@functools.cache
def picture_extensions() -> frozenset[str]:
    """Every extension (lower case, with its dot) of a picture an installed decoder reads."""
    from PIL import Image, ImageFile

    register_decoders()
    Image.init()

    def opens(fmt: str) -> bool:
        opener = Image.OPEN.get(OPENED_AS.get(fmt, fmt))
        stub = isinstance(opener and opener[0], type) and issubclass(opener[0], ImageFile.StubImageFile)
        return opener is not None and not stub and fmt not in NOT_PICTURES

    found = {ext.lower() for ext, fmt in Image.registered_extensions().items() if opens(fmt)}
    if raw_decoder_installed():
        found |= RAW_EXTENSIONS
    return frozenset(found)


@functools.cache
def raw_decoder_installed() -> bool:
    try:
        import rawpy  # noqa: F401
    except ImportError:
        return False
    return True


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in picture_extensions()


def is_raw_name(name: str) -> bool:
    """A camera RAW file's name: decoded by LibRaw, not by Pillow (which would read its TIFF preview)."""
    return os.path.splitext(name)[1].lower() in RAW_EXTENSIONS


@functools.cache
def _mime_table() -> mimetypes.MimeTypes:
    """Built on first use: making it reads the system's mime.types, which most commands never need."""
    return mimetypes.MimeTypes()


def file_kind(name: str) -> str:
    """What a file that is not a picture holds, by its name: one of FILE_KINDS."""
    ext = os.path.splitext(name)[1].lower()
    mime = _mime_table().guess_type("x" + ext)[0] or ""
    if ext in VIDEO_EXTENSIONS or mime.startswith("video/"):
        return "video"
    if mime.startswith("audio/"):
        return "audio file"
    if mime.startswith(DOCUMENT_TYPES):
        return "document"
    if mime.startswith("image/") or ext in RAW_EXTENSIONS:
        return "picture of an unread format"
    return "other file"


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


def iter_image_files(root: str | Path, exclude: Iterable[str] = (),
                     passed_over: list[Path] | None = None) -> Iterator[Path]:
    """Yield image files under `root` in a stable (sorted) order. Hidden and junk folders are
    skipped; `exclude` globs match a path relative to `root` or a base name; a folder reached twice
    through symlinks is walked once. An image-named symlink that cannot be followed (dangling, or a loop)
    is yielded too, so that whoever opens it reports why it failed. Other files (not hidden, not
    excluded) are appended to `passed_over` when it is given."""
    root = os.fspath(root)
    patterns = tuple(exclude)
    if os.path.isfile(root):
        if is_image_name(root):
            yield Path(root)
        elif passed_over is not None:
            passed_over.append(Path(root))
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
            elif is_file and passed_over is not None:
                passed_over.append(Path(entry.path))
        stack.extend(reversed(subdirs))
