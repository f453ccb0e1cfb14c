"""`tinymvlm.index`: building, incremental updates, interruption, bad files, model and lock checks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import catalogue, read_line
from PIL import Image
from tinymvlm.index import Index, IndexSpec, Progress, vectors
from tinymvlm.index.catalog import Catalog
from tinymvlm.index.store import IndexStore
from tinymvlm.index.writer_lock import IndexLock

from tinymvlm.errors import TmvError
from tinymvlm.inference.runtime import Runtime

FAST = Runtime(batch_size=4, workers=0)


def two_tone(path: Path, a=(200, 20, 20), b=(20, 20, 200), size: int = 48) -> None:
    image = Image.new("RGB", (size, size), a)
    image.paste(Image.new("RGB", (size // 2, size), b), (0, 0))
    image.save(path)


def assert_faiss_matches_catalogue(folder: Path, kind: str = "images") -> None:
    store = IndexStore(folder)
    manifest = store.read_manifest()
    index, entry = store.load_faiss(manifest, kind)
    catalog = Catalog(store.catalog_path, readonly=True)
    try:
        assert entry["generation"] == catalog.generation(kind)
        assert sorted(vectors.ids_of(index).tolist()) == catalog.ids(kind).tolist()
        assert manifest["counts"][kind] == catalog.count(kind) == index.ntotal
    finally:
        catalog.close()


def test_index_then_query_by_own_image_and_caption(tmp_path, colour_folder, tiny_checkpoint):
    idx = Index(tmp_path / "idx", checkpoint=tiny_checkpoint)
    captions = tmp_path / "captions.txt"
    captions.write_text("".join(p.read_text() for p in sorted(colour_folder.glob("*.txt"))), encoding="utf-8")
    report = idx.add([colour_folder], captions=[captions], runtime=FAST)
    assert (report.embedded, report.added, report.failed) == (8, 8, [])
    assert report.captions_embedded == 8
    for image in sorted(colour_folder.glob("*.png")):
        hits = idx.search(image=image, k=3)
        assert hits[0].path == str(image) and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert [h.rank for h in hits] == [1, 2, 3]
    hits = idx.search("a plain purple square", k=2, texts=True)
    assert hits[0].text == "a plain purple square" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    # image→text and text→image run against the right index
    assert idx.search(image=colour_folder / "red.png", texts=True, k=1)[0].kind == "captions"
    assert idx.search("a plain red square", k=1)[0].kind == "images"
    manifest = idx.info()
    assert manifest["model"]["fingerprint"] and manifest["embed_dim"] == 16 and manifest["metric"] == "inner_product"
    assert manifest["counts"] == {"images": 8, "captions": 8, "skipped": 0}
    assert_faiss_matches_catalogue(tmp_path / "idx")
    assert_faiss_matches_catalogue(tmp_path / "idx", "captions")


def test_reindex_does_the_minimum_work(tmp_path, colour_folder, tiny_checkpoint):
    folder = tmp_path / "idx"
    idx = Index(folder, checkpoint=tiny_checkpoint)
    idx.add([colour_folder], runtime=FAST)
    again = idx.add([colour_folder], runtime=FAST)
    assert (again.unchanged, again.embedded, again.removed) == (8, 0, 0)

    old_yellow = catalogue(folder)[str(colour_folder / "yellow.png")]
    two_tone(colour_folder / "new.png")  # added
    two_tone(colour_folder / "red.png", (10, 200, 10), (250, 250, 0))  # modified
    os.utime(colour_folder / "green.png", ns=(1, 10**18))  # touched: new mtime, same bytes
    (colour_folder / "blue.png").unlink()  # deleted
    (colour_folder / "sub").mkdir()
    (colour_folder / "yellow.png").rename(colour_folder / "sub" / "renamed.png")  # moved
    shutil.copy(colour_folder / "black.png", colour_folder / "black copy.png")  # copied
    report = idx.add(runtime=FAST)  # no paths: the folders indexed before
    assert (report.embedded, report.added, report.updated) == (2, 2, 1)
    assert (report.moved, report.copied, report.touched, report.removed) == (1, 1, 1, 1)
    assert report.unchanged == 4 and report.scanned == 9
    state = catalogue(folder)
    assert set(state) == {str(p) for p in colour_folder.rglob("*.png")}
    np.testing.assert_array_equal(state[str(colour_folder / "sub" / "renamed.png")], old_yellow)
    np.testing.assert_array_equal(state[str(colour_folder / "black copy.png")], state[str(colour_folder / "black.png")])
    assert_faiss_matches_catalogue(folder)
    assert idx.search(image=colour_folder / "sub" / "renamed.png", k=1)[0].path == str(colour_folder / "sub" / "renamed.png")
    assert idx.add(runtime=FAST).embedded == 0

    # --rebuild embeds everything again, with the same result
    rebuilt = idx.add([colour_folder], rebuild=True, runtime=FAST)
    assert rebuilt.embedded == 8 and rebuilt.added == 9  # the copy reuses its twin's fresh vector
    assert set(catalogue(folder)) == set(state)


def test_indexing_outside_the_given_folders_keeps_other_rows(tmp_path, tiny_checkpoint):
    from conftest import make_colour_images

    a, b = tmp_path / "a", tmp_path / "b"
    make_colour_images(a)
    make_colour_images(b, fmt="jpg")
    idx = Index(tmp_path / "idx", checkpoint=tiny_checkpoint)
    idx.add([a], runtime=FAST)
    report = idx.add([b], runtime=FAST)
    assert report.removed == 0 and report.counts["images"] == 16


class Interrupt(Progress):
    """Simulates Ctrl-C right after the n-th batch has been committed."""

    def __init__(self, after: int) -> None:
        self.after, self.batches = after, 0

    def advanced(self, done: int, failed: int) -> None:
        self.batches += 1
        if self.batches == self.after:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_index(tmp_path, colour_folder, tiny_checkpoint):
    reference = Index(tmp_path / "ref", checkpoint=tiny_checkpoint)
    reference.add([colour_folder], runtime=FAST)
    folder = tmp_path / "idx"
    idx = Index(folder, checkpoint=tiny_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        idx.add([colour_folder], runtime=Runtime(batch_size=3, workers=0), progress=Interrupt(after=2))
    assert len(catalogue(folder)) == 6  # two batches of 3 committed, nothing else
    assert not IndexLock(folder).held_by_other()
    # the FAISS file is behind the catalogue, yet a search sees the committed rows
    assert Index(folder, checkpoint=tiny_checkpoint).search(image=colour_folder / "black.png", k=1)[0].score > 0.999
    report = idx.add([colour_folder], runtime=Runtime(batch_size=3, workers=0))
    assert (report.unchanged, report.embedded) == (6, 2)
    expected, got = catalogue(tmp_path / "ref"), catalogue(folder)
    assert set(got) == set(expected)
    for path in expected:
        np.testing.assert_allclose(got[path], expected[path], atol=1e-5)
    assert_faiss_matches_catalogue(folder)


def test_sigkilled_run_resumes(tmp_path, tiny_checkpoint):
    """A real SIGKILL in the middle of embedding, at an event (the second batch of 2 committed), not
    a moment: the next run keeps those 4 vectors and finishes the job."""
    from conftest import make_colour_images

    images = tmp_path / "images"
    make_colour_images(images)
    make_colour_images(images / "more", fmt="jpg")
    folder = tmp_path / "idx"
    script = textwrap.dedent(f"""
        import os, signal
        from tinymvlm.index import Index, Progress
        from tinymvlm.inference.runtime import Runtime
        class KillAfterTwoBatches(Progress):
            def advanced(self, done, failed):  # called once a batch is committed
                if done == 4:
                    os.kill(os.getpid(), signal.SIGKILL)
        Index({str(folder)!r}, checkpoint={str(tiny_checkpoint)!r}).add(
            [{str(images)!r}], runtime=Runtime(batch_size=2, workers=0), progress=KillAfterTwoBatches())
    """)
    killed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert len(catalogue(folder)) == 4
    report = Index(folder, checkpoint=tiny_checkpoint).add([images], runtime=FAST)
    assert (report.unchanged, report.embedded) == (4, 12)
    assert len(catalogue(folder)) == 16
    assert_faiss_matches_catalogue(folder)


def test_bad_files_are_skipped_and_reported(tmp_path, colour_folder, tiny_checkpoint):
    (colour_folder / "empty.jpg").write_bytes(b"")
    (colour_folder / "notes.png").write_text("this is not an image")
    good = (colour_folder / "red.png").read_bytes()
    (colour_folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (colour_folder / "readme.md").write_text("ignored: not an image name")
    idx = Index(tmp_path / "idx", checkpoint=tiny_checkpoint)
    report = idx.add([colour_folder], runtime=FAST)
    assert report.embedded == 8
    assert sorted(Path(p).name for p, _ in report.failed) == ["empty.jpg", "notes.png", "truncated.png"]
    assert all("cannot decode" in reason for _, reason in report.failed)
    assert report.counts["skipped"] == 3
    again = idx.add([colour_folder], runtime=FAST)  # unchanged bad files are not retried
    assert again.failed == [] and len(again.known_bad) == 3 and again.embedded == 0
    two_tone(colour_folder / "notes.png")  # fixed: indexed on the next run
    fixed = idx.add([colour_folder], runtime=FAST)
    assert fixed.embedded == 1 and len(fixed.known_bad) == 2
    (colour_folder / "empty.jpg").unlink()
    assert idx.add([colour_folder], runtime=FAST).counts["skipped"] == 1


def test_changed_file_that_became_unreadable_loses_its_old_vector(tmp_path, colour_folder, tiny_checkpoint):
    folder = tmp_path / "idx"
    idx = Index(folder, checkpoint=tiny_checkpoint)
    idx.add([colour_folder], runtime=FAST)
    (colour_folder / "red.png").write_bytes(b"garbage")
    report = idx.add([colour_folder], runtime=FAST)
    assert report.removed == 1 and len(report.failed) == 1
    assert str(colour_folder / "red.png") not in catalogue(folder)
    assert_faiss_matches_catalogue(folder)


def test_another_model_is_refused(tmp_path, colour_folder, tiny_checkpoint, other_checkpoint):
    folder = tmp_path / "idx"
    Index(folder, checkpoint=tiny_checkpoint).add([colour_folder], runtime=FAST)
    with pytest.raises(TmvError, match="was built with model"):
        Index(folder, checkpoint=other_checkpoint).search("red")
    with pytest.raises(TmvError, match="--rebuild"):
        Index(folder, checkpoint=other_checkpoint).add([colour_folder], runtime=FAST)
    # default model: the one the index was built with
    assert Index(folder).search(image=colour_folder / "red.png", k=1)[0].score > 0.999
    # --rebuild with the other model switches the index over
    report = Index(folder, checkpoint=other_checkpoint).add([colour_folder], rebuild=True, runtime=FAST)
    assert report.embedded == 8
    with pytest.raises(TmvError, match="was built with model"):
        Index(folder, checkpoint=tiny_checkpoint).search("red")


def test_second_writer_is_refused_with_the_pid_and_wait_waits_for_the_holder(tmp_path, colour_folder, tiny_checkpoint,
                                                                             monkeypatch):
    """A live holder (it releases when told on stdin): a second writer is refused by PID; with
    `wait` it retries while the holder lives (seen by its own failed attempts, not by a timer),
    writes nothing meanwhile, and indexes once the holder lets go."""
    import filelock

    folder = tmp_path / "idx"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from tinymvlm.index.writer_lock import IndexLock
        with IndexLock({str(folder)!r}):
            print("locked", flush=True)
            sys.stdin.readline()
        print("released", flush=True)
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert read_line(holder.stdout) == "locked"
        with pytest.raises(TmvError, match=f"locked by PID {holder.pid}"):
            Index(folder, checkpoint=tiny_checkpoint).add([colour_folder], runtime=FAST)
        assert IndexLock(folder).held_by_other()

        attempts, retried = [], threading.Event()
        original = filelock.FileLock._acquire

        def counted(self):  # the waiter's attempts on the index lock
            original(self)
            if str(self.lock_file).startswith(str(folder)) and threading.current_thread() is waiter:
                attempts.append(self.is_locked)
                if len(attempts) >= 3:
                    retried.set()

        monkeypatch.setattr(filelock.FileLock, "_acquire", counted)
        outcome = {}
        waiter = threading.Thread(target=lambda: outcome.update(
            report=Index(folder, checkpoint=tiny_checkpoint).add([colour_folder], runtime=FAST, wait=True)))
        waiter.start()
        assert retried.wait(60), "the waiter never retried the lock"
        assert waiter.is_alive() and not any(attempts) and not IndexStore(folder).exists()
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert read_line(holder.stdout) == "released"
        waiter.join(120)
        assert not waiter.is_alive() and attempts[-1] and outcome["report"].embedded == 8
    finally:
        holder.kill()
        holder.wait()


def test_missing_folder_and_missing_index_are_clear_errors(tmp_path, tiny_checkpoint):
    with pytest.raises(TmvError, match="no such file or folder"):
        Index(tmp_path / "idx", checkpoint=tiny_checkpoint).add([tmp_path / "nope"])
    with pytest.raises(TmvError, match="no index at"):
        Index(tmp_path / "none", checkpoint=tiny_checkpoint).search("x")
    with pytest.raises(TmvError, match="nothing to index"):
        Index(tmp_path / "idx2", checkpoint=tiny_checkpoint).add()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_index_types_on_a_small_collection(tmp_path, colour_folder, tiny_checkpoint, kind):
    idx = Index(tmp_path / "idx", checkpoint=tiny_checkpoint)
    idx.add([colour_folder], spec=IndexSpec(type=kind), runtime=FAST)
    entry = idx.info()["indexes"]["images"]
    # too few vectors to train an IVF: exact flat search until there are enough
    assert entry["type"] == ("flat" if kind == "ivf" else kind)
    assert idx.info()["spec"]["type"] == kind
    (colour_folder / "white.png").unlink()  # HNSW cannot delete: rebuilt from the catalogue
    idx.add(runtime=FAST)
    assert idx.search(image=colour_folder / "orange.png", k=1)[0].path == str(colour_folder / "orange.png")
    assert_faiss_matches_catalogue(tmp_path / "idx")


def test_workers_decode_in_parallel(tmp_path, tiny_checkpoint, monkeypatch):
    """workers=2: two worker processes, not this one, decode at the same time (each one's first image
    waits at a two-party barrier, which one process decoding alone would never pass), and the
    vectors are those of decoding in this process."""
    import multiprocessing

    from conftest import make_colour_images

    from tinymvlm.inference import embed

    make_colour_images(tmp_path / "images", size=300, fmt="jpg")
    serial = tmp_path / "serial"
    Index(serial, checkpoint=tiny_checkpoint).add([tmp_path / "images"], runtime=Runtime(batch_size=3, workers=0))

    both_decoding, decoded_by = multiprocessing.Barrier(2, timeout=60), tmp_path / "pids"
    original, started = embed._Pixels.__getitem__, set()

    def decode(self, i):
        if os.getpid() not in started:  # a worker's first image: wait until the other worker decodes too
            started.add(os.getpid())
            both_decoding.wait()
        with open(decoded_by, "a", encoding="ascii") as fh:
            fh.write(f"{os.getpid()}\n")
        return original(self, i)

    monkeypatch.setattr(embed._Pixels, "__getitem__", decode)
    idx = Index(tmp_path / "idx", checkpoint=tiny_checkpoint)
    report = idx.add([tmp_path / "images"], runtime=Runtime(batch_size=3, workers=2))
    assert report.embedded == 8 and not report.failed, report.failed
    pids = decoded_by.read_text(encoding="ascii").split()
    assert len(pids) == 8 and len(set(pids)) == 2 and str(os.getpid()) not in pids
    expected, got = catalogue(serial), catalogue(tmp_path / "idx")
    assert got.keys() == expected.keys()
    for path, vector in expected.items():
        np.testing.assert_allclose(got[path], vector, atol=1e-5)


def test_scan_skips_junk_follows_excludes_and_symlink_loops(tmp_path, tiny_checkpoint):
    from conftest import make_colour_images

    root = tmp_path / "photos"
    make_colour_images(root / "keep")
    for junk in (".hidden", "node_modules", "@eaDir", "__MACOSX", "skipme"):
        make_colour_images(root / junk)
    (root / "keep" / "loop").symlink_to(root, target_is_directory=True)
    idx = Index(tmp_path / "idx", checkpoint=tiny_checkpoint)
    report = idx.add([root], exclude=["skipme"], runtime=FAST)
    assert report.scanned == 8 and report.embedded == 8


def test_exif_orientation_is_applied(tmp_path, tiny_checkpoint):
    photos = tmp_path / "photos"
    photos.mkdir()
    upright = Image.new("RGB", (48, 48), (250, 250, 250))  # square: the centre crop keeps it all
    upright.paste(Image.new("RGB", (24, 48), (200, 10, 10)), (0, 0))
    upright.save(photos / "upright.png")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways writes
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    stored.save(photos / "sideways.jpg", exif=exif, quality=100)
    upright.save(photos / "upright.jpg", quality=100)
    stored.save(photos / "raw.jpg", quality=100)  # the same pixels without the EXIF tag
    folder = tmp_path / "idx"
    Index(folder, checkpoint=tiny_checkpoint).add([photos], runtime=FAST)
    state = catalogue(folder)
    up = state[str(photos / "upright.jpg")]
    sideways, raw = float(state[str(photos / "sideways.jpg")] @ up), float(state[str(photos / "raw.jpg")] @ up)
    assert sideways > 0.999 and sideways - raw > 0.01


def test_python_build_keeps_stored_settings_and_a_query_searches_on_one_thread(tmp_path, colour_folder, tiny_checkpoint):
    import faiss
    from tinymvlm.index.jobs import run_index_job

    run = run_index_job(tmp_path / "idx", [colour_folder], checkpoint=tiny_checkpoint, index_type="ivf",
                      spec_settings={"nlist": 3, "nprobe": 2, "hnsw_m": None}, runtime=FAST)
    assert (run.report.embedded, run.folder, run.index, run.shard, run.merged) == (8, tmp_path / "idx", tmp_path / "idx", None, None)
    idx = Index(tmp_path / "idx", checkpoint=tiny_checkpoint)
    assert idx.spec_with() is None  # nothing given: the index keeps its own
    assert idx.spec_with(nprobe=5) == IndexSpec(type="ivf", nlist=3, nprobe=5)  # given over stored
    assert idx.spec_with("flat", rebuild=True) == IndexSpec(type="flat")  # a rebuild starts from the defaults
    faiss.omp_set_num_threads(2)
    query = Index(tmp_path / "idx", runtime=Runtime.for_queries("cpu"))
    assert query.search("a plain red square", k=1)[0].kind == "images"
    assert faiss.omp_get_max_threads() == 1
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(TmvError, match="cannot read query image .*broken.png: "):
        query.search(image=tmp_path / "broken.png")


def test_exclude_globs_with_a_slash_match_below_the_root_at_any_depth(tmp_path):
    """README's `--exclude "*/thumbnails/*"` skips a thumbnails folder right under the indexed folder
    as well as deeper ones; `sub/raw` (a path below the root) skips that folder alone."""
    from tinymvlm.image_files import iter_image_files

    root = tmp_path / "Pictures"
    for rel in ("a.jpg", "thumbnails/t1.jpg", "sub/thumbnails/t2.jpg", "sub/keep.jpg", "sub/raw/x.png",
                "other/raw/y.png", "thumbnails.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / rel)
    found = lambda *patterns: sorted(str(p.relative_to(root)) for p in iter_image_files(root, patterns))  # noqa: E731
    assert found("*/thumbnails/*") == ["a.jpg", "other/raw/y.png", "sub/keep.jpg", "sub/raw/x.png", "thumbnails.jpg"]
    assert found("sub/raw") == ["a.jpg", "other/raw/y.png", "sub/keep.jpg", "sub/thumbnails/t2.jpg", "thumbnails.jpg",
                                "thumbnails/t1.jpg"]
    assert found("/thumbnails", "*.png") == ["a.jpg", "sub/keep.jpg", "sub/thumbnails/t2.jpg", "thumbnails.jpg"]
