"""Applying a scan plan (scan.py) and a caption file to the catalogue, a committed batch at a time.

Order of work in one run: (1) one transaction for everything that needs no model (moves, mtime refreshes,
copied vectors, deletions); (2) embedding, each batch committed in its own transaction together with the
removal of the rows it supersedes and the skip records of its undecodable files; (3) the FAISS files
are synced from the catalogue (store.py). A run killed at any point loses at most the batch in flight:
the next scan finds the committed files unchanged and embeds only the rest.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from tinymvlm.index.caption_files import read_captions
from tinymvlm.index.catalog import Catalog, to_blob
from tinymvlm.index.photo_meta import read_photo_meta
from tinymvlm.index.scan import FileStat, Plan

from tinymvlm.inference.runtime import Runtime

SYNC_EVERY_S = 300.0  # long runs refresh the FAISS files this often, so searches meanwhile stay fast


class Progress:
    """Callbacks an indexing run reports through; the CLI draws them, the API default ignores them."""

    def scanned(self, n_files: int) -> None: ...
    def planned(self, plan: Plan) -> None: ...
    def embedding(self, total: int, what: str) -> None: ...
    def advanced(self, done: int, failed: int) -> None: ...
    def finished_embedding(self) -> None: ...


@dataclass
class IndexReport:
    """What a run did; the counts tests and the CLI summary read."""

    scanned: int = 0
    unchanged: int = 0
    embedded: int = 0  # images decoded and run through the model
    added: int = 0  # new paths now in the catalogue (embedded, copied or duplicate)
    updated: int = 0  # existing paths whose content changed
    moved: int = 0
    copied: int = 0  # vectors reused for new or changed files with known content
    touched: int = 0  # mtime changed, content did not
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), this run
    known_bad: list[tuple[str, str]] = field(default_factory=list)  # unchanged files that failed before
    passed_over: list[str] = field(default_factory=list)  # files under the folders that are no pictures
    described: int = 0  # images whose date, camera and size were read
    captions_added: int = 0
    captions_embedded: int = 0
    captions_removed: int = 0
    captions_kept: int = 0
    caption_skips: list[str] = field(default_factory=list)
    images_per_s: float = 0.0
    counts: dict = field(default_factory=dict)


def apply_metadata(catalog: Catalog, plan: Plan, report: IndexReport) -> None:
    """Everything the plan needs no model for, in one transaction."""
    with catalog.transaction():
        sources = {src for src, _, _ in plan.copied} | {src for _, src, _, _ in plan.replace_copied}
        blobs = {src: catalog.image_blob(src) for src in sources}
        for row_id, st in plan.touched:
            catalog.touch_image(row_id, st.size, st.mtime_ns)
        catalog.delete_images(plan.removed)
        for row_id, st in plan.moved:
            catalog.move_image(row_id, st.path, st.size, st.mtime_ns)
        for src, st, digest in plan.copied:
            catalog.insert_image(st.path, st.size, st.mtime_ns, digest, blobs[src])
        for old, src, st, digest in plan.replace_copied:
            catalog.delete_images([old])
            catalog.insert_image(st.path, st.size, st.mtime_ns, digest, blobs[src])
        for st, reason in plan.failed:
            catalog.record_skip(st.path, st.size, st.mtime_ns, reason)
        catalog.forget_skips(plan.forget_skips)
    report.touched, report.moved, report.removed = len(plan.touched), len(plan.moved), len(plan.removed)
    report.copied = len(plan.copied) + len(plan.replace_copied)
    report.added += len(plan.copied)
    report.updated += len(plan.replace_copied)
    report.failed += [(st.path, reason) for st, reason in plan.failed]


def embed_planned(catalog: Catalog, model, plan: Plan, runtime: Runtime, report: IndexReport,
                 progress: Progress, on_commit=None) -> None:
    """Decode and embed the plan's files, committing each batch (with its duplicates) as it comes. A
    file that fails to decode is recorded as skipped and the run goes on; JPEGs decode in draft mode."""
    from tinymvlm.data.pairs import FileImages
    from tinymvlm.inference.embed import image_batches

    files = [st for st, _ in plan.embed]
    if not files:
        return
    progress.embedding(len(files), "images")
    start, done = time.perf_counter(), 0
    for batch in image_batches(model, FileImages([f.path for f in files]), len(files), runtime, draft=True,
                               keep_going=True):
        with catalog.transaction():
            for pos, vec in zip(batch.positions, batch.vectors):
                st, digest = plan.embed[pos]
                blob = to_blob(vec)
                for file in [st] + plan.duplicates.get(digest, []):
                    _insert_or_replace(catalog, plan, file, digest, blob, report)
            for pos, error in batch.failures:
                st, digest = plan.embed[pos]
                reason = f"cannot decode: {error}"
                for file in [st] + plan.duplicates.get(digest, []):
                    if file.path in plan.replaces:  # the old content is gone; do not keep its vector
                        catalog.delete_images([plan.replaces[file.path]])
                        report.removed += 1
                    catalog.record_skip(file.path, file.size, file.mtime_ns, reason)
                    report.failed.append((file.path, reason))
        done += len(batch.positions) + len(batch.failures)
        report.embedded += len(batch.positions)
        progress.advanced(done, len(report.failed))
        if on_commit is not None:
            on_commit()
    progress.finished_embedding()
    elapsed = time.perf_counter() - start
    report.images_per_s = report.embedded / elapsed if elapsed > 0 else 0.0


def _insert_or_replace(catalog: Catalog, plan: Plan, file: FileStat, digest: str, blob: bytes,
                       report: IndexReport) -> None:
    old = plan.replaces.get(file.path)
    if old is not None:
        catalog.delete_images([old])
        report.updated += 1
    else:
        report.added += 1
    catalog.insert_image(file.path, file.size, file.mtime_ns, digest, blob)


def describe_images(catalog: Catalog, report: IndexReport, batch: int = 500, workers: int = 4) -> None:
    """Read the photo metadata (photo_meta.py) of every image that lacks it: new and touched files, and
    all of an index made before the metadata existed (catalogue schema 1). Headers only, a committed
    batch at a time, so an interrupted run resumes where it stopped."""
    with ThreadPoolExecutor(workers) as pool:
        while rows := catalog.undescribed_images(batch):
            metas = list(pool.map(lambda row: read_photo_meta(row[1], row[2]), rows))
            with catalog.transaction():
                catalog.describe_images((row[0], m.taken_at, m.camera, m.width, m.height) for row, m in zip(rows, metas))
            report.described += len(rows)


def index_captions(catalog: Catalog, model, tokenizer, sources: Sequence[str], column: str | None,
                   runtime: Runtime, report: IndexReport, progress: Progress, batch_size: int = 256) -> None:
    """Make the catalogue's captions of each source file match the file: new lines embedded (or their
    vector copied from an identical caption of another file), vanished lines dropped."""
    from tinymvlm.inference.embed import embed_texts

    for source in sources:
        parsed = read_captions(source, column)
        key = str(parsed.path.resolve())
        report.caption_skips += [str(s) for s in parsed.skipped]
        existing = catalog.captions_of(key)
        wanted = set(parsed.texts)
        gone = [row_id for text, row_id in existing.items() if text not in wanted]
        new = [t for t in parsed.texts if t not in existing]
        known = catalog.caption_blobs_by_text(new)
        with catalog.transaction():
            catalog.delete_captions(gone)
            for text in new:
                if text in known:
                    catalog.insert_caption(key, text, known[text])
        todo = [t for t in new if t not in known]
        report.captions_removed += len(gone)
        report.captions_kept += len(existing) - len(gone)
        report.captions_added += len(new)
        if not todo:
            continue
        progress.embedding(len(todo), "captions")
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            vecs = embed_texts(model, tokenizer, chunk, runtime)
            with catalog.transaction():
                for text, vec in zip(chunk, np.asarray(vecs)):
                    catalog.insert_caption(key, text, vec)
            report.captions_embedded += len(chunk)
            progress.advanced(start + len(chunk), 0)
        progress.finished_embedding()
