"""A folder with one picture per format: every picture indexed, found first by an image query of itself
and thumbnailed; corrupt ones skipped with their reason; what is no picture counted, never silent."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.formats import NAMES, make_folder
from tinymvlm.data.transform import load_image
from tinymvlm.index import Index
from tinymvlm.inference.runtime import Runtime
from tinymvlm.serve.thumbnails import make_thumbnail

FAST = Runtime(batch_size=8, workers=0)
OTHERS = {"clip.mp4": "video", "holiday.MOV": "video", "notes.txt": "document", "scan.pdf": "document"}


def photo_folder(root: Path) -> tuple[dict[str, Path], list[Path]]:
    """One picture per format, the files that are none, and a truncated copy of each picture."""
    pictures = make_folder(root)
    for name in OTHERS:
        (root / name).write_bytes(b"not a picture\n")
    broken = []
    (root / "broken").mkdir()
    for name, path in pictures.items():
        data = path.read_bytes()
        broken.append(root / "broken" / name)
        broken[-1].write_bytes(data[: max(16, len(data) // 3)])
    return pictures, broken


def test_every_format_is_indexed_found_by_itself_and_thumbnailed(tmp_path, tiny_checkpoint):
    pictures, broken = photo_folder(tmp_path / "photos")
    idx = Index(tmp_path / "idx", checkpoint=tiny_checkpoint)
    report = idx.add([tmp_path / "photos"], runtime=FAST)
    assert report.embedded == len(NAMES) == len(pictures)
    assert sorted(p for p, _ in report.failed) == sorted(map(str, broken))
    assert all(reason.startswith("cannot decode: ") and len(reason) > len("cannot decode: ") + 5
               for _, reason in report.failed)
    assert sorted(Path(p).name for p in report.passed_over) == sorted(OTHERS)
    coarse = {name: small(load_image(path)) for name, path in pictures.items()}
    for name, path in pictures.items():
        hit = idx.search(image=path, k=1)[0]
        assert hit.path == str(path) and hit.score == pytest.approx(1.0, abs=1e-3), name
        thumb = Image.open(io.BytesIO(make_thumbnail(str(path), 40)))
        expected = load_image(path)  # a camera file's half-size demosaic may be under 40 pixels already
        expected.thumbnail((40, 40))
        assert thumb.format == "JPEG" and thumb.size == expected.size and max(thumb.size) >= 32, name
        nearest = min(coarse, key=lambda other: np.abs(coarse[other] - small(thumb)).mean())
        assert nearest == name  # the thumbnail shows this picture


def small(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((8, 6), Image.Resampling.BOX), dtype=int)


@pytest.fixture()
def fresh_env(tmp_path):
    """The environment of a `tmv` child: offline, no torch threads fighting the other engineers' jobs."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_tmv_index_names_what_it_passed_over_and_search_refuses_a_file_that_is_no_picture(
        tmp_path, tiny_checkpoint, fresh_env):
    """In a fresh process (nothing registered HEIC by hand): the CLI reads every format itself."""
    photos = tmp_path / "photos"
    make_folder(photos, ["phone.heic", "camera.dng", "duck.jp2", "magpie.pbm"])
    for name in OTHERS:
        (photos / name).write_bytes(b"not a picture\n")
    tmv = [sys.executable, "-m", "tinymvlm.cli"]
    run = subprocess.run([*tmv, "index", str(photos), "--index", str(tmp_path / "idx"), "--model",
                          str(tiny_checkpoint), "--workers", "0"], capture_output=True, text=True, env=fresh_env,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert "2 videos, 2 documents not indexed; -v lists them" in lines
    assert any(line.startswith("images: 4 image files, 0 unchanged, 4 embedded") for line in lines), run.stderr
    search = subprocess.run([*tmv, "search", "./notes.txt", "--index", str(tmp_path / "idx")], cwd=photos,
                            capture_output=True, text=True, env=fresh_env, timeout=300)
    assert search.returncode != 0 and search.stdout == ""
    assert search.stderr.strip().splitlines() == [
        "error: query term './notes.txt' names a file that is not a picture tmv reads (.txt); give an image file, "
        "or to search the words, quote them: '\"./notes.txt\"'"]
    found = subprocess.run([*tmv, "search", "phone.heic", "--index", str(tmp_path / "idx"), "--paths-only"], cwd=photos,
                           capture_output=True, text=True, env=fresh_env, timeout=300)
    assert found.returncode == 0 and found.stdout.splitlines()[0] == str(photos / "phone.heic"), found.stderr


def test_a_query_naming_a_file_that_is_no_picture_is_refused_unless_quoted(tmp_path, monkeypatch):
    from tinymvlm.errors import TmvError
    from tinymvlm.index.query_syntax import Term, parse_query

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("words\n")
    (tmp_path / "README").write_text("words\n")
    for query in ["./notes.txt", "notes.txt", f"{tmp_path}/notes.txt", "cat + notes.txt:2"]:
        with pytest.raises(TmvError, match="not a picture tmv reads .* quote them"):
            parse_query(query)
    with pytest.raises(TmvError, match="--image notes.txt names a file that is not a picture"):
        parse_query(None, images=["notes.txt"])
    assert parse_query('"./notes.txt"') == [Term(1.0, text="./notes.txt")]
    assert parse_query("README") == [Term(1.0, text="README")]  # one word without an extension stays text
    assert parse_query("notes.txt and more") == [Term(1.0, text="notes.txt and more")]
