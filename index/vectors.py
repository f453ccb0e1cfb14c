"""FAISS index types, and keeping one in step with the catalogue.

All vectors are L2-normalised, so inner product is cosine similarity; every type uses METRIC_INNER_PRODUCT
and the catalogue's row ids as FAISS ids.

* `flat`: exact search (IndexFlatIP in an IndexIDMap2). Adds and removes in place.
* `ivf`: IndexIVFFlat with `nlist` k-means cells (default about 4·sqrt(n)), `nprobe` cells searched per
  query. Adds and removes in place; re-trained from the catalogue when the collection has grown or
  shrunk fourfold since training, because the cells no longer fit it. Training wants at least
  IVF_MIN_POINTS_PER_LIST vectors per cell: with fewer vectors `nlist` is reduced, and below
  IVF_MIN_VECTORS the index stays `flat` (exact, and fast at that size) until a later run has enough.
* `hnsw`: IndexHNSWFlat (graph, no training) in an IndexIDMap2. Adds in place; HNSW cannot delete, so a
  run that removes vectors rebuilds it from the catalogue.
* `auto` (default): `flat` below APPROX_THRESHOLD vectors, `ivf` from there on. Measured on 2 cores
  (benchmarks/bench_search.py, dim 256, one thread): exact search takes ~4 ms p50 per query at 100k
  and ~50 ms at 1M, so up to 200k it stays under ~10 ms and is always right; IVF (nprobe 32) answered
  in under 0.5 ms p50 at 1M with recall@10 0.998-1.0 on clustered synthetic vectors (real embeddings
  are less clustered: raise nprobe if recall matters more than speed). IVF rather than HNSW by default
  because it deletes in place and builds in about two minutes at 1M where HNSW takes far longer.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Iterable

import faiss
import numpy as np

from tinymvlm.errors import TmvError

log = logging.getLogger(__name__)

APPROX_THRESHOLD = 200_000
IVF_MIN_POINTS_PER_LIST = 39  # FAISS's own k-means warning threshold
IVF_MIN_VECTORS = 2_000
IVF_TRAIN_SAMPLE_PER_LIST = 64
REFIT_FACTOR = 4
TYPES = ("auto", "flat", "ivf", "hnsw")


@dataclass
class IndexSpec:
    """What the user asked for; `resolve` turns it into the concrete type for a collection's size."""

    type: str = "auto"
    nlist: int | None = None  # ivf cells; None: about 4*sqrt(n)
    nprobe: int = 32  # ivf cells searched per query
    hnsw_m: int = 32  # hnsw graph degree
    ef_construction: int = 80
    ef_search: int = 96

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise TmvError(f"index type must be one of {', '.join(TYPES)}, not '{self.type}'")
        for name in ("nprobe", "hnsw_m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise TmvError(f"--{name.replace('_', '-')} must be at least 1")
        if self.nlist is not None and self.nlist < 1:
            raise TmvError("--nlist must be at least 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve(spec: IndexSpec, n: int) -> tuple[str, dict]:
    """(concrete type, build parameters) for `n` vectors."""
    kind = spec.type
    if kind == "auto":
        kind = "ivf" if n >= APPROX_THRESHOLD else "flat"
    if kind == "ivf":
        nlist = spec.nlist or max(1, int(4 * math.sqrt(n)))
        nlist = min(nlist, n // IVF_MIN_POINTS_PER_LIST)
        if n < IVF_MIN_VECTORS or nlist < 1:
            log.info("%d vectors are too few to train an IVF index (needs %d); using exact flat search", n, IVF_MIN_VECTORS)
            return "flat", {}
        return "ivf", {"nlist": nlist, "nprobe": spec.nprobe}
    if kind == "hnsw":
        return "hnsw", {"m": spec.hnsw_m, "ef_construction": spec.ef_construction, "ef_search": spec.ef_search}
    return "flat", {}


def needs_refit(kind: str, params: dict, want_kind: str, want_params: dict, removing: bool) -> bool:
    """Whether an existing index must be rebuilt from the catalogue instead of updated in place: the
    type changed; an IVF's cell count is off by 2x or more from what the collection now wants (it grew
    or shrank about fourfold); an HNSW graph must lose vectors or change degree."""
    if kind != want_kind:
        return True
    if kind == "ivf":
        ratio = want_params["nlist"] / params["nlist"]
        return ratio >= 2 or ratio <= 0.5
    if kind == "hnsw":
        return removing or params.get("m") != want_params.get("m")
    return False


def empty(kind: str, params: dict, dim: int) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, params["m"], faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = params["ef_construction"]
        return faiss.IndexIDMap2(inner)
    if kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()
        return index
    raise ValueError(kind)


def train(index: faiss.Index, kind: str, sample: np.ndarray) -> None:
    """Fit an IVF's cells to a sample (a fixed seed: the same catalogue gives the same index)."""
    if kind == "ivf":
        index.cp.seed = 1234
        index.train(np.ascontiguousarray(sample, dtype=np.float32))


def sample_ids(ids: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """A seeded random subset of `ids` (all of them when there are no more than `size`), sorted."""
    return np.sort(np.random.default_rng(seed).choice(ids, size=min(len(ids), size), replace=False))


def train_sample(ids: np.ndarray, params: dict, seed: int = 0) -> np.ndarray:
    """The ids to train an IVF on: a random subset, enough for `nlist` cells."""
    return sample_ids(ids, IVF_TRAIN_SAMPLE_PER_LIST * params.get("nlist", 1), seed)


def add(index: faiss.Index, ids: np.ndarray, vectors: np.ndarray) -> None:
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))


def remove(index: faiss.Index, ids: Iterable[int]) -> None:
    ids = np.fromiter((int(i) for i in ids), dtype=np.int64)
    if len(ids):
        index.remove_ids(faiss.IDSelectorBatch(ids))


def ids_of(index: faiss.Index) -> np.ndarray:
    """Every id stored in the index."""
    if isinstance(index, faiss.IndexIDMap2) or isinstance(index, faiss.IndexIDMap):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
             for i in range(ivf.nlist) if lists.list_size(i)]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)


def set_search_params(index: faiss.Index, kind: str, nprobe: int | None = None, ef_search: int | None = None) -> None:
    if kind == "ivf" and nprobe:
        faiss.extract_index_ivf(index).nprobe = nprobe
    if kind == "hnsw" and ef_search:
        faiss.downcast_index(index.index).hnsw.efSearch = ef_search


def selection(kind: str, allowed: np.ndarray, nprobe: int | None = None,
              ef_search: int | None = None) -> faiss.SearchParameters:
    """Search parameters that restrict a search to the ids in `allowed` (FAISS skips the rest while it
    scans, so a filter costs no extra results). The type's own search breadth goes with them, since a
    parameters object replaces the index's settings."""
    selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
    if kind == "ivf":
        params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe or 1)
    elif kind == "hnsw":
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=ef_search or 16)
    else:
        params = faiss.SearchParameters(sel=selector)
    params.keep_alive = selector  # the SWIG object holds a raw pointer only
    return params


def search(index: faiss.Index, queries: np.ndarray, k: int,
           params: faiss.SearchParameters | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of shape (len(queries), k); missing results have id -1. `params`: see `selection`."""
    k = max(1, min(k, index.ntotal)) if index.ntotal else 1
    if index.ntotal == 0:
        n = len(queries)
        return np.full((n, 1), -np.inf, dtype=np.float32), np.full((n, 1), -1, dtype=np.int64)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)


def brute_force(ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over a small side set of vectors (a reader's catch-up for a stale FAISS file)."""
    n = len(queries)
    if not len(ids):
        return np.full((n, 0), -np.inf, dtype=np.float32), np.full((n, 0), -1, dtype=np.int64)
    scores = queries @ vectors.T
    k = min(k, len(ids))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, top, axis=1), ids[top]


RANGE_EXACT_BELOW = 20_000  # fewer vectors: exact all-pairs search; more: an IVF made for the purpose
RANGE_NPROBE = 8
RANGE_TRAIN_PER_LIST = IVF_MIN_POINTS_PER_LIST + 1


def range_pairs(vectors: np.ndarray, threshold: float, nprobe: int = RANGE_NPROBE,
                chunk: int = 20_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i < j, positions in `vectors`) whose similarity is at least `threshold`, and that
    similarity. Exact below RANGE_EXACT_BELOW vectors; above, each vector's range search visits only
    `nprobe` of about 4·sqrt(n) IVF cells, so the work grows as n^1.5, not n^2. A pair close enough
    to matter here (a near-duplicate) almost always shares a cell (benchmarks/bench_dupes.py measures
    what the cells miss)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if n < RANGE_EXACT_BELOW:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = int(4 * math.sqrt(n))
        index = empty("ivf", {"nlist": nlist}, dim)
        index.cp.niter = 10
        train(index, "ivf", vectors[sample_ids(np.arange(n), RANGE_TRAIN_PER_LIST * nlist)])
        set_search_params(index, "ivf", nprobe)
    index.add(vectors)
    firsts, seconds, sims = [], [], []
    for start in range(0, n, chunk):
        lims, scores, found = index.range_search(vectors[start:start + chunk], threshold)
        rows = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims.astype(np.int64)))
        later = found > rows  # each pair once, and not a vector with itself
        firsts.append(rows[later])
        seconds.append(found[later])
        sims.append(scores[later])
    if not firsts:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(firsts), np.concatenate(seconds).astype(np.int64), np.concatenate(sims)
