"""Fault suite, fuzzing: the pairs-file parser, the caption-file reader and the search-query parser give a
result or a clean TmvError for any input, never another exception. Explicit examples are inputs that
once crashed (a NUL after `~`, an unknown `~user`, JSON nested 50,000 deep, a weight that overflows)."""

from __future__ import annotations

import atexit
import math
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from conftest import examples
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tinymvlm.index.caption_files import read_captions
from tinymvlm.index.query_syntax import parse_query
from tinymvlm.index.searcher import combine

from tinymvlm.data.pairs import load_pairs
from tinymvlm.errors import TmvError

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
FUZZ = settings(max_examples=examples(150), suppress_health_check=[HealthCheck.too_slow])
WORK = Path(tempfile.mkdtemp(prefix="tmv-fuzz-"))
atexit.register(shutil.rmtree, WORK, True)
(WORK / "a.png").write_bytes(b"")  # exists: rows naming it get past the file check (check_images is off)

# Pieces that make the parsers take their interesting branches, mixed with arbitrary text and bytes.
FRAGMENTS = ["\t", ",", '"', "'", "\n", "\r\n", "\r", "\ufeff", "\x00", "~", "~root/", "~no_such_user_zz/", "a.png",
             "image", "caption", "filepath", "captions", "text", "{", "}", "[", "]", ":", '"image": ', '"caption": ',
             "https://x/y.jpg", "../", "/", " ", "\\", "é", "猫", "\x85", "\u2028", "\u200b"]
line_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=12).map("".join)
raw_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(line_text, max_size=8).map(lambda lines: "\n".join(lines).encode("utf-8")),
)


def _write(data: bytes, suffix: str) -> Path:
    path = WORK / f"pairs{suffix}"
    path.write_bytes(data)
    return path


@FUZZ
@given(data=raw_bytes, suffix=st.sampled_from([".tsv", ".csv", ".jsonl", ".json", ".txt"]))
@example(data=b"~\x00/x.png\tcap\n", suffix=".tsv")
@example(data=b"~no_such_user_zz/a.png\tcap\n", suffix=".tsv")
@example(data=b"[" * 50_000, suffix=".jsonl")
@example(data=b"[" * 50_000, suffix=".json")
@example(data=b'{"image": "~\\u0000", "caption": "x"}', suffix=".jsonl")
@example(data=b'{"image": "\\ud800.png", "caption": "lone surrogate"}', suffix=".jsonl")
@example(data=b'image\tfoo\na.png\tbar\n', suffix=".tsv")
def test_pairs_parser_never_crashes(data: bytes, suffix: str) -> None:
    path = _write(data, suffix)
    try:
        pairs = load_pairs(str(path), check_images=False)
    except TmvError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        return
    assert len(pairs.keys) == len(pairs.captions) == len(pairs.origins)
    assert all(caps and all(c and c == " ".join(c.split()) and not CONTROL.search(c) for c in caps) for caps in pairs.captions)
    assert all(s.where.startswith(f"{path}:") and s.reason for s in pairs.skipped)


@FUZZ
@given(data=raw_bytes, suffix=st.sampled_from([".tsv", ".csv", ".jsonl", ".txt"]), column=st.sampled_from([None, "caption", "1"]))
@example(data=b"[" * 50_000, suffix=".jsonl", column=None)
def test_caption_file_reader_never_crashes(data: bytes, suffix: str, column: str | None) -> None:
    path = _write(data, suffix)
    try:
        parsed = read_captions(path, column)
    except TmvError:
        return
    assert all(t and t == " ".join(t.split()) for t in parsed.texts) and len(set(parsed.texts)) == len(parsed.texts)


query_text = st.lists(st.one_of(st.sampled_from([" + ", " - ", "+", "-", ":", ":0.5", ":-2", ":1e5", ":" + "9" * 400, '"',
                                                  "'", " ", "~", "\x00", "a.png", "t-shirt", ".", "dog", "~\x00.jpg"]),
                                st.text(max_size=6)), max_size=10).map("".join)


@FUZZ
@given(text=st.one_of(st.none(), query_text, st.text()))
@example(text="dog:" + "9" * 400)
@example(text="~\x00.jpg + cat")
@example(text="cat - cat")
def test_query_parser_never_crashes(text: str | None) -> None:
    try:
        terms = parse_query(text)
    except TmvError as exc:
        assert str(exc)
        return
    assert terms and all(math.isfinite(t.weight) for t in terms)
    assert all((t.text is None) != (t.image is None) and (t.text or t.image) for t in terms)
    vectors = np.eye(len(terms), 8, dtype=np.float32)  # independent unit vectors: never cancel unless weights are 0
    try:
        query = combine(terms, vectors)
    except TmvError:
        assert all(t.weight == 0 for t in terms)
        return
    assert abs(float(np.linalg.norm(query)) - 1) < 1e-5
