"""Image-caption pairs from a pairs file (TSV/CSV/JSONL), an image folder with sidecar captions, or a
Hugging Face dataset (Flickr30k's hub schemas included).

Every source becomes a PairSet: one entry per image with all of its captions. Bad rows are skipped
and recorded with their row number and reason; the caller decides how to report them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

from PIL import Image

from tinymvlm.data.sources import (
    CAPTION,
    IMAGE_KEYS,
    SourceKind,
    TextRole,
    find_image_column,
    open_dataset,
    pick_column,
    source_kind,
)
from tinymvlm.data.transform import load_image, to_rgb
from tinymvlm.errors import TmvError, first_line
from tinymvlm.image_files import is_image_name, iter_image_files

FLICKR30K = "nlphuji/flickr30k"
KEY_COLUMNS = ("img_id", "image_id", "filename", "id")  # a dataset column naming each image, when there is one
PAIRS_SUFFIXES = {".tsv": "\t", ".txt": "\t", ".csv": ",", ".jsonl": "json", ".json": "json"}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # control characters: spaces in a caption


@dataclass(frozen=True)
class Skip:
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class FileImages:
    """Images stored as files; picklable, so DataLoader workers can open them."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def open(self, i: int, draft_size: tuple[int, int] | None = None) -> Image.Image:
        return load_image(self.paths[i], draft_size)

    def describe(self, i: int) -> str:
        return str(self.paths[i])

    def digest(self, i: int) -> bytes:
        """A hash of the file's bytes: the image's identity wherever the file or its pairs file sits."""
        with open(self.paths[i], "rb") as fh:
            return hashlib.file_digest(fh, _blake2b).digest()

    def subset(self, indices: Sequence[int]) -> "FileImages":
        return FileImages([self.paths[i] for i in indices])


class DatasetImages:
    """Images in a column of a Hugging Face dataset (decoded PIL images, or dicts of bytes/path)."""

    def __init__(self, dataset, column: str, rows: Sequence[int]) -> None:
        self.dataset = dataset.select_columns([column])
        self.column = column
        self.rows = list(rows)

    def open(self, i: int, draft_size: tuple[int, int] | None = None) -> Image.Image:
        value = self.dataset[self.rows[i]][self.column]
        if isinstance(value, dict):
            value = Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else value["path"]
        if isinstance(value, (str, Path)):
            return load_image(value, draft_size)
        value.load()
        return to_rgb(value)

    def describe(self, i: int) -> str:
        return f"row {self.rows[i]}"

    def digest(self, i: int) -> bytes:
        """A hash of the image's encoded bytes as the dataset stores them (read undecoded)."""
        return _blake2b(image_bytes(self._stored[self.rows[i]][self.column])).digest()

    @cached_property
    def _stored(self):
        """The dataset with this column's images left as their stored bytes."""
        return _undecoded(self.dataset, self.column)

    def subset(self, indices: Sequence[int]) -> "DatasetImages":
        out = DatasetImages.__new__(DatasetImages)
        out.dataset, out.column, out.rows = self.dataset, self.column, [self.rows[i] for i in indices]
        return out


def _undecoded(dataset, column: str):
    """`dataset` (or a stream) with `column`'s images left as their stored bytes, undecoded."""
    if type(dataset.features[column]).__name__ != "Image":
        return dataset
    import datasets

    return dataset.cast_column(column, datasets.Image(decode=False))


@dataclass
class PairSet:
    """Images (with stable keys) and all of each image's captions."""

    name: str
    keys: list[str]
    captions: list[list[str]]
    images: FileImages | DatasetImages
    skipped: list[Skip] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)  # where each image was first listed ("file:row"), if known

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def num_captions(self) -> int:
        return sum(len(c) for c in self.captions)

    def subset(self, indices: Sequence[int], name: str | None = None, skipped: list[Skip] | None = None) -> "PairSet":
        """The images at `indices`; the rows skipped while reading the source come along (or `skipped`)."""
        return PairSet(name or self.name, [self.keys[i] for i in indices], [self.captions[i] for i in indices],
                       self.images.subset(indices), list(self.skipped if skipped is None else skipped),
                       [self.origins[i] for i in indices] if self.origins else [])

    def split(self, fraction: float, workers: int = 4) -> tuple["PairSet", "PairSet"]:
        """Hold out about `fraction` of the images, chosen by a hash of each image's content (its file's
        bytes, or a dataset's encoded image bytes): the same image always lands on the same side,
        whatever the order, the other rows, the pairs file's folder, the working folder or the process
        (no salted `hash()`), and copies of one image land together. The source's skipped rows go
        with the training side only, so they are reported once."""
        with ThreadPoolExecutor(workers) as pool:
            units = list(pool.map(self._unit, range(len(self))))
        held = [i for i, u in enumerate(units) if u < fraction]
        kept = [i for i, u in enumerate(units) if u >= fraction]
        return self.subset(kept, f"{self.name} (train)"), self.subset(held, f"{self.name} (val)", skipped=[])

    def _unit(self, i: int) -> float:
        """Image i's place in [0, 1): its content hash; an image that cannot be read (it is dropped
        later, whichever side it lands on) falls back to its key."""
        try:
            digest = self.images.digest(i)
        except OSError:
            digest = _blake2b(self.keys[i].encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64


def _blake2b(data: bytes = b"") -> "hashlib.blake2b":
    return hashlib.blake2b(data, digest_size=16)


def image_bytes(image) -> bytes:
    """The bytes that identify an image value of a dataset: its encoded bytes, its file's bytes, or
    (a decoded image) its pixels as PNG."""
    if isinstance(image, dict):
        if image.get("bytes"):
            return image["bytes"]
        image = image.get("path")
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if image is None:
        raise OSError("the row holds no image")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ dispatch


def load_pairs(source: str | None, image_root: str | None = None, image_column: str | None = None,
               caption_column: str | None = None, split: str | None = None, check_images: bool = True,
               role: TextRole = CAPTION) -> PairSet:
    """Open any supported data source. None means Flickr30k's train split from the hub. `role`: what
    the text column holds (captions, or labels for zero-shot), which names it in errors."""
    if source is None:
        return load_hf_dataset(FLICKR30K, split or "train", image_column, caption_column, role)
    kind = source_kind(source)
    path = Path(source).expanduser()
    if kind is SourceKind.FILE:
        if path.suffix.lower() not in PAIRS_SUFFIXES:
            raise TmvError(f"--data {source}: unknown pairs file type; use .tsv, .csv or .jsonl")
        pairs = load_pairs_file(path, image_root, image_column, caption_column, role)
    elif kind is SourceKind.FOLDER:
        pairs = load_image_folder(path)
        if holds_data_files(pairs):
            return load_hf_dataset(str(path), split, image_column, caption_column, role)
    else:
        return load_hf_dataset(source if kind is SourceKind.HUB else str(path), split, image_column, caption_column, role)
    if check_images:
        pairs = drop_unreadable(pairs)
    return pairs


def holds_data_files(folder: PairSet) -> bool:
    """A folder with no captioned images (not even unreadable ones) is a folder of dataset files."""
    return not folder.keys and not folder.skipped


def streamable_source(source: str | None) -> str | None:
    """The name or folder to stream for `source` when a Hugging Face loader reads it (None: Flickr30k; a
    hub name; a folder of data files), or None for pairs files, image folders and saved datasets."""
    if source is None:
        return FLICKR30K
    kind = source_kind(source)
    if kind is SourceKind.HUB:
        return source
    if kind is SourceKind.FOLDER and holds_data_files(load_image_folder(Path(source).expanduser())):
        return str(Path(source).expanduser())
    return None


def require_pairs(pairs: PairSet) -> PairSet:
    if not len(pairs):
        reasons = "; ".join(str(s) for s in pairs.skipped[:3])
        raise TmvError(f"{pairs.name}: no usable image-caption pairs" + (f" ({reasons})" if reasons else ""))
    return pairs


# ---------------------------------------------------------------------------------------- pairs file


def decode_lines(path: Path) -> list[tuple[int, str | None]]:
    """(row number, text or None for undecodable bytes); BOM and LF, CRLF or CR line ends handled,
    blank rows dropped."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    rows = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, line.decode("utf-8")))
        except UnicodeDecodeError:
            rows.append((number, None))
    return rows


def split_row(where: str, text: str | None, delimiter: str, skipped: list[Skip]) -> list[str] | None:
    """The fields of one TSV/CSV row, or None with the reason recorded in `skipped`. In a TSV a field
    may start with a quote that is just a quote, so bad quoting falls back to a plain split."""
    if text is None:
        skipped.append(Skip(where, "invalid UTF-8; re-save the file as UTF-8"))
        return None
    try:
        return next(csv.reader([text], delimiter=delimiter, strict=True))
    except csv.Error as exc:
        if delimiter == "\t":
            return text.split("\t")
        skipped.append(Skip(where, f"malformed quoting ({exc}); quote the whole field and double inner quotes"))
        return None


def _parse_rows(path: Path, image_column: str | None, caption_column: str | None, role: TextRole,
                skipped: list[Skip]) -> list[tuple[int, str, list[str]]]:
    """(row, image, captions) from a TSV/CSV/JSONL file, with or without a header."""
    kind = PAIRS_SUFFIXES[path.suffix.lower()]
    lines = decode_lines(path)
    out: list[tuple[int, str, list[str]]] = []
    if kind == "json":
        text_rows = [(n, t) for n, t in lines if t is not None]
        if path.suffix.lower() == ".json" and text_rows and text_rows[0][1].lstrip().startswith("["):
            try:
                records = list(enumerate(json.loads("\n".join(t for _, t in text_rows)), start=1))
            except (json.JSONDecodeError, RecursionError) as exc:
                raise TmvError(f"{path}: not valid JSON ({_json_problem(exc)}); use one JSON object per line (.jsonl)") from exc
        else:
            records = []
            for number, text in lines:
                if text is None:
                    skipped.append(Skip(f"{path}:{number}", "invalid UTF-8; re-save the file as UTF-8"))
                    continue
                try:
                    records.append((number, json.loads(text)))
                except (json.JSONDecodeError, RecursionError) as exc:
                    skipped.append(Skip(f"{path}:{number}", f"not a JSON object ({_json_problem(exc)})"))
        for number, record in records:
            if not isinstance(record, dict):
                skipped.append(Skip(f"{path}:{number}", "not a JSON object"))
                continue
            names = list(record)
            try:
                img_key = pick_column(names, image_column, IMAGE_KEYS, "image", f"{path}:{number}")
                cap_key = pick_column(names, caption_column, role.keys, role.what, f"{path}:{number}")
            except TmvError as exc:
                skipped.append(Skip(f"{path}:{number}", str(exc).split(": ", 1)[1]))
                continue
            caps = record[cap_key]
            caps = [caps] if isinstance(caps, str) else caps
            if not isinstance(record[img_key], str) or not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                skipped.append(Skip(f"{path}:{number}", "image must be a string and caption a string or a list of strings"))
                continue
            out.append((number, record[img_key], caps))
        return out

    header: list[str] | None = None
    img_idx, cap_idx, width = 0, 1, 2
    for number, text in lines:
        where = f"{path}:{number}"
        fields = split_row(where, text, kind, skipped)
        if fields is None:
            continue
        if header is None and not out and _looks_like_header(fields, image_column, caption_column, role):
            header = fields
            names = [f.strip() for f in fields]
            img_idx = names.index(pick_column(names, image_column, IMAGE_KEYS, "image", where))
            cap_idx = names.index(pick_column(names, caption_column, role.keys, role.what, where))
            width = len(fields)
            continue
        if len(fields) != width:
            skipped.append(Skip(where, f"expected {width} columns, found {len(fields)}"))
            continue
        out.append((number, fields[img_idx].strip(), [fields[cap_idx]]))
    return out


def _json_problem(exc: Exception) -> str:
    return exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"


def _looks_like_header(fields: list[str], image_column: str | None, caption_column: str | None, role: TextRole) -> bool:
    names = {f.strip().lower() for f in fields}
    wanted = {c.lower() for c in (image_column, caption_column) if c}
    return bool(names & (set(IMAGE_KEYS) | set(role.keys) | wanted)) and not any(is_image_name(f.strip()) for f in fields)


def load_pairs_file(path: Path, image_root: str | None = None, image_column: str | None = None,
                    caption_column: str | None = None, role: TextRole = CAPTION) -> PairSet:
    """Rows of (image path, caption); paths are relative to `image_root` (default: the file's folder).
    An image on several rows gets all their captions; exact duplicate rows are skipped."""
    root = Path(image_root).expanduser() if image_root else path.parent
    skipped: list[Skip] = []
    by_image: dict[str, int] = {}
    keys: list[str] = []
    paths: list[Path] = []
    captions: list[list[str]] = []
    seen: dict[tuple[str, str], int] = {}
    origins: list[str] = []
    for number, image, caps in _parse_rows(path, image_column, caption_column, role, skipped):
        where = f"{path}:{number}"
        caps = [" ".join(_CONTROL.sub(" ", c).split()) for c in caps]
        caps = [c for c in caps if c]
        if not image:
            skipped.append(Skip(where, "empty image path"))
            continue
        if not caps:
            skipped.append(Skip(where, "empty caption"))
            continue
        if "://" in image:
            skipped.append(Skip(where, f"{image} is a URL; download the images and list local paths"))
            continue
        try:
            file = Path(image).expanduser()
        except (RuntimeError, ValueError):  # ~unknown_user, or a NUL byte after ~
            skipped.append(Skip(where, f"cannot resolve image path {image!r}"))
            continue
        file = file if file.is_absolute() else root / file
        if not file.is_file():
            skipped.append(Skip(where, f"image not found: {file}"))
            continue
        key = os.path.relpath(file, root)
        fresh = []
        for c in caps:
            if (key, c) in seen:
                skipped.append(Skip(where, f"duplicate of row {seen[key, c]}"))
            else:
                seen[key, c] = number
                fresh.append(c)
        if key not in by_image:
            by_image[key] = len(keys)
            origins.append(where)
            keys.append(key)
            paths.append(file)
            captions.append([])
        captions[by_image[key]].extend(fresh)
    pairs = PairSet(str(path), keys, captions, FileImages(paths), skipped, origins)
    keep = [i for i, c in enumerate(captions) if c]
    return pairs if len(keep) == len(keys) else pairs.subset(keep)


# -------------------------------------------------------------------------------------- image folder


def sidecar_caption(image: Path) -> str | None:
    """The first non-empty line of `<image stem>.txt` (later lines, e.g. translations, are ignored)."""
    txt = image.with_suffix(".txt")
    if not txt.is_file():
        return None
    for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
        line = " ".join(line.lstrip("\ufeff").split())
        if line:
            return line
    return ""


def load_image_folder(folder: Path) -> PairSet:
    """clip-retrieval's "files" layout: each image has a sidecar `.txt` caption beside it."""
    skipped: list[Skip] = []
    keys, paths, captions = [], [], []
    for image in iter_image_files(folder):
        caption = sidecar_caption(image)
        rel = os.path.relpath(image, folder)
        if caption is None:
            skipped.append(Skip(rel, f"no caption file {image.with_suffix('.txt').name}"))
        elif not caption:
            skipped.append(Skip(rel, "empty caption file"))
        else:
            keys.append(rel)
            paths.append(image)
            captions.append([caption])
    return PairSet(str(folder), keys, captions, FileImages(paths), skipped)


def drop_unreadable(pairs: PairSet, workers: int = 4) -> PairSet:
    """Decode every file image once (JPEGs in draft mode) and drop those that fail, with the reason."""
    if not isinstance(pairs.images, FileImages):
        return pairs

    def check(i: int) -> str | None:
        try:
            pairs.images.open(i, draft_size=(64, 64))
        except Exception as exc:
            return f"cannot read image {pairs.images.paths[i]}: {first_line(exc)}"
        return None

    with ThreadPoolExecutor(workers) as pool:
        errors = list(pool.map(check, range(len(pairs))))
    keep = [i for i, e in enumerate(errors) if e is None]
    if len(keep) == len(pairs):
        return pairs
    where = pairs.origins or pairs.keys  # a pairs file's row, else the image's key
    return pairs.subset(keep, skipped=pairs.skipped + [Skip(where[i], e) for i, e in enumerate(errors) if e is not None])


# ------------------------------------------------------------------------------ Hugging Face datasets


def load_hf_dataset(source: str, split: str | None, image_column: str | None, caption_column: str | None,
                    role: TextRole = CAPTION) -> PairSet:
    """A hub name or local dataset (save_to_disk folder or data files). Splits come from the
    dataset's splits or, as in Flickr30k's hub copies, from a `split` column."""
    dataset, rows, name = open_dataset(source, split)
    names = list(dataset.column_names)
    image_col = find_image_column(dataset, image_column, source)
    caption_col = pick_column(names, caption_column, role.keys, role.what, source)
    key_col = next((c for c in KEY_COLUMNS if c in names), None)
    all_captions = dataset.select_columns([caption_col])[caption_col]
    all_keys = dataset.select_columns([key_col])[key_col] if key_col else None
    keys, captions, kept_rows, skipped = [], [], [], []
    for row in rows:
        caps = _captions_of(all_captions[row])
        if not caps:
            skipped.append(Skip(f"{source} row {row}", "no caption"))
            continue
        keys.append(str(all_keys[row]) if all_keys is not None else str(row))
        captions.append(caps)
        kept_rows.append(row)
    return PairSet(name, keys, captions, DatasetImages(dataset, image_col, kept_rows), skipped)


def _captions_of(value) -> list[str]:
    """A dataset cell's captions (one string, or a list of them), whitespace tidied, empty ones dropped."""
    caps = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else []
    return [c for c in (" ".join(str(c).split()) for c in caps) if c]


def sample_stream(source: str, split: str | None, image_column: str | None, caption_column: str | None,
                  count: int, seed: int) -> tuple[PairSet, int]:
    """(a seeded sample of `count` images with captions, rows read) of a hub dataset or a folder of
    data files, streamed: shards in a seeded order through a seeded shuffle buffer of `count` rows, so
    at most about 2 x `count` rows are read, however large the dataset. The sampled images are kept in
    memory (as their encoded bytes)."""
    import datasets

    stream, _, name = open_dataset(source, split, streaming=True)
    names = list(stream.column_names or ())
    image_col = find_image_column(stream, image_column, source)
    caption_col = pick_column(names, caption_column, CAPTION.keys, CAPTION.what, source)
    key_col = next((c for c in KEY_COLUMNS if c in names), None)
    stream = stream.select_columns([c for c in (image_col, caption_col, key_col) if c])
    stream = _undecoded(stream, image_col)
    counter = _RowCounter()
    keys, captions, images, seen = [], [], [], set()
    for row in stream.map(counter).shuffle(seed=seed, buffer_size=count):
        caps = _captions_of(row[caption_col])
        image = row[image_col]
        key = str(row[key_col]) if key_col else _content_key(image)
        if not caps or key in seen:
            continue
        seen.add(key)
        keys.append(key)
        captions.append(caps)
        images.append(image)
        if len(keys) == count:
            break
    held = datasets.Dataset.from_dict({image_col: images},
                                      features=datasets.Features({image_col: stream.features[image_col]}))
    return PairSet(f"{name} (sample of {count})", keys, captions, DatasetImages(held, image_col, range(len(keys)))), counter.rows


class _RowCounter:
    """Counts the rows a stream yields (passed to `IterableDataset.map`, which calls it per row)."""

    def __init__(self) -> None:
        self.rows = 0

    def __call__(self, row: dict) -> dict:
        self.rows += 1
        return row


def _content_key(image) -> str:
    """A stable key for a streamed image without an id column: a hash of its bytes (or its path)."""
    if isinstance(image, dict):
        data = image.get("bytes") or str(image.get("path")).encode()
    elif isinstance(image, (str, Path)):
        data = str(image).encode()
    else:
        data = image_bytes(image)
    return hashlib.sha1(data).hexdigest()[:16]
