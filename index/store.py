"""The index folder: layout, manifest, model check, and keeping the FAISS files in step with the catalogue.

Layout of an index folder (default: $TMV_INDEX, else the user data folder's tinymvlm/index, on Linux
$XDG_DATA_HOME/tinymvlm/index or ~/.local/share/tinymvlm/index; `--index DIR` chooses another):

    manifest.json              format version, model fingerprint and checkpoint, embed dim, metric, the
                               requested index spec, and per kind ("images", "captions") the FAISS file,
                               its type and parameters, the catalogue generation it was built from, counts
    catalog.sqlite (+ -wal)    the source of truth (catalog.py): paths, sizes, mtimes, hashes, captions, vectors
    images.<gen>.faiss         FAISS index of the image vectors as of catalogue generation <gen>
    captions.<gen>.faiss       the same for captions
    lock                       the writer's lock file with its PID (lock.py)

Every file is written atomically (temp file + rename), the FAISS file before the manifest that names it,
and the previous FAISS file is kept one round longer, so a reader that loaded the old manifest can still
open what it names and a crash at any point leaves a manifest naming a complete file. A FAISS file older
than the catalogue (a killed run) is brought up to date by the next writer, and meanwhile readers catch
up in memory (search.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import platformdirs
from tinymvlm.index import vectors
from tinymvlm.index.catalog import Catalog
from tinymvlm.index.vectors import IndexSpec

from tinymvlm.atomic import atomic_path, write_text
from tinymvlm.errors import TmvError

log = logging.getLogger(__name__)

FORMAT = "tinymvlm-index/1"
MANIFEST = "manifest.json"
CATALOG = "catalog.sqlite"
METRIC = "inner_product"


def default_index_dir() -> Path:
    """$TMV_INDEX, else the platform's user data folder (platformdirs) + tinymvlm/index: on Linux
    $XDG_DATA_HOME or ~/.local/share, on macOS ~/Library/Application Support, on Windows %LOCALAPPDATA%."""
    if os.environ.get("TMV_INDEX"):
        return Path(os.environ["TMV_INDEX"]).expanduser()
    return Path(platformdirs.user_data_dir("tinymvlm", appauthor=False)) / "index"


@dataclass(frozen=True)
class ModelInfo:
    """What identifies the model that made an index's vectors."""

    fingerprint: str
    checkpoint: str
    embed_dim: int
    image_arch: str

    def to_dict(self) -> dict:
        return {"fingerprint": self.fingerprint, "checkpoint": self.checkpoint, "embed_dim": self.embed_dim,
                "image_arch": self.image_arch}


class IndexStore:
    """One index folder. Writers must hold its lock (lock.py); readers need nothing."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else default_index_dir()
        self.manifest_path = self.folder / MANIFEST
        self.catalog_path = self.folder / CATALOG

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict:
        if not self.exists():
            raise TmvError(f"no index at {self.folder}; build one with 'tmv index PATH' (or pass --index DIR)")
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TmvError(f"index manifest {self.manifest_path} is unreadable ({exc}); rebuild with 'tmv index --rebuild'") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise TmvError(f"{self.folder} holds an index of format {manifest.get('format') if isinstance(manifest, dict) else '?'!r}, "
                           f"this tinymvlm reads {FORMAT}; rebuild it with 'tmv index --rebuild'")
        return manifest

    def write_manifest(self, manifest: dict) -> None:
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_text(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    def check_model(self, manifest: dict, model: ModelInfo) -> None:
        """Refuse to mix vectors of two models: they live in different spaces."""
        built = manifest["model"]
        if built["fingerprint"] != model.fingerprint or built["embed_dim"] != model.embed_dim:
            sizes = (f" ({built['embed_dim']}-dimensional vectors, this model embeds {model.embed_dim})"
                     if built["embed_dim"] != model.embed_dim else "")
            raise TmvError(
                f"index {self.folder} was built with model {built['fingerprint']} ({built['checkpoint']}){sizes}, "
                f"not {model.fingerprint} ({model.checkpoint}); pass --model {built['checkpoint']}, "
                "or re-embed everything with this model: 'tmv index --rebuild'")

    def create(self, model: ModelInfo, spec: IndexSpec, extra: dict | None = None) -> dict:
        """A fresh manifest for an empty index (the caller holds the lock); `extra` adds keys from the
        start, such as a shard's identity (shard.py), so no crash can leave a manifest without them.
        `instance` names this creation: a rebuild within the same second as `created` is still another index."""
        manifest = {"format": FORMAT, "model": model.to_dict(), "embed_dim": model.embed_dim, "metric": METRIC,
                    "spec": spec.to_dict(), "indexes": {}, "counts": {"images": 0, "captions": 0, "skipped": 0},
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "instance": uuid.uuid4().hex, **(extra or {})}
        self.write_manifest(manifest)
        return manifest

    def wipe(self) -> None:
        """Delete everything but the lock (for --rebuild; the caller holds the lock)."""
        for path in self.folder.iterdir() if self.folder.is_dir() else ():
            if path.name == "lock":
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()

    # ------------------------------------------------------------------------------------- FAISS

    def load_faiss(self, manifest: dict, kind: str) -> tuple[faiss.Index | None, dict | None]:
        """The FAISS index the manifest names for `kind` (None when it has none yet)."""
        entry = manifest.get("indexes", {}).get(kind)
        if not entry:
            return None, None
        path = self.folder / entry["file"]
        try:
            return faiss.read_index(str(path)), entry
        except RuntimeError as exc:
            if not path.exists():
                raise FileNotFoundError(path) from exc
            raise TmvError(f"FAISS file {path} is unreadable; rebuild it from the catalogue with 'tmv index' "
                           "(no re-embedding needed)") from exc

    def sync(self, catalog: Catalog, manifest: dict, kind: str, spec: IndexSpec) -> dict:
        """Bring `kind`'s FAISS file up to the catalogue (caller holds the lock); returns the manifest."""
        dim = manifest["embed_dim"]
        generation, n = catalog.generation(kind), catalog.count(kind)
        want_kind, want_params = vectors.resolve(spec, n)
        entry = manifest["indexes"].get(kind)
        if entry and entry["generation"] == generation and entry["type"] == want_kind and not vectors.needs_refit(
                entry["type"], entry["params"], want_kind, want_params, removing=False):
            if entry["params"] != want_params:  # search-time parameters only (nprobe, ef_search)
                entry["params"] = want_params
                self.write_manifest(manifest)
            return manifest
        try:
            index, _ = self.load_faiss(manifest, kind)
        except (FileNotFoundError, TmvError) as exc:
            log.warning("rebuilding the %s FAISS index from the catalogue: %s", kind, exc)
            index = None
        if index is not None:
            have = vectors.ids_of(index)
            want = catalog.ids(kind)
            extra = np.setdiff1d(have, want, assume_unique=True)
            missing = np.setdiff1d(want, have, assume_unique=True)
            if vectors.needs_refit(entry["type"], entry["params"], want_kind, want_params, removing=len(extra) > 0):
                index = None
            else:
                vectors.remove(index, extra)
                for start in range(0, len(missing), 50_000):
                    chunk = missing[start:start + 50_000]
                    vectors.add(index, chunk, catalog.vectors(kind, chunk, dim))
        if index is None:
            index = self._build(catalog, kind, want_kind, want_params, dim)
        name = f"{kind}.{generation}.faiss"
        with atomic_path(self.folder / name) as tmp:
            faiss.write_index(index, str(tmp))
        previous = entry["file"] if entry else None
        manifest["indexes"][kind] = {"file": name, "generation": generation, "type": want_kind, "params": want_params,
                                     "count": int(index.ntotal)}
        manifest["counts"][kind] = int(index.ntotal)
        self.write_manifest(manifest)
        for old in self.folder.glob(f"{kind}.*.faiss"):
            if old.name not in (name, previous):
                old.unlink(missing_ok=True)
        return manifest

    def _build(self, catalog: Catalog, kind: str, index_type: str, params: dict, dim: int) -> faiss.Index:
        log.info("building a %s %s index of %d vectors", index_type, kind, catalog.count(kind))
        index = vectors.empty(index_type, params, dim)
        if index_type == "ivf":
            sample = vectors.train_sample(catalog.ids(kind), params)
            vectors.train(index, index_type, catalog.vectors(kind, sample, dim))
        for ids, vecs in catalog.iter_vectors(kind, dim):
            vectors.add(index, ids, vecs)
        return index
