"""Fault suite, `tmv index` / `tmv search`: hostile image folders, SIGKILLs at every phase, a second writer
and searches while an index is being written. Planted files and their expected outcomes: tests/helpers/hostile.py.

Related tests elsewhere: simulated Ctrl-C and one API-level SIGKILL (tests/index/test_index.py), the lock held
by another process through the API (test_index.py::test_second_writer_is_refused_with_the_pid), a reader
catching up with a changing catalogue (test_search.py::test_reader_catches_up_with_a_changing_catalogue).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import catalogue
from helpers.hostile import LATIN1_NAME, UNICODE_NAME, make_hostile_folder
from PIL import Image
from tinymvlm.cli.main import cli
from tinymvlm.index import Index, Progress, vectors
from tinymvlm.index.catalog import Catalog
from tinymvlm.index.store import IndexStore
from tinymvlm.index.writer_lock import IndexLock

from tinymvlm.data.transform import load_image
from tinymvlm.inference.runtime import Runtime

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
FLAGS = ["--workers", "0", "--batch-size", "4", "--precision", "fp32"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "photos"
    return folder, make_hostile_folder(folder)


def index_cli(*args: str):
    return CliRunner().invoke(cli, ["index", *args])


def assert_consistent(folder: Path) -> None:
    """The manifest names a complete FAISS file holding exactly the catalogue's ids, once each."""
    store = IndexStore(folder)
    manifest = store.read_manifest()
    index, entry = store.load_faiss(manifest, "images")
    catalog = Catalog(store.catalog_path, readonly=True)
    try:
        ids = vectors.ids_of(index)
        assert len(ids) == len(set(ids.tolist())), "a vector is in FAISS twice"
        assert sorted(ids.tolist()) == catalog.ids("images").tolist()
        assert entry["generation"] == catalog.generation("images")
        assert manifest["counts"]["images"] == catalog.count("images") == index.ntotal
        hashes = [h for (h,) in catalog.db.execute("SELECT hash FROM images")]
        assert len(hashes) == len(set(hashes)), "the same content was stored twice"
    finally:
        catalog.close()


def lines_with(output: str, fragment: str) -> list[str]:
    return [line for line in output.splitlines() if fragment in line]


# ------------------------------------------------------------------------------------ hostile folder


def test_hostile_folder_keeps_every_good_file_and_skips_each_bad_one(hostile, tmp_path, tiny_checkpoint):
    photos, planted = hostile
    good = {p.path(photos) for p in planted if p.good}
    bad = [p for p in planted if not p.good]
    folder = tmp_path / "idx"
    result = index_cli(str(photos), "--index", str(folder), "--checkpoint", str(tiny_checkpoint), *FLAGS)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "DecompressionBombWarning" not in result.output
    state = catalogue(folder)
    assert set(state) == good  # every good file once, nothing else (the folder loop added no copies)
    assert f"skipped {len(bad)} file(s)" in result.output
    for p in bad:  # one line per bad file: its path and why
        lines = lines_with(result.output, p.path(photos) + ":")
        assert len(lines) == 1 and p.reason in lines[0], (p.what, result.output)
    assert f"{len(good) + len(bad)} image files" in result.output and f"{len(good)} embedded" in result.output
    assert f": {len(good)} images, 0 captions" in result.output
    assert IndexStore(folder).read_manifest()["counts"] == {"images": len(good), "captions": 0, "skipped": len(bad)}
    assert_consistent(folder)

    upright, rotated = state[str(photos / "upright.jpg")], state[str(photos / "exif_rotated.jpg")]
    assert float(upright @ rotated) > 0.999  # embedded upright (test_index.py checks the unrotated one differs)

    again = index_cli(str(photos), "--index", str(folder), *FLAGS)  # nothing new: bad files are not retried
    assert again.exit_code == 0, again.output
    assert f"{len(good)} unchanged, 0 embedded" in again.output
    unstatable = [p for p in bad if "symbolic links" in p.reason or "No such file" in p.reason]
    assert f"{len(bad) - len(unstatable)} unreadable file(s) unchanged since an earlier run" in again.output
    assert IndexStore(folder).read_manifest()["counts"]["skipped"] == len(bad)


def test_odd_file_names_survive_search_output(hostile, tmp_path, tiny_checkpoint):
    """A Latin-1 byte name and a unicode name go through search, --paths-only, --json and --html intact."""
    photos, _ = hostile
    folder = tmp_path / "idx"
    assert index_cli(str(photos), "--index", str(folder), "--checkpoint", str(tiny_checkpoint), *FLAGS).exit_code == 0
    latin1 = os.fsdecode(os.path.join(os.fsencode(photos), LATIN1_NAME))
    unicode_path = str(photos / UNICODE_NAME)
    runner = CliRunner()
    base = ["search", "--index", str(folder), "-k", "1"]
    result = runner.invoke(cli, base + ["--image", latin1, "--paths-only"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == os.fsencode(latin1) + b"\n"  # the name's own bytes: pipes into xargs work
    result = runner.invoke(cli, base + ["--image", latin1, "--json"])
    assert os.fsencode(json.loads(result.stdout)["path"]) == os.fsencode(latin1)
    result = runner.invoke(cli, base + ["--image", unicode_path, "--json"])
    assert json.loads(result.stdout)["path"] == unicode_path and UNICODE_NAME in result.stdout
    sheet = tmp_path / "sheet.html"
    result = runner.invoke(cli, ["search", "--index", str(folder), "-k", "20", "--image", latin1, "--html", str(sheet)])
    assert result.exit_code == 0, result.output
    page = sheet.read_bytes().decode("utf-8")  # valid UTF-8, whatever the names
    assert "caf\ufffd latin-1.png" in page and UNICODE_NAME in page
    assert Index(folder).search(image=latin1, k=1)[0].path == latin1


def test_nothing_indexable_exits_non_zero(tmp_path, tiny_checkpoint):
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "zero.jpg").write_bytes(b"")
    (only_bad / "notes.png").write_text("not a picture")
    result = index_cli(str(only_bad), "--index", str(tmp_path / "a"), "--checkpoint", str(tiny_checkpoint), *FLAGS)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == ("error: nothing could be indexed: all 2 file(s) or row(s) were "
                                                      "skipped (reasons above); fix or remove them and run again")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = index_cli(str(empty), "--index", str(tmp_path / "b"), "--checkpoint", str(tiny_checkpoint), *FLAGS)
    assert result.exit_code == 2 and "no image files" in result.output.strip().splitlines()[-1]
    assert "Traceback" not in result.output


def test_a_file_unreadable_at_read_time_is_skipped_and_a_fifo_never_blocks(tmp_path, tiny_checkpoint):
    """Works as root too (root reads mode-000 files): a file deleted between the scan and its read
    (at the scan's end, an event) is skipped with the reason; a FIFO, named like an image or behind
    an image-named link, is no image file and never opened (opening one blocks until a writer comes)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(photos / "ok.png")
    Image.new("RGB", (16, 16), (9, 9, 9)).save(photos / "vanishing.png")
    os.mkfifo(photos / "pipe.png")
    os.mkfifo(tmp_path / "pipe")
    (photos / "link.png").symlink_to(tmp_path / "pipe")

    class RemoveAfterScan(Progress):
        def planned(self, plan) -> None:
            assert str(photos / "vanishing.png") in {f.path for f, _ in plan.embed}
            (photos / "vanishing.png").unlink()

    report = Index(tmp_path / "idx", checkpoint=tiny_checkpoint).add([photos], progress=RemoveAfterScan(),
                                                                     runtime=Runtime(workers=0))
    assert report.embedded == 1 and report.scanned == 2
    assert [(Path(p).name, "No such file" in r) for p, r in report.failed] == [("vanishing.png", True)]
    assert set(catalogue(tmp_path / "idx")) == {str(photos / "ok.png")}


def test_bombs_are_refused_before_decoding(hostile):
    photos, _ = hostile
    for name in ("bomb_30000.png", "bomb_12000.png"):
        start = time.perf_counter()
        with pytest.raises(Image.DecompressionBombError, match="decompression bomb"):
            load_image(photos / name)
        assert time.perf_counter() - start < 1.0  # refused from the header, never decoded
    assert load_image(photos / "huge_camera.jpg", draft_size=(64, 64)).size[0] <= 6000 // 8 * 2


# ------------------------------------------------------------------------------------------- SIGKILL


def _count(folder: Path) -> int:
    path = IndexStore(folder).catalog_path
    if not path.exists():
        return 0
    try:
        catalog = Catalog(path, readonly=True)
    except Exception:  # created but no schema yet
        return 0
    try:
        return catalog.count("images")
    except Exception:
        return 0
    finally:
        catalog.close()


def _check_concurrent_access(folder: Path, pid: int, photos: Path, good: set[str], checkpoint: Path) -> None:
    """While `pid` holds the index: a second writer is refused by PID; a search answers from one snapshot."""
    result = index_cli(str(photos), "--index", str(folder), "--checkpoint", str(checkpoint), *FLAGS)
    assert result.exit_code == 2 and f"is locked by PID {pid}" in result.output, result.output
    committed = set(catalogue(folder))
    query = sorted(committed)[0]
    result = CliRunner().invoke(cli, ["search", "--index", str(folder), "--image", query, "--json", "-k", "50"])
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert hits[0]["path"] == query and hits[0]["score"] > 0.999
    assert {h["path"] for h in hits} == committed and committed <= good  # all committed rows, nothing else


KILL_POINTS = {  # phase: (TMV_KILL_AT, the prefix of the one temp file it leaves, or None: none)
    "imports": ("index command", None),
    "lock taken": ("manifest.json", ".manifest.json."),
    "model load": ("model load", None),
    "sync": ("images.*.faiss", ".images."),
}


def test_sigkilled_index_resumes_exactly_and_stays_readable(tmp_path, tiny_checkpoint):
    """Five SIGKILLs of `tmv index`, each at an event, never after a delay: once its imports are done
    (a kill point, before it touches the disk); the moment it takes the lock (its first manifest
    written, not yet renamed); as it loads the model, lock held; mid-embedding (once a commit is seen
    from outside); and inside the FAISS sync after the last commit (the new FAISS file written, not
    yet renamed); then a clean run. Result: exactly one vector per good image, the vectors an
    uninterrupted run computes, FAISS and catalogue agree, no temp files left (each kill inside a
    write left its temp file, checked before the resume). Mid-embedding, searches run against the live
    writer, and with the writer frozen a second `tmv index` is refused by PID and `tmv search` sees
    every committed row."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng_pixels = np.random.default_rng(3)
    for i in range(24):
        Image.fromarray((rng_pixels.random((24, 24, 3)) * 255).astype(np.uint8)).save(photos / f"p{i:02d}.png")
    (photos / "zero.jpg").write_bytes(b"")
    (photos / "notes.png").write_text("not a picture")
    good = {str(p) for p in photos.glob("p*.png")}
    folder = tmp_path / "idx"
    command = [sys.executable, "-m", "tinymvlm.cli", "index", str(photos), "--index", str(folder), "--checkpoint",
               str(tiny_checkpoint), "--workers", "0", "--batch-size", "1", "--precision", "fp32"]
    searcher = Index(folder, checkpoint=tiny_checkpoint, runtime=Runtime(precision="fp32"))
    killed_at: list[tuple[str, int]] = []
    live_searches = 0
    for run, phase in enumerate(["imports", "lock taken", "model load", "mid-embedding", "sync"]):
        before = _count(folder)
        threshold = before + 1  # freeze it at its first commits, long before its last batch releases the lock
        env = {**os.environ, "TMV_KILL_AT": KILL_POINTS[phase][0]} if phase in KILL_POINTS else None
        with open(tmp_path / f"run{run}.log", "wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=log, cwd=tmp_path, env=env)
        started = time.monotonic()
        try:
            if phase in KILL_POINTS:
                proc.wait(timeout=120)
            while proc.poll() is None and time.monotonic() - started < 120:
                if _count(folder) >= threshold:
                    proc.send_signal(signal.SIGSTOP)  # freeze the writer and look at the index from outside
                    _check_concurrent_access(folder, proc.pid, photos, good, tiny_checkpoint)
                    searcher.search(image=sorted(good)[0], k=50)  # loads the model while the writer is frozen
                    proc.send_signal(signal.SIGCONT)
                    hits = searcher.search(image=sorted(good)[0], k=50)  # while the writer commits again
                    assert {h.path for h in hits} <= good and [h.rank for h in hits] == list(range(1, len(hits) + 1))
                    live_searches += 1
                    break
                time.sleep(0.02)  # polling for the commit, not placing the kill
            if phase not in KILL_POINTS:
                assert proc.poll() is None, f"run {run} ({phase}) finished before its kill point"
                proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        killed_at.append((phase, _count(folder)))
        print(f"run {run}: killed {phase} after {time.monotonic() - started:.1f} s with {killed_at[-1][1]} rows")
        temps = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] if folder.exists() else []
        if phase == "imports":
            assert not folder.exists(), "killed before touching the disk, yet the index folder exists"
        elif phase == "model load":
            assert IndexLock(folder).holder() == proc.pid and not temps, temps  # it held the lock; nothing half-written
        elif phase in KILL_POINTS:  # killed inside that write: its temp file is the one trace
            assert len(temps) == 1 and temps[0].startswith(KILL_POINTS[phase][1]), (phase, temps)
        if IndexStore(folder).exists():  # whatever moment it died at, what is on disk is whole
            manifest = IndexStore(folder).read_manifest()
            if manifest["indexes"].get("images"):
                IndexStore(folder).load_faiss(manifest, "images")
    searcher.close()
    counts = [c for _, c in killed_at]
    assert counts == sorted(counts) and any(0 < c < len(good) for c in counts), killed_at
    assert live_searches >= 1

    final = index_cli(*command[4:])  # the same command, uninterrupted (in this process: no start-up cost)
    assert final.exit_code == 0, final.output
    assert "24 embedded" not in final.output and f"index {folder}: 24 images" in final.output
    assert set(catalogue(folder)) == good
    assert_consistent(folder)
    assert IndexStore(folder).read_manifest()["counts"]["skipped"] == 2
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert not IndexLock(folder).held_by_other()
    reference = Index(tmp_path / "ref", checkpoint=tiny_checkpoint)
    reference.add([photos], runtime=Runtime(workers=0, precision="fp32"))
    expected, got = catalogue(tmp_path / "ref"), catalogue(folder)
    for path in good:  # resumed vectors are the vectors an uninterrupted run computes
        np.testing.assert_allclose(got[path], expected[path], atol=1e-5)
