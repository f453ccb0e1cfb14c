"""Comparing the image files under some folders with the catalogue: what to embed, move, copy, drop.

The rules that make re-indexing incremental:

* same path, size and mtime as the catalogue row: unchanged, not even read;
* a changed size or mtime: the file is hashed; the same hash only refreshes size/mtime, a new hash means
  new content (a new row and vector; the old row goes when the new one is committed);
* a new path whose hash matches a catalogue row whose file has disappeared: a move/rename, the row is
  re-pointed and keeps its id and vector, so FAISS does not change;
* a new path whose hash matches a row that still exists (a copy), or another new file: the vector is
  copied, not re-embedded;
* a catalogue row under the scanned folders whose file is gone (and was not moved): dropped;
* a file that failed to decode before and has the same size and mtime: not retried (reported as known).

Only rows under the folders given to this run are considered, so indexing ~/Photos never drops rows of
~/Scans. Content hashes are BLAKE2b-128 of the whole file, computed in threads (hashlib releases the GIL).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tinymvlm.index.catalog import Catalog, ImageRow

from tinymvlm.errors import TmvError
from tinymvlm.image_files import iter_image_files


@dataclass(frozen=True)
class FileStat:
    path: str
    size: int
    mtime_ns: int


@dataclass
class Plan:
    """What one run does to the catalogue."""

    unchanged: int = 0
    touched: list[tuple[int, FileStat]] = field(default_factory=list)  # row id, new stat (same content)
    moved: list[tuple[int, FileStat]] = field(default_factory=list)  # row id, new path
    copied: list[tuple[int, FileStat, str]] = field(default_factory=list)  # source row id, new file, hash
    replace_copied: list[tuple[int, int, FileStat, str]] = field(default_factory=list)  # old id, source id, file, hash
    embed: list[tuple[FileStat, str]] = field(default_factory=list)  # files to decode and embed, with hash
    replaces: dict[str, int] = field(default_factory=dict)  # path -> old row id it supersedes
    duplicates: dict[str, list[FileStat]] = field(default_factory=dict)  # hash -> more new files with it
    removed: list[int] = field(default_factory=list)
    failed: list[tuple[FileStat, str]] = field(default_factory=list)  # unreadable while scanning/hashing
    known_bad: list[tuple[str, str]] = field(default_factory=list)  # path, reason from an earlier run
    forget_skips: list[str] = field(default_factory=list)  # skip records of files no longer there
    passed_over: list[str] = field(default_factory=list)  # files that are no pictures (videos, documents...)

    @property
    def scanned(self) -> int:
        return (self.unchanged + len(self.touched) + len(self.moved) + len(self.copied) + len(self.replace_copied)
                + len(self.embed) + sum(map(len, self.duplicates.values())) + len(self.failed) + len(self.known_bad))


def normalise_roots(paths: Iterable[str | Path]) -> list[str]:
    """Absolute paths (symlinks kept as the user wrote them); a missing one is an error, so a folder on an
    unmounted drive is never mistaken for a folder whose photos were all deleted."""
    roots = []
    for p in paths:
        root = os.path.abspath(os.path.expanduser(os.fspath(p)))
        if not os.path.exists(root):
            raise TmvError(f"{p}: no such file or folder")
        roots.append(root)
    return sorted(set(roots))


def walk(roots: Sequence[str], exclude: Sequence[str] = (), on_file: Callable[[int], None] | None = None
         ) -> tuple[dict[str, FileStat], list[tuple[FileStat, str]], list[str]]:
    """Stat every image file under `roots`: ({path: stat}, [(file, reason) that cannot be stat'ed],
    [the other files, passed over])."""
    found: dict[str, FileStat] = {}
    failed: list[tuple[FileStat, str]] = []
    others: list[Path] = []
    for root in roots:
        for file in iter_image_files(root, exclude, others):
            path = os.fspath(file)
            if path in found:
                continue
            try:
                st = os.stat(path)
            except OSError as exc:
                failed.append((FileStat(path, 0, 0), f"cannot read: {exc.strerror or exc}"))
                continue
            found[path] = FileStat(path, st.st_size, st.st_mtime_ns)
            if on_file is not None:
                on_file(len(found))
    return found, failed, sorted(set(map(os.fspath, others)))


def file_hash(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def hash_files(files: Sequence[FileStat], workers: int = 4) -> tuple[dict[str, str], list[tuple[FileStat, str]]]:
    def one(f: FileStat) -> tuple[FileStat, str | None, str | None]:
        try:
            return f, file_hash(f.path), None
        except OSError as exc:
            return f, None, f"cannot read: {exc.strerror or exc}"

    hashes, failed = {}, []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for f, digest, error in pool.map(one, files):
            if digest is None:
                failed.append((f, error))
            else:
                hashes[f.path] = digest
    return hashes, failed


def plan_images(catalog: Catalog, roots: Sequence[str], exclude: Sequence[str] = (),
                on_file: Callable[[int], None] | None = None, keep: Callable[[str], bool] | None = None) -> Plan:
    """Scan `roots` and decide, file by file, the least work that brings the catalogue up to date.
    `keep` limits the run to the files it accepts (a shard's share, shard.py), before any is hashed."""
    found, stat_failed, passed_over = walk(roots, exclude, on_file)
    if keep is not None:
        found = {path: st for path, st in found.items() if keep(path)}
        stat_failed = [(st, reason) for st, reason in stat_failed if keep(st.path)]
        passed_over = [path for path in passed_over if keep(path)]
    rows = catalog.images_under(roots)
    skips = catalog.skipped_under(roots)
    plan = Plan(failed=list(stat_failed), passed_over=passed_over)
    unstatable = {st.path for st, _ in stat_failed}  # still there, still failing: keep their records
    plan.forget_skips = [p for p in skips if p not in found and p not in unstatable]

    new: list[FileStat] = []
    changed: list[tuple[FileStat, ImageRow]] = []
    for path, st in found.items():
        row = rows.get(path)
        if row is not None and row.size == st.size and row.mtime_ns == st.mtime_ns:
            plan.unchanged += 1
        elif path in skips and skips[path][:2] == (st.size, st.mtime_ns):
            plan.known_bad.append((path, skips[path][2]))
        elif row is None:
            new.append(st)
        else:
            changed.append((st, row))
    gone = {path: row for path, row in rows.items() if path not in found}

    hashes, hash_failed = hash_files(new + [st for st, _ in changed])
    plan.failed += hash_failed
    failed_paths = {f.path for f, _ in hash_failed}
    gone_by_hash: dict[str, list[ImageRow]] = {}
    for row in gone.values():
        gone_by_hash.setdefault(row.hash, []).append(row)
    existing = catalog.image_ids_by_hash(hashes.values())
    pending: dict[str, FileStat] = {}  # hash -> first new file to embed with it

    for st, row in changed:
        if st.path in failed_paths:
            continue
        digest = hashes[st.path]
        if digest == row.hash:
            plan.touched.append((row.id, st))
        elif digest in existing and existing[digest] != row.id:
            plan.replace_copied.append((row.id, existing[digest], st, digest))
        else:
            plan.replaces[st.path] = row.id
            _embed_or_duplicate(plan, pending, st, digest)
    moved_ids = set()
    for st in new:
        if st.path in failed_paths:
            continue
        digest = hashes[st.path]
        if gone_by_hash.get(digest):
            row = gone_by_hash[digest].pop()
            plan.moved.append((row.id, st))
            moved_ids.add(row.id)
        elif digest in existing:
            plan.copied.append((existing[digest], st, digest))
        else:
            _embed_or_duplicate(plan, pending, st, digest)
    plan.removed = [row.id for row in gone.values() if row.id not in moved_ids]
    return plan


def _embed_or_duplicate(plan: Plan, pending: dict[str, FileStat], st: FileStat, digest: str) -> None:
    if digest in pending:
        plan.duplicates.setdefault(digest, []).append(st)
    else:
        pending[digest] = st
        plan.embed.append((st, digest))
