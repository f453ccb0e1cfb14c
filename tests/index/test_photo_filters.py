"""Photo metadata in the catalogue and the searches it allows: --after/--before (EXIF DateTimeOriginal,
else the file time), --folder, --min-score; filtering inside FAISS that still returns k results when k
match (100k vectors, 1% allowed, flat and IVF); an old catalogue gaining the fields without re-embedding."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from helpers.photo_library import FILE_TIME, PHOTOS, taken_after, write_photos
from tinymvlm.cli.main import cli
from tinymvlm.index import Index
from tinymvlm.index.catalog import Catalog
from tinymvlm.index.filters import SearchFilter
from tinymvlm.index.searcher import Searcher
from tinymvlm.index.store import IndexStore, ModelInfo
from tinymvlm.index.update import IndexReport, describe_images
from tinymvlm.index.vectors import IndexSpec

from tinymvlm.inference.runtime import Runtime

@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("library")
    photos = root / "Photos"
    write_photos(photos)
    folder = root / "index"
    with Index(folder, checkpoint=tiny_checkpoint, runtime=Runtime(device="cpu")) as index:
        report = index.add([photos], runtime=Runtime(workers=0, device="cpu"))
    assert report.described == len(PHOTOS)
    return folder, photos


def search_json(folder: Path, *args: str) -> list[dict]:
    result = CliRunner().invoke(cli, ["search", "--index", str(folder), "--json", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def names(rows: list[dict]) -> list[str]:
    return [os.path.basename(r["path"]) for r in rows]


def test_catalogue_keeps_taken_at_camera_and_size(library):
    folder, photos = library
    db = sqlite3.connect(folder / "catalog.sqlite")
    rows = {os.path.basename(p): rest for p, *rest in db.execute("SELECT path, taken_at, camera, width, height FROM images")}
    db.close()
    assert rows["beach.jpg"] == ["2019-07-14T09:30:00", "Canon EOS 5D", 56, 40]
    assert rows["cat.jpg"] == ["2020-12-31T23:59:59", None, 56, 40]
    import datetime as dt

    file_time = dt.datetime.fromtimestamp(FILE_TIME).isoformat()  # local wall-clock time of the mtime
    assert rows["scan.png"] == [file_time, None, 56, 40]


def test_after_returns_only_later_photos_and_k_of_them(library):
    folder, _ = library
    later = taken_after("2021-01-01")
    assert later == {"lake.jpg", "road.jpg", "dog.jpg", "sofa.jpg", "scan.png", "old.png"}
    three = search_json(folder, "a dog", "--after", "2021-01-01", "-k", "3")
    assert len(three) == 3 and set(names(three)) <= later
    every = search_json(folder, "a dog", "--after", "2021-01-01", "-k", "9")
    assert set(names(every)) == later  # all 6 that match, no more, though 9 were asked for
    # the filtered ranking is the unfiltered one with the others left out
    unfiltered = [n for n in names(search_json(folder, "a dog", "-k", "9")) if n in later]
    assert names(every) == unfiltered


def test_before_and_a_year(library):
    folder, _ = library
    year = search_json(folder, "a photo", "--after", "2019-01-01", "--before", "2020-01-01", "-k", "9")
    assert set(names(year)) == {"beach.jpg", "hill.jpg"}
    before = search_json(folder, "a photo", "--before", "2021-01-01", "-k", "9")
    assert set(names(before)) == {"beach.jpg", "hill.jpg", "cat.jpg"}  # 23:59:59 on the last day is before


def test_folder_relative_to_the_indexed_folder_and_absolute(library):
    folder, photos = library
    assert set(names(search_json(folder, "x", "--folder", "trips", "-k", "9"))) == {
        "beach.jpg", "hill.jpg", "lake.jpg", "road.jpg"}
    both = search_json(folder, "x", "--folder", "trips/2022", "--folder", str(photos / "home"), "-k", "9")
    assert set(names(both)) == {"lake.jpg", "road.jpg", "cat.jpg", "dog.jpg", "sofa.jpg", "scan.png", "old.png"}
    # a folder whose name only starts like another is not inside it
    assert search_json(folder, "x", "--folder", "trip", "-k", "9") == []
    dated = search_json(folder, "x", "--folder", "trips", "--after", "2022-01-01", "-k", "9")
    assert set(names(dated)) == {"lake.jpg", "road.jpg"}


def test_min_score_cuts_the_ranking(library):
    folder, _ = library
    every = search_json(folder, "a red car", "-k", "9")
    scores = [r["score"] for r in every]
    floor = (scores[2] + scores[3]) / 2  # between the 3rd and 4th
    cut = search_json(folder, "a red car", "-k", "9", "--min-score", f"{floor:.6f}")
    assert names(cut) == names(every)[:3]


@pytest.mark.parametrize("args, message", [
    (["--after", "last year"], "--after 'last year' is not a date: use YYYY-MM-DD"),
    (["--after", "2022-01-01", "--before", "2021-01-01"], "--after 2022-01-01 is not before --before 2021-01-01"),
    (["--texts", "--folder", "trips"], "date and folder filters apply to image searches, not to captions"),
    (["--min-score", "30"], "'--min-score': 30.0 is not in the range -1<=x<=1"),  # a percent, not a cosine
])
def test_bad_filters_are_one_line_errors(library, args, message):
    folder, _ = library
    result = CliRunner().invoke(cli, ["search", "--index", str(folder), "x", *args])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_an_old_catalogue_gains_the_fields_without_re_embedding(tmp_path, tiny_checkpoint):
    photos = tmp_path / "Photos"
    write_photos(photos)
    folder = tmp_path / "index"
    with Index(folder, checkpoint=tiny_checkpoint, runtime=Runtime(device="cpu")) as index:
        index.add([photos], runtime=Runtime(workers=0, device="cpu"))
    db = sqlite3.connect(folder / "catalog.sqlite")  # back to schema 1, as tinymvlm wrote it before
    db.execute("DROP INDEX images_taken")
    for column in ("taken_at", "camera", "width", "height"):
        db.execute(f"ALTER TABLE images DROP COLUMN {column}")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    db.commit()
    db.close()
    result = CliRunner().invoke(cli, ["search", "--index", str(folder), "x", "-k", "2"])
    assert result.exit_code == 0, result.output  # an old index still searches
    result = CliRunner().invoke(cli, ["search", "--index", str(folder), "x", "--after", "2021-01-01"])
    assert result.exit_code != 0 and "predates photo dates; run 'tmv index" in result.output
    with Index(folder, runtime=Runtime(device="cpu")) as index:
        report = index.add(runtime=Runtime(workers=0, device="cpu"))
    assert report.embedded == 0 and report.described == len(PHOTOS)
    assert set(names(search_json(folder, "x", "--after", "2021-01-01", "-k", "9"))) == taken_after("2021-01-01")


# ------------------------------------------------------------------- 100k vectors, 1% allowed

N, DIM = 100_000, 32


@pytest.fixture(scope="module")
def big_catalogue(tmp_path_factory):
    """A catalogue of 100k random vectors; 1% of them (every 100th) taken in 2021, the rest in 2010."""
    folder = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((N, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store = IndexStore(folder / "flat")
    catalog = Catalog(store.catalog_path)
    with catalog.transaction():
        for i in range(N):
            catalog.insert_image(f"/photos/{i:06d}.jpg", 1, 1, f"h{i}", vecs[i])
    with catalog.transaction():
        catalog.describe_images((i + 1, "2021-06-01T00:00:00" if i % 100 == 0 else "2010-01-01T00:00:00", None, 1, 1)
                                for i in range(N))
    catalog.close()
    allowed_rows = np.arange(0, N, 100)
    return folder, vecs, allowed_rows


def open_as(folder: Path, name: str, spec: IndexSpec) -> Searcher:
    """The big catalogue in an index folder of its own, its FAISS file built to `spec`."""
    import shutil

    store = IndexStore(folder / name)
    if not store.exists():
        if name != "flat":
            shutil.copytree(folder / "flat", store.folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.faiss", "manifest.json"))
        manifest = store.create(ModelInfo("synthetic", "none", DIM, "none"), spec)
        catalog = Catalog(store.catalog_path)
        store.sync(catalog, manifest, "images", spec)
        catalog.close()
    return Searcher(store)


@pytest.mark.parametrize("name, spec, nprobe", [
    ("flat", IndexSpec(type="flat"), None),
    ("ivf", IndexSpec(type="ivf", nlist=256), 256),  # every cell probed: FAISS's selector alone finds all
    ("ivf", IndexSpec(type="ivf", nlist=256), 1),  # one cell holds ~4 allowed: the exact fallback finds k
])
def test_filter_inside_faiss_at_100k_returns_exact_k(big_catalogue, name, spec, nprobe):
    folder, vecs, allowed_rows = big_catalogue
    searcher = open_as(folder, name, spec)
    assert searcher.manifest["indexes"]["images"]["type"] == name
    where = SearchFilter.parse(after="2021-01-01")
    rng = np.random.default_rng(2)
    for query in rng.standard_normal((5, DIM)).astype(np.float32):
        query /= np.linalg.norm(query)
        hits = searcher.search(query, k=10, where=where, nprobe=nprobe)
        exact = allowed_rows[np.argsort(-(vecs[allowed_rows] @ query), kind="stable")[:10]] + 1  # ids from 1
        assert [h.id for h in hits] == exact.tolist()
    unfiltered = searcher.search(query, k=10, nprobe=nprobe)
    assert sum(h.id % 100 == 1 for h in unfiltered) < 10  # the filter, not luck, made the hits all 2021
    searcher.close()


def test_describe_resumes_where_it_stopped(tmp_path):
    """Only rows without metadata are read, a batch at a time: a second run reads nothing."""
    photos = tmp_path / "p"
    write_photos(photos)
    catalog = Catalog(tmp_path / "catalog.sqlite")
    with catalog.transaction():
        for n, (rel, _, _) in enumerate(PHOTOS):
            catalog.insert_image(str(photos / rel), 1, 1, f"h{n}", np.zeros(4, np.float32))
    first, second = IndexReport(), IndexReport()
    describe_images(catalog, first, batch=4)
    describe_images(catalog, second, batch=4)
    catalog.close()
    assert (first.described, second.described) == (len(PHOTOS), 0)


def test_a_merged_index_filters_by_date(tmp_path, tiny_checkpoint):
    """Shards merged into one index: the dates are there at once (the merge reads them again)."""
    from tinymvlm.index.shard import Shard
    from tinymvlm.index.shard_merge import merge_shards

    photos = tmp_path / "Photos"
    write_photos(photos)
    out = tmp_path / "merged"
    for i in range(2):
        Index(Shard(i, 2).folder(out), checkpoint=tiny_checkpoint).add(
            [photos], runtime=Runtime(workers=0, device="cpu"), shard=Shard(i, 2))
    merge_shards([Shard(i, 2).folder(out) for i in range(2)], out)
    assert set(names(search_json(out, "x", "--after", "2021-01-01", "-k", "9"))) == taken_after("2021-01-01")


@pytest.mark.parametrize("tags, expected", [
    ({36867: "2018:02:03 04:05:06"}, "2018-02-03T04:05:06"),  # DateTimeOriginal in the first IFD: still read
    ({"exif": "0000:00:00 00:00:00"}, None),  # a camera with no clock set: the file time
    ({"exif": "2019:07:14 09:30:00\x00"}, "2019-07-14T09:30:00"),  # padded with NULs
])
def test_photo_meta_reads_exif_dates_where_cameras_put_them(tmp_path, tags, expected):
    import datetime as dt

    from tinymvlm.index.photo_meta import read_photo_meta

    exif = Image.Exif()
    for tag, value in tags.items():
        if tag == "exif":
            exif.get_ifd(0x8769)[36867] = value
        else:
            exif[tag] = value
    path = tmp_path / "p.jpg"
    Image.new("RGB", (30, 20)).save(path, exif=exif)
    meta = read_photo_meta(str(path), FILE_TIME * 10**9)
    assert meta.taken_at == (expected or dt.datetime.fromtimestamp(FILE_TIME).isoformat())
    assert (meta.width, meta.height) == (30, 20)


def test_photo_meta_of_an_unreadable_file_is_its_file_time(tmp_path):
    import datetime as dt

    from tinymvlm.index.photo_meta import read_photo_meta

    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not a JPEG")
    meta = read_photo_meta(str(path), FILE_TIME * 10**9)
    assert meta == type(meta)(dt.datetime.fromtimestamp(FILE_TIME).isoformat(), None, None, None)


HEIC_IN_A_FRESH_PROCESS = """
import os, sys
from tinymvlm.index.photo_meta import read_photo_meta
meta = read_photo_meta(sys.argv[1], os.stat(sys.argv[1]).st_mtime_ns)
print(meta.taken_at, meta.width, meta.height)
"""


def test_a_phones_heic_photo_gives_its_exif_date(tmp_path):
    """A process that has decoded no image yet still reads a HEIC header's date (not its file time)."""
    import subprocess
    import sys

    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is a dependency; its wheel is missing here")
    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "2021:05:06 07:08:09"
    path = tmp_path / "IMG_0001.HEIC"
    Image.new("RGB", (64, 48), "red").save(path, format="HEIF", exif=exif.tobytes())
    out = subprocess.run([sys.executable, "-c", HEIC_IN_A_FRESH_PROCESS, str(path)], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["2021-05-06T07:08:09", "64", "48"], out.stderr[-2000:]
