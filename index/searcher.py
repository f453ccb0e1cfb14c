"""Searching an index: embed the query terms, search FAISS, name the hits from one catalogue snapshot.

A search never takes the writer's lock. Each query runs inside one SQLite read transaction, so the ids
it returns and the paths or captions it prints come from the same committed state even while `tmv index`
is committing batches. The FAISS file may be older than that state (written at the end of a run, or left
by a killed run) or newer (saved after the snapshot began); the reader then catches up in memory: ids
the snapshot lacks are filtered out of the FAISS results, and vectors FAISS lacks are searched exactly
from the catalogue beside it. Nothing on disk is changed by a search, and a read-only copy of an
index can be searched (catalog.py opens the catalogue read-only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tinymvlm.index import vectors
from tinymvlm.index.catalog import Catalog, CatalogChanged
from tinymvlm.index.filters import SearchFilter
from tinymvlm.index.query_syntax import Term
from tinymvlm.index.store import IndexStore

from tinymvlm.errors import TmvError


TYPICAL_SAMPLE = 1000


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    id: int
    kind: str  # "images" or "captions"
    label: str  # the image's path or the caption's text

    @property
    def path(self) -> str | None:
        return self.label if self.kind == "images" else None

    @property
    def text(self) -> str | None:
        return self.label if self.kind == "captions" else None

    def to_dict(self) -> dict:
        key = "path" if self.kind == "images" else "caption"
        return {"rank": self.rank, "score": round(self.score, 6), key: self.label, "id": self.id}


@dataclass
class _View:
    index: object | None  # faiss.Index
    entry: dict | None
    ids: np.ndarray | None = None  # FAISS's ids, computed when a catch-up first needs them
    catchup: tuple | None = None  # (snapshot generation, extra ids, missing ids, missing vectors)


class Searcher:
    """Searches one index folder; reloads the FAISS files when a writer replaces them."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store
        self.manifest = store.read_manifest()
        self._manifest_stamp = self._stamp()
        self.catalog = Catalog(store.catalog_path, readonly=True)
        self._views: dict[str, _View] = {}
        self._samples: dict[str, tuple[int, np.ndarray]] = {}  # kind -> (generation, sample vectors)

    def close(self) -> None:
        self.catalog.close()

    def _stamp(self) -> int:
        try:
            return self.store.manifest_path.stat().st_mtime_ns
        except OSError:
            return 0

    def _view(self, kind: str) -> _View:
        stamp = self._stamp()
        if stamp != self._manifest_stamp:
            self.manifest, self._manifest_stamp, self._views = self.store.read_manifest(), stamp, {}
        if kind not in self._views:
            for _ in range(5):  # a writer may replace the file between our manifest read and its open
                try:
                    index, entry = self.store.load_faiss(self.manifest, kind)
                    break
                except FileNotFoundError:
                    self.manifest, self._manifest_stamp = self.store.read_manifest(), self._stamp()
            else:
                raise TmvError(f"index {self.store.folder} keeps changing under the search; try again")
            self._views[kind] = _View(index, entry)
        return self._views[kind]

    def search(self, query: np.ndarray, k: int = 10, kind: str = "images", nprobe: int | None = None,
               ef_search: int | None = None, where: SearchFilter | None = None,
               min_score: float | None = None) -> list[Hit]:
        """Top-k hits for one normalised query vector: among the images `where` allows (all: None), and
        none scoring below `min_score`."""
        if k < 1:
            raise TmvError("-k/--top must be at least 1")
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        dim = self.manifest["embed_dim"]
        if query.shape[1] != dim:
            raise TmvError(f"query vector has {query.shape[1]} dimensions, the index {dim}")
        if where is not None and not where.active:
            where = None
        if where is not None and kind != "images":
            raise TmvError("date and folder filters apply to image searches, not to captions")
        view = self._view(kind)
        tries = 5  # a writer's checkpoint overlapping a read is rare; a second read sees it whole
        while True:
            try:
                hits = self._search(view, kind, query, k, dim, nprobe, ef_search, where)
                break
            except CatalogChanged:
                tries -= 1
                if not tries:
                    raise
        return hits if min_score is None else [hit for hit in hits if hit.score >= min_score]

    def typical_score(self, query: np.ndarray, kind: str = "images") -> float | None:
        """The median score of `query` over a fixed random sample of the collection (at most
        TYPICAL_SAMPLE vectors): what an unrelated item scores, the floor a relative cut-off measures
        from. None for an empty collection."""
        with self.catalog.snapshot():
            generation = self.catalog.generation(kind)
            cached = self._samples.get(kind)
            if cached is None or cached[0] != generation:
                ids = self.catalog.ids(kind)
                ids = vectors.sample_ids(ids, TYPICAL_SAMPLE)
                cached = self._samples[kind] = (generation, self.catalog.vectors(kind, ids, self.manifest["embed_dim"]))
        sample = cached[1]
        if not len(sample):
            return None
        return float(np.median(sample @ np.asarray(query, dtype=np.float32).reshape(-1)))

    def _allowed(self, where: SearchFilter | None) -> np.ndarray | None:
        """The image ids a filter allows, from the current snapshot (None: no filter)."""
        if where is None:
            return None
        if (where.after or where.before) and self.catalog.schema == "1":
            raise TmvError(f"index {self.store.folder} predates photo dates; run 'tmv index --index "
                           f"{self.store.folder}' once to read them (nothing is embedded again)")
        folders = where.folder_paths(self.catalog.roots()) if where.folders else []
        return self.catalog.image_ids_where(where.after, where.before, folders)

    def _search(self, view: _View, kind: str, query: np.ndarray, k: int, dim: int, nprobe: int | None,
                ef_search: int | None, where: SearchFilter | None) -> list[Hit]:
        with self.catalog.snapshot():
            generation = self.catalog.generation(kind)
            allowed = self._allowed(where)
            if allowed is not None and not len(allowed):
                return []
            params = None
            if view.index is not None:
                nprobe = nprobe or view.entry["params"].get("nprobe")
                ef_search = ef_search or view.entry["params"].get("ef_search")
                vectors.set_search_params(view.index, view.entry["type"], nprobe, ef_search)
                if allowed is not None:
                    params = vectors.selection(view.entry["type"], allowed, nprobe, ef_search)
            if view.index is not None and view.entry["generation"] == generation:
                scores, ids = vectors.search(view.index, query, k, params)
                scores, ids = scores[0], ids[0]
            else:
                scores, ids = self._catch_up_search(view, kind, generation, query, k, dim, params, allowed)
            keep = ids >= 0
            scores, ids = scores[keep], ids[keep]
            if allowed is not None and len(ids) < min(k, len(allowed)):
                # An IVF's probed cells or an HNSW graph walk held too few of the allowed images: the
                # allowed set is small, so search it exactly from the catalogue's vectors.
                scores, ids = vectors.brute_force(allowed, self.catalog.vectors(kind, allowed, dim), query, k)
                scores, ids = scores[0], ids[0]
            labels = self.catalog.labels(kind, ids.tolist())
        hits = [(float(s), int(i)) for s, i in zip(scores, ids) if int(i) in labels]
        return [Hit(rank, s, i, kind, labels[i]) for rank, (s, i) in enumerate(hits[:k], start=1)]

    def _catch_up_search(self, view: _View, kind: str, generation: int, query: np.ndarray, k: int, dim: int,
                         params=None, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if view.catchup is None or view.catchup[0] != generation:
            snapshot_ids = self.catalog.ids(kind)
            if view.index is not None and view.ids is None:
                view.ids = vectors.ids_of(view.index)
            have = view.ids if view.index is not None else np.empty(0, np.int64)
            extra = np.setdiff1d(have, snapshot_ids, assume_unique=True)
            missing = np.setdiff1d(snapshot_ids, have, assume_unique=True)
            view.catchup = (generation, set(extra.tolist()), missing, self.catalog.vectors(kind, missing, dim))
        _, extra, missing, missing_vecs = view.catchup
        results = []
        if view.index is not None:
            scores, ids = vectors.search(view.index, query, k + len(extra), params)
            results += [(s, i) for s, i in zip(scores[0], ids[0]) if i >= 0 and int(i) not in extra]
        if allowed is not None:
            chosen = np.isin(missing, allowed)
            missing, missing_vecs = missing[chosen], missing_vecs[chosen]
        side_scores, side_ids = vectors.brute_force(missing, missing_vecs, query, k)
        results += list(zip(side_scores[0], side_ids[0]))
        results.sort(key=lambda r: -r[0])
        results = results[:k]
        return (np.array([r[0] for r in results], dtype=np.float32), np.array([r[1] for r in results], dtype=np.int64))


def combine(terms: list[Term], term_vectors: np.ndarray) -> np.ndarray:
    """The weighted sum of the terms' (normalised) embeddings, normalised."""
    weights = np.array([t.weight for t in terms], dtype=np.float32)[:, None]
    vec = (weights * term_vectors).sum(axis=0)
    norm = float(np.linalg.norm(vec))
    if norm < 1e-6:
        raise TmvError("the query terms cancel out; change their weights")
    return vec / norm
