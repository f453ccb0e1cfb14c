"""The SQLite catalogue: the index's source of truth.

Every image row holds its path, size, mtime, content hash and its vector (float32 bytes); every caption
row its source file, text and vector. The FAISS files are derived from these rows and can always be
rebuilt or reconciled from them without re-embedding (store.py), so a crash between writing the two can
lose nothing. Design rules:

* Row ids are the FAISS vector ids, and they are never reused (AUTOINCREMENT): a changed file gets a new
  row, so an id always means the same vector and reconciling FAISS with the catalogue is a set
  difference of ids.
* Triggers bump a per-table generation on every insert and delete, so a reader can tell in O(1) whether
  the FAISS file it loaded matches the catalogue snapshot it reads.
* WAL mode: one writer (under the lock, lock.py) commits a batch at a time while readers keep reading
  the snapshot their transaction started with.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from tinymvlm.errors import TmvError

SCHEMA_VERSION = "2"
READABLE_SCHEMAS = ("1", "2")  # 1: before photo metadata; readable, and migrated by the next writer
KINDS = ("images", "captions")
CATALOG_FILES = ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm")
# Columns copied by a merge (merge.py), the order rows are read in, and what a clash means: an image
# path in two shards is an error; an identical caption is the same vector, kept once.
_COPY = {
    "images": ("path, size, mtime_ns, hash, vector", "path", "INSERT"),
    "captions": ("source, text, vector", "source, text", "INSERT OR IGNORE"),
    "skipped": ("path, size, mtime_ns, reason", "path", "INSERT OR REPLACE"),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (path TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    taken_at TEXT,
    camera TEXT,
    width INTEGER,
    height INTEGER
);
CREATE INDEX IF NOT EXISTS images_hash ON images(hash);
CREATE TABLE IF NOT EXISTS captions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL,
    UNIQUE (source, text)
);
CREATE INDEX IF NOT EXISTS captions_text ON captions(text);
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL
);
INSERT OR IGNORE INTO meta VALUES ('schema', '2'), ('generation:images', '0'), ('generation:captions', '0');
"""

_PHOTO_COLUMNS = (("taken_at", "TEXT"), ("camera", "TEXT"), ("width", "INTEGER"), ("height", "INTEGER"))

_TRIGGERS = "".join(
    f"""
CREATE TRIGGER IF NOT EXISTS {kind}_ins AFTER INSERT ON {kind} BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation:{kind}'; END;
CREATE TRIGGER IF NOT EXISTS {kind}_del AFTER DELETE ON {kind} BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation:{kind}'; END;
""" for kind in KINDS)


@dataclass(frozen=True)
class ImageRow:
    id: int
    path: str
    size: int
    mtime_ns: int
    hash: str


# POSIX file names are bytes; Python spells a byte that is not UTF-8 as a lone surrogate (U+DC80-U+DCFF),
# which SQLite text cannot hold. The catalogue stores such a byte as one of the last 128 code points of
# plane 16 (U+10FF80-U+10FFFF), and prefixes a name's own characters from that range (and the escape,
# U+10FF7F) with the escape: one-to-one and prefix-preserving, so folder queries still work.
_ESC = "\U0010ff7f"
_FS_SPECIAL = re.compile("[\udc80-\udcff\U0010ff7f-\U0010ffff]")
_DB_SPECIAL = re.compile("[\U0010ff7f-\U0010ffff]")


def db_path(path: str) -> str:
    """A file path as the catalogue stores it (see above); the identity for any UTF-8 name."""
    if not _FS_SPECIAL.search(path):
        return path
    return _FS_SPECIAL.sub(lambda m: chr(ord(m[0]) - 0xDC80 + 0x10FF80) if m[0] <= "\udcff" else _ESC + m[0], path)


def fs_path(text: str) -> str:
    """The inverse of db_path: the path as Python's os functions spell it."""
    if not _DB_SPECIAL.search(text):
        return text
    out, chars = [], iter(text)
    for c in chars:
        if c == _ESC:
            out.append(next(chars, ""))
        else:
            out.append(chr(ord(c) - 0x10FF80 + 0xDC80) if c >= "\U0010ff80" else c)
    return "".join(out)


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _under(column: str, roots: Sequence[str]) -> tuple[str, list]:
    """SQL condition and parameters for `column` equal to or below one of `roots` (no LIKE escaping)."""
    clauses, params = [], []
    for root in roots:
        root = db_path(root)
        prefix = root.rstrip(os.sep) + os.sep
        clauses.append(f"({column} = ? OR substr({column}, 1, ?) = ?)")
        params += [root, len(prefix), prefix]
    return " OR ".join(clauses) or "0", params


class CatalogChanged(TmvError):
    """A writer rewrote the catalogue file under a read-only snapshot; read it again."""


class Catalog:
    """A connection to one catalogue file. Not shared between threads or processes.

    `readonly` (searches) opens SQLite read-only and leaves no trace on disk, so a read-only copy or
    mount can be searched: SQLite's own read-only mode creates -wal and -shm files beside a WAL
    database and, being read-only, never removes them. So while no writer is connected (no -wal file:
    every commit is in the main file) the file is opened `immutable`, which reads it as it is; while
    one is, `mode=ro` joins its WAL, whose files exist already. Each snapshot reopens when the file
    changed since, and an immutable snapshot that a writer's checkpoint overlapped raises
    CatalogChanged, for the caller to read again."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._opened: tuple | None = None  # the file's stamp when a read-only connection was opened
        if readonly:
            if not self.path.exists():
                raise TmvError(f"no index catalogue at {self.path}; build the index with 'tmv index PATH'")
            self._connect_readonly()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA + _TRIGGERS)
            self._migrate()
        except sqlite3.OperationalError as exc:
            raise TmvError(f"index catalogue {self.path} cannot be opened for writing ({exc})") from exc
        except sqlite3.DatabaseError as exc:
            raise TmvError(f"index catalogue {self.path} is unreadable ({exc}); rebuild it with 'tmv index --rebuild'") from exc
        self._check_schema()

    def _migrate(self) -> None:
        """Schema 1 -> 2: the photo metadata columns (filled by update.describe_images, no re-embedding)."""
        version = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if version is not None and version[0] == "1":
            with self.transaction():
                have = {row[1] for row in self.db.execute("PRAGMA table_info(images)")}
                for column, sql_type in _PHOTO_COLUMNS:
                    if column not in have:
                        self.db.execute(f"ALTER TABLE images ADD COLUMN {column} {sql_type}")
                self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))
        self.db.execute("CREATE INDEX IF NOT EXISTS images_taken ON images(taken_at)")

    def _stamp(self) -> tuple | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns, os.path.exists(f"{self.path}-wal")

    def _connect_readonly(self) -> None:
        self._opened = self._stamp()
        if self._opened is None:
            raise TmvError(f"index catalogue {self.path} disappeared; is 'tmv index --rebuild' running? try again")
        query = "mode=ro" if self._opened[3] else "mode=ro&immutable=1"
        try:
            self.db = sqlite3.connect(f"{self.path.absolute().as_uri()}?{query}", uri=True, isolation_level=None,
                                      timeout=30)
        except sqlite3.DatabaseError as exc:
            raise TmvError(f"index catalogue {self.path} cannot be opened for reading ({exc}); check that this "
                           "user may read the index folder and its files") from exc
        self._check_schema()

    def _check_schema(self) -> None:
        try:
            version = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.OperationalError as exc:  # "no such table": not a catalogue; else locked, no access...
            if "no such table" in str(exc):
                raise TmvError(f"index catalogue {self.path} is unreadable ({exc}); rebuild it with 'tmv index --rebuild'") from exc
            hint = "; check that this user may read the index folder and its files" if self.readonly else ""
            raise TmvError(f"index catalogue {self.path} cannot be read ({exc}){hint}") from exc
        except sqlite3.DatabaseError as exc:
            raise TmvError(f"index catalogue {self.path} is unreadable ({exc}); rebuild it with 'tmv index --rebuild'") from exc
        if version is None or version[0] not in READABLE_SCHEMAS:
            raise TmvError(f"index catalogue {self.path} has schema {version and version[0]!r}, this tinymvlm reads "
                           f"{', '.join(READABLE_SCHEMAS)}; rebuild it with 'tmv index --rebuild'")
        self.schema = version[0]

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction: everything in it is committed together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees the same committed state."""
        if self.readonly and self._stamp() != self._opened:
            self.db.close()
            self._connect_readonly()
        self.db.execute("BEGIN")
        try:
            self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            yield
        finally:
            self.db.execute("COMMIT")
        if self.readonly and not self._opened[3] and self._stamp() != self._opened:
            raise CatalogChanged(f"index catalogue {self.path} changed while it was read; try again")

    # ------------------------------------------------------------------------------------ generic

    def generation(self, kind: str) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key = ?", (f"generation:{kind}",)).fetchone()[0])

    def count(self, kind: str) -> int:
        return self.db.execute(f"SELECT count(*) FROM {_table(kind)}").fetchone()[0]

    def ids(self, kind: str) -> np.ndarray:
        rows = self.db.execute(f"SELECT id FROM {_table(kind)} ORDER BY id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def vectors(self, kind: str, ids: Sequence[int], dim: int) -> np.ndarray:
        """Vectors of `ids`, in that order."""
        out = np.empty((len(ids), dim), dtype=np.float32)
        found = {}
        for start in range(0, len(ids), 500):
            chunk = [int(i) for i in ids[start:start + 500]]
            marks = ",".join("?" * len(chunk))
            for row_id, blob in self.db.execute(f"SELECT id, vector FROM {_table(kind)} WHERE id IN ({marks})", chunk):
                found[row_id] = blob
        for n, i in enumerate(ids):
            out[n] = np.frombuffer(found[int(i)], dtype=np.float32)
        return out

    def iter_vectors(self, kind: str, dim: int, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of the whole table in id order, a chunk at a time."""
        cursor = self.db.execute(f"SELECT id, vector FROM {_table(kind)} ORDER BY id")
        while rows := cursor.fetchmany(batch):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
            yield ids, vecs

    def labels(self, kind: str, ids: Iterable[int]) -> dict[int, str]:
        """Path (images) or caption text (captions) of each id that still exists."""
        column = "path" if kind == "images" else "text"
        ids = [int(i) for i in ids]
        out: dict[int, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT id, {column} FROM {_table(kind)} WHERE id IN ({marks})", chunk)
            out.update((i, fs_path(label)) if kind == "images" else (i, label) for i, label in rows)
        return out

    # ------------------------------------------------------------------------------------- images

    def roots(self) -> list[str]:
        return [fs_path(r[0]) for r in self.db.execute("SELECT path FROM roots ORDER BY path")]

    def add_roots(self, roots: Iterable[str]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO roots VALUES (?)", [(db_path(r),) for r in roots])

    def images_under(self, roots: Sequence[str]) -> dict[str, ImageRow]:
        where, params = _under("path", roots)
        rows = self.db.execute(f"SELECT id, path, size, mtime_ns, hash FROM images WHERE {where}", params)
        return {fs_path(r[1]): ImageRow(r[0], fs_path(r[1]), *r[2:]) for r in rows}

    def skipped_under(self, roots: Sequence[str]) -> dict[str, tuple[int, int, str]]:
        where, params = _under("path", roots)
        rows = self.db.execute(f"SELECT path, size, mtime_ns, reason FROM skipped WHERE {where}", params)
        return {fs_path(r[0]): (r[1], r[2], r[3]) for r in rows}

    def _pairs_in(self, query: str, values: Iterable) -> dict:
        """Rows of a two-column `query` whose `IN ({marks})` takes `values`, 500 at a time (SQLite
        limits the number of parameters of one statement)."""
        values = list(set(values))
        out: dict = {}
        for start in range(0, len(values), 500):
            chunk = values[start:start + 500]
            out.update(self.db.execute(query.format(marks=",".join("?" * len(chunk))), chunk))
        return out

    def image_ids_by_hash(self, hashes: Iterable[str]) -> dict[str, int]:
        return self._pairs_in("SELECT hash, min(id) FROM images WHERE hash IN ({marks}) GROUP BY hash", hashes)

    def insert_image(self, path: str, size: int, mtime_ns: int, digest: str, vector: np.ndarray | bytes) -> None:
        blob = vector if isinstance(vector, bytes) else to_blob(vector)
        path = db_path(path)
        self.db.execute("INSERT INTO images (path, size, mtime_ns, hash, vector) VALUES (?, ?, ?, ?, ?)",
                        (path, size, mtime_ns, digest, blob))
        self.db.execute("DELETE FROM skipped WHERE path = ?", (path,))

    def image_blob(self, row_id: int) -> bytes:
        return self.db.execute("SELECT vector FROM images WHERE id = ?", (row_id,)).fetchone()[0]

    def move_image(self, row_id: int, path: str, size: int, mtime_ns: int) -> None:
        """A renamed file keeps its row, id and vector: nothing changes on the FAISS side."""
        path = db_path(path)
        self.db.execute("UPDATE images SET path = ?, size = ?, mtime_ns = ? WHERE id = ?", (path, size, mtime_ns, row_id))
        self.db.execute("DELETE FROM skipped WHERE path = ?", (path,))

    def touch_image(self, row_id: int, size: int, mtime_ns: int) -> None:
        """New mtime, same content: the metadata is read again (the taken-at time may be the mtime)."""
        self.db.execute("UPDATE images SET size = ?, mtime_ns = ?, taken_at = NULL WHERE id = ?", (size, mtime_ns, row_id))

    def undescribed_images(self, limit: int) -> list[tuple[int, str, int]]:
        """(id, path, mtime_ns) of up to `limit` images whose photo metadata is not read yet."""
        rows = self.db.execute("SELECT id, path, mtime_ns FROM images WHERE taken_at IS NULL ORDER BY id LIMIT ?", (limit,))
        return [(r[0], fs_path(r[1]), r[2]) for r in rows]

    def describe_images(self, rows: Iterable[tuple[int, str, str | None, int | None, int | None]]) -> None:
        """Store (id, taken_at, camera, width, height) rows of photo metadata."""
        self.db.executemany("UPDATE images SET taken_at = ?, camera = ?, width = ?, height = ? WHERE id = ?",
                            [(taken, camera, width, height, row_id) for row_id, taken, camera, width, height in rows])

    def image_ids_where(self, after: str | None, before: str | None, folders: Sequence[str]) -> np.ndarray:
        """Sorted ids of the images taken at or after `after` and before `before` (ISO times, compared as
        text) and lying under one of `folders` (absolute paths; empty: anywhere)."""
        clauses, params = [], []
        if after is not None:
            clauses.append("taken_at >= ?")
            params.append(after)
        if before is not None:
            clauses.append("taken_at < ?")
            params.append(before)
        if folders:
            where, folder_params = _under("path", folders)
            clauses.append(f"({where})")
            params += folder_params
        sql = "SELECT id FROM images" + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY id"
        rows = self.db.execute(sql, params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def photo_details(self, ids: Iterable[int]) -> dict[int, tuple[str | None, str | None, int | None, int | None]]:
        """{id: (taken_at, camera, width, height)} of the images that still exist."""
        if self.schema == "1":
            return {}
        return {row[0]: tuple(row[1:]) for row in self._rows_in(
            "SELECT id, taken_at, camera, width, height FROM images WHERE id IN ({marks})", [int(i) for i in ids])}

    def _rows_in(self, query: str, values: Sequence) -> list[tuple]:
        out: list[tuple] = []
        for start in range(0, len(values), 500):
            chunk = list(values[start:start + 500])
            out += self.db.execute(query.format(marks=",".join("?" * len(chunk))), chunk).fetchall()
        return out

    def delete_images(self, ids: Iterable[int]) -> None:
        self.db.executemany("DELETE FROM images WHERE id = ?", [(int(i),) for i in ids])

    def record_skip(self, path: str, size: int, mtime_ns: int, reason: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?)", (db_path(path), size, mtime_ns, reason))

    def count_skipped(self) -> int:
        return self.db.execute("SELECT count(*) FROM skipped").fetchone()[0]

    def forget_skips(self, paths: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM skipped WHERE path = ?", [(db_path(p),) for p in paths])

    # ----------------------------------------------------------------------------------- captions

    def captions_of(self, source: str) -> dict[str, int]:
        return dict(self.db.execute("SELECT text, id FROM captions WHERE source = ?", (source,)))

    def caption_blobs_by_text(self, texts: Iterable[str]) -> dict[str, bytes]:
        return self._pairs_in("SELECT text, vector FROM captions WHERE text IN ({marks}) GROUP BY text", texts)

    def insert_caption(self, source: str, text: str, vector: np.ndarray | bytes) -> None:
        blob = vector if isinstance(vector, bytes) else to_blob(vector)
        self.db.execute("INSERT INTO captions (source, text, vector) VALUES (?, ?, ?)", (source, text, blob))

    def delete_captions(self, ids: Iterable[int]) -> None:
        self.db.executemany("DELETE FROM captions WHERE id = ?", [(int(i),) for i in ids])

    # ------------------------------------------------------------------------------------ merging

    def rows(self, table: str, batch: int) -> Iterator[list[tuple]]:
        """Every row of `table` ("images", "captions", "skipped") as merge copies it, in a fixed order."""
        columns, order, _ = _COPY[table]
        cursor = self.db.execute(f"SELECT {columns} FROM {table} ORDER BY {order}")
        while rows := cursor.fetchmany(batch):
            yield rows

    def insert_rows(self, table: str, rows: Sequence[tuple]) -> None:
        """Append rows read by `rows` (new ids for images and captions)."""
        columns, _, verb = _COPY[table]
        marks = ",".join("?" * len(columns.split(",")))
        self.db.executemany(f"{verb} INTO {table} ({columns}) VALUES ({marks})", rows)

    def known_paths(self, paths: Sequence[str]) -> list[str]:
        """Those of `paths` that already have an image row."""
        out: list[str] = []
        for start in range(0, len(paths), 500):
            chunk = list(paths[start:start + 500])
            marks = ",".join("?" * len(chunk))
            out += [r[0] for r in self.db.execute(f"SELECT path FROM images WHERE path IN ({marks})", chunk)]
        return out


def _table(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown vector kind {kind!r}")
    return kind
