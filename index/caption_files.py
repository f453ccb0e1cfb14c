"""Reading captions to index for text search: one per line, or a column of a TSV/CSV/JSONL file.

A `.tsv`/`.csv` file with a header row uses the column named by `--caption-column`, else the first header
name tinymvlm's pairs files recognise as a caption (caption, text, alt_text...), else, with a single
column, that column. Without a header (no recognised names) the last column is the caption, which fits
both `caption` and `image<TAB>caption` rows. Whitespace is collapsed, blank and repeated captions are
dropped; undecodable or malformed rows are reported with their line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tinymvlm.data.pairs import Skip, decode_lines, split_row
from tinymvlm.data.sources import CAPTION, IMAGE_KEYS
from tinymvlm.errors import TmvError

DELIMITERS = {".tsv": "\t", ".csv": ","}


@dataclass
class CaptionFile:
    path: Path
    texts: list[str]
    skipped: list[Skip] = field(default_factory=list)


def read_captions(path: str | Path, column: str | None = None) -> CaptionFile:
    path = Path(path).expanduser()
    if not path.is_file():
        raise TmvError(f"--captions {path}: no such file")
    try:
        lines = decode_lines(path)
    except OSError as exc:
        raise TmvError(f"--captions {path}: cannot read ({exc.strerror or exc})") from exc
    skipped: list[Skip] = []
    raw: list[str] = []
    suffix = path.suffix.lower()
    if suffix in DELIMITERS:
        raw = _column(path, lines, DELIMITERS[suffix], column, skipped)
    elif suffix in (".jsonl", ".json"):
        raw = _jsonl(path, lines, column, skipped)
    else:
        for number, text in lines:
            if text is None:
                skipped.append(Skip(f"{path}:{number}", "invalid UTF-8; re-save the file as UTF-8"))
            else:
                raw.append(text)
    texts, seen = [], set()
    for text in raw:
        text = " ".join(text.lstrip("\ufeff").split())
        if text and text not in seen:
            seen.add(text)
            texts.append(text)
    return CaptionFile(path, texts, skipped)


def _column(path: Path, lines, delimiter: str, column: str | None, skipped: list[Skip]) -> list[str]:
    out: list[str] = []
    index: int | None = None
    for number, text in lines:
        where = f"{path}:{number}"
        fields = split_row(where, text, delimiter, skipped)
        if fields is None:
            continue
        if index is None:
            names = [f.strip().lower() for f in fields]
            if column is not None:
                if column.lower() in names:
                    index = names.index(column.lower())
                    continue
                if column.isdigit() and int(column) < len(fields):
                    index = int(column)
                else:
                    raise TmvError(f"--captions {path}: no column '{column}' (first row: {', '.join(fields)})")
            else:
                named = [i for i, n in enumerate(names) if n in CAPTION.keys]
                if named:
                    index = named[0]
                    continue
                if set(names) & set(IMAGE_KEYS) and len(fields) == 2:
                    index = 1 - names.index(next(n for n in names if n in IMAGE_KEYS))
                    continue
                index = len(fields) - 1
        if index >= len(fields):
            skipped.append(Skip(where, f"has no column {index + 1}"))
            continue
        out.append(fields[index])
    return out


def _jsonl(path: Path, lines, column: str | None, skipped: list[Skip]) -> list[str]:
    out: list[str] = []
    for number, text in lines:
        where = f"{path}:{number}"
        try:
            record = json.loads(text) if text is not None else None
        except (json.JSONDecodeError, RecursionError) as exc:
            skipped.append(Skip(where, f"not JSON ({getattr(exc, 'msg', 'nested too deeply')})"))
            continue
        if isinstance(record, str):
            out.append(record)
            continue
        if not isinstance(record, dict):
            skipped.append(Skip(where, "not a JSON object or string"))
            continue
        key = column if column is not None else next((k for k in record if k.lower() in CAPTION.keys), None)
        value = record.get(key) if key is not None else None
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            skipped.append(Skip(where, f"no caption string under {key or 'a caption key'!r}"))
            continue
        out.extend(values)
    return out
