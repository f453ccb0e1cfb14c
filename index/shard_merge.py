"""Combining the shards of a sharded `tmv index` (shard.py) into one index: catalogue rows and their
vectors are copied, never re-embedded, then the FAISS files are built from the merged catalogue.

Refused, with the reason: a folder that is not a shard; shards of different shard counts, the same
shard twice or a missing one (the index would silently lack files); shards embedded by different
models (their vectors live in different spaces); shards that indexed different folders (their
partitions would not fit together); an image path in two shards (they disagree about the file);
and an output folder holding an index that was not made by merging (it would be replaced).

Result: image rows in shard order, each shard's in path order, so the same shards always give the same
row ids; captions identical in two shards (same source and text, so the same vector) kept once; the
folders and skip records of all shards. The output's catalogue is filled in one transaction under the
output's lock, with every shard's lock held so that no shard changes while it is read; a merge killed
midway leaves an empty merged index, and running it again replaces that.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tinymvlm.index.catalog import CATALOG_FILES, KINDS, Catalog, fs_path
from tinymvlm.index.shard import shard_folders
from tinymvlm.index.store import IndexStore, ModelInfo
from tinymvlm.index.update import IndexReport, describe_images
from tinymvlm.index.vectors import IndexSpec
from tinymvlm.index.writer_lock import IndexLock

from tinymvlm import killpoint
from tinymvlm.errors import TmvError

CHUNK = 2_000  # rows copied per round trip: bounded memory whatever the shard size


@dataclass
class MergeReport:
    folder: Path  # the merged index
    shards: int
    counts: dict  # images, captions, skipped of the merged index
    seconds: float


@dataclass
class _Shard:
    folder: Path
    index: int
    count: int
    manifest: dict
    roots: list[str]


def merge_shards(shard_dirs: Sequence[str | Path], out: str | Path, spec: IndexSpec | None = None,
                 replace: bool = False, wait: bool = False) -> MergeReport:
    """Merge every shard of one sharded index into `out` (no `shard_dirs`: every OUT/shards/I-of-N);
    `replace` allows overwriting an index at `out` that was not made by merging. `spec` None keeps
    the shards' index type settings."""
    start = time.perf_counter()
    shard_dirs = list(shard_dirs) or shard_folders(Path(out))
    store = IndexStore(out)
    shards = _read_shards(shard_dirs, store.folder)  # before locking: a typo must not create a folder
    with contextlib.ExitStack() as locks:  # no shard may change while it is read
        for folder in [store.folder] + [s.folder for s in shards]:
            locks.enter_context(IndexLock(folder, wait=wait))
        shards = _read_shards(shard_dirs, store.folder)
        _check_output(store, replace)
        first = shards[0].manifest
        _clear(store)
        spec = spec or IndexSpec(**first["spec"])
        record = {"shards": len(shards), "from": [str(s.folder) for s in shards]}
        manifest = store.create(ModelInfo(**first["model"]), spec, {"merged": record})
        catalog = Catalog(store.catalog_path)
        try:
            with catalog.transaction():
                for shard in shards:
                    _copy(catalog, shard, shards)
                    killpoint.reached(f"merge shard {shard.index}")
            describe_images(catalog, IndexReport())  # the photo metadata, read again (a shard may predate it)
            for kind in KINDS:
                manifest = store.sync(catalog, manifest, kind, spec)
            manifest["counts"]["skipped"] = catalog.count_skipped()
            store.write_manifest(manifest)
        finally:
            catalog.close()
    return MergeReport(store.folder, len(shards), dict(manifest["counts"]), time.perf_counter() - start)


def _read_shards(shard_dirs: Sequence[str | Path], out: Path) -> list[_Shard]:
    if not shard_dirs:
        raise TmvError("no shard folders to merge")
    shards = []
    for folder in map(Path, shard_dirs):
        if folder.expanduser().resolve() == out.expanduser().resolve():
            raise TmvError(f"{folder} is the output of the merge; give the shard folders, not the merged index")
        manifest = IndexStore(folder).read_manifest()
        info = manifest.get("shard")
        if not info:
            raise TmvError(f"{folder} is not a shard (it was indexed without --shard or torchrun); only shards merge")
        catalog = Catalog(IndexStore(folder).catalog_path, readonly=True)
        try:
            roots = catalog.roots()
        finally:
            catalog.close()
        shards.append(_Shard(folder, info["index"], info["count"], manifest, roots))
    shards.sort(key=lambda s: (s.count, s.index))
    counts = sorted({s.count for s in shards})
    if len(counts) > 1:
        raise TmvError(f"these shards split the work {' and '.join(map(str, counts))} ways; merge the shards of one run")
    count, seen = counts[0], {}
    for shard in shards:
        if shard.index in seen:
            raise TmvError(f"shard {shard.index}/{count} given twice: {seen[shard.index]} and {shard.folder}")
        seen[shard.index] = shard.folder
    missing = [f"{i}/{count}" for i in range(count) if i not in seen]
    if missing:
        raise TmvError(f"shard(s) {', '.join(missing)} missing: a merge needs all {count}, or files would be lost")
    base = shards[0]
    for shard in shards[1:]:
        a, b = base.manifest["model"], shard.manifest["model"]
        if (a["fingerprint"], a["embed_dim"]) != (b["fingerprint"], b["embed_dim"]):
            raise TmvError(f"shards embedded by different models: {base.folder} by {a['fingerprint']} ({a['checkpoint']}), "
                           f"{shard.folder} by {b['fingerprint']} ({b['checkpoint']}); re-index one with the other's "
                           "--checkpoint and --rebuild")
        if shard.roots != base.roots:
            raise TmvError(f"shards indexed different folders: {base.folder} has {base.roots}, {shard.folder} has "
                           f"{shard.roots}; run every shard over the same folders")
    return shards


def _check_output(store: IndexStore, replace: bool) -> None:
    if not store.exists() or replace:
        return
    manifest = store.read_manifest()
    if manifest.get("shard"):
        raise TmvError(f"{store.folder} is itself a shard; merge into the index folder above its shards/ folder")
    if not manifest.get("merged") and any(manifest.get("counts", {}).get(kind) for kind in KINDS):
        raise TmvError(f"{store.folder} holds an index not made by merging, which the merge would replace; "
                       "choose another --index, or pass --rebuild to replace it")


def _clear(store: IndexStore) -> None:
    """Remove the output's index files, keeping its lock and any shards/ folder inside it."""
    store.manifest_path.unlink(missing_ok=True)
    for name in CATALOG_FILES:
        (store.folder / name).unlink(missing_ok=True)
    for path in store.folder.glob("*.faiss"):
        path.unlink()


def _copy(catalog: Catalog, shard: _Shard, shards: list[_Shard]) -> None:
    """Append one shard's rows to the merged catalogue (inside the caller's transaction). Paths are
    unique within a shard, so a path already there came from an earlier shard. Rows are copied as
    stored (paths in the catalogue's own spelling, catalog.db_path)."""
    source = Catalog(IndexStore(shard.folder).catalog_path, readonly=True)
    try:
        catalog.add_roots(shard.roots)
        for rows in source.rows("images", CHUNK):
            clash = catalog.known_paths([r[0] for r in rows])
            if clash:
                other = next(s.folder for s in shards[:shards.index(shard)] if _has_path(s, clash[0]))
                raise TmvError(f"{fs_path(clash[0])} is in two shards, {other} and {shard.folder}; re-index the shards of one "
                               "run over the same folders (--rebuild starts a shard over)")
            catalog.insert_rows("images", rows)
        for table in ("captions", "skipped"):
            for rows in source.rows(table, CHUNK):
                catalog.insert_rows(table, rows)
    finally:
        source.close()


def _has_path(shard: _Shard, path: str) -> bool:
    source = Catalog(IndexStore(shard.folder).catalog_path, readonly=True)
    try:
        return bool(source.known_paths([path]))
    finally:
        source.close()
