"""What `tmv serve` answers, independent of HTTP: index info and searches by text, uploaded image or id.

One `Index` (its model, its FAISS files and its SQLite connection) is used from one thread only: the
service's own worker thread runs every call, in turn. The model is CPU-bound anyway, and SQLite
connections must not cross threads. Each search reads one catalogue snapshot (search.py), so a
concurrent `tmv index` shows up batch by committed batch, and a rebuilt index (a new manifest) is
reopened: no restart is needed, and nothing half-written is ever read.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
from tinymvlm.index.filters import SearchFilter
from tinymvlm.index.python_api import Index
from tinymvlm.index.query_syntax import Term, parse_query

from tinymvlm import run_folder
from tinymvlm.errors import TmvError

T = TypeVar("T")
log = logging.getLogger(__name__)
CURVES_URL = "/api/curves"  # the training curves of the index's model, when it is a run's

# The page folds results behind "show more" when they score below this fraction of the way from what an
# unrelated image scores (the median over a sample of the collection) up to the query's best hit. Chosen
# on 22 labelled queries over 143 real photos (benchmarks/bench_cutoff.py, docs/photo-library.md): a
# fixed score or a fixed distance from the best cannot serve both a query with one clear answer and one
# whose scores are all close (the built-in model's "people"), nor two models' score scales.
RELATIVE_CUTOFF = 0.5


def cutoff(best: float, typical: float | None) -> float | None:
    """The score below which the page folds results (see RELATIVE_CUTOFF)."""
    if typical is None or typical >= best:
        return None
    return typical + RELATIVE_CUTOFF * (best - typical)


@dataclass(frozen=True)
class Limits:
    """Bounds on one request: results per page, how deep paging goes, uploads."""

    max_k: int = 100
    max_offset: int = 1000
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_pixels: int = 40_000_000


@dataclass(frozen=True)
class Query:
    """One search: text (the weighted-query syntax), an uploaded image file, or an image id."""

    text: str | None = None
    image: str | None = None  # a temporary file holding an upload
    like: int | None = None
    kind: str = "images"
    k: int = 24
    offset: int = 0
    where: SearchFilter = SearchFilter()
    min_score: float | None = None


@dataclass(frozen=True)
class Answer:
    """A search's JSON body and where its time went: the query's embedding (or lookup), then the
    FAISS search with the catalogue read (wall times, which grow when other work shares the cores)."""

    body: dict
    embed_ms: float
    search_ms: float
    cpu_ms: float  # the worker thread's CPU time for both: the wall time of an otherwise idle machine


def web_terms(text: str | None) -> list[Term]:
    """Terms of a query typed into the page. A term naming a file on the server stays text: a web
    client must not make the server read (or reveal the existence of) its files."""
    if not text or not text.strip():
        return []
    return [Term(t.weight, text=t.text if t.image is None else t.image) for t in parse_query(text)]


class SearchService:
    """Answers info and search calls on a single worker thread (see the module docstring)."""

    def __init__(self, index: Index, limits: Limits = Limits(), cached_queries: int = 1024) -> None:
        self.index, self.limits = index, limits
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tmv-index")
        self._instance: str | None = None
        # Text query -> its vector, most recent last: the page asks for a query's images and its
        # captions, and "More results" asks again, so the text tower runs once for all of them.
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cached_queries = cached_queries
        self.dupes = DuplicateCache(index)

    async def call(self, func: Callable[..., T], *args) -> T:
        """Run `func` on the worker thread, without blocking the event loop."""
        return await asyncio.wrap_future(self._pool.submit(func, *args))

    def call_sync(self, func: Callable[..., T], *args) -> T:
        """Run `func` on the worker thread and wait for it (start-up, tests)."""
        return self._pool.submit(func, *args).result()

    def close(self) -> None:
        self._pool.submit(self.index.close).result()
        self._pool.shutdown()

    # ------------------------------------------------------------------- on the worker thread

    def _current(self) -> dict:
        """The manifest now; reopens the index when it was rebuilt since the last call."""
        manifest = self.index.info()
        if manifest.get("instance") != self._instance:  # rebuilt, maybe with another model
            self.index.close()
            self._vectors.clear()
            self._instance = manifest.get("instance")
        return manifest

    def warm_up(self) -> None:
        """Load the model and the FAISS files now, so the first query is as fast as the rest. Text
        queries run on the ONNX text encoder (4-5x less CPU per query than torch's text tower,
        benchmarks/bench_serve.py), written now if missing; image queries on the torch model."""
        self._current()
        self.index.search_vector(self.index.embed_query([Term(1.0, text="warm up")]), k=1)
        self.index.search_vector(self.index.embed_query([Term(1.0, text="warm up, twice")]), k=1)  # on a file just written
        self.index.load_model()

    def info(self) -> dict:
        manifest = self._current()
        return {"folder": str(self.index.folder), "model": manifest["model"], "curves": self.curves_url(),
                "counts": manifest["counts"],
                "folders": self.index.folders(), "updated": manifest.get("updated"),
                "types": {kind: entry["type"] for kind, entry in manifest.get("indexes", {}).items()},
                "limits": {"max_k": self.limits.max_k, "max_offset": self.limits.max_offset,
                           "max_upload_bytes": self.limits.max_upload_bytes,
                           "max_upload_pixels": self.limits.max_upload_pixels}}

    def curves(self) -> Path:
        """The training curves of the run whose checkpoint the index uses."""
        curves = run_folder.curves_of(self.index.checkpoint_path())
        if curves is None:
            raise LookupError("the index's model has no training curves: it is not the checkpoint of a 'tmv train' run")
        return curves

    def curves_url(self) -> str | None:
        return CURVES_URL if run_folder.curves_of(self.index.checkpoint_path()) is not None else None

    def search(self, query: Query) -> Answer:
        start, cpu_start = time.perf_counter(), time.thread_time()
        self._current()
        texts = query.kind == "captions"
        if query.like is not None:
            vector = self.index.vector_of(query.like)
            if vector is None:
                raise LookupError(f"no image with id {query.like} in the index (it may have been removed; search again)")
        elif query.image is None and query.text in self._vectors:
            vector = self._vectors[query.text]
            self._vectors.move_to_end(query.text)
        else:
            terms = web_terms(query.text)
            if query.image is not None:
                terms.append(Term(1.0, image=query.image))
            if not terms:
                raise TmvError("give a query: text (q=...), an image (POST its bytes), or an image id (like=ID)")
            vector = self.index.embed_query(terms)
            if query.image is None:
                self._vectors[query.text] = vector
                if len(self._vectors) > self._cached_queries:
                    self._vectors.popitem(last=False)
        embedded = time.perf_counter()
        hits = self.index.search_vector(np.asarray(vector), k=query.offset + query.k + 1, texts=texts,
                                        where=query.where, min_score=query.min_score)
        page = hits[query.offset:query.offset + query.k]
        similar = self.dupes.similar_counts() if not texts else {}
        body = {"kind": query.kind, "k": query.k, "offset": query.offset,
                "more": len(hits) > query.offset + query.k,
                "results": [{**hit.to_dict(), **({"similar": similar[hit.id]} if hit.id in similar else {})}
                            for hit in page],
                "cutoff": self._cutoff(hits, vector, query.kind)}
        done = time.perf_counter()
        return Answer(body, (embedded - start) * 1000, (done - embedded) * 1000, (time.thread_time() - cpu_start) * 1000)

    def _cutoff(self, hits, vector: np.ndarray, kind: str) -> float | None:
        if not hits:
            return None
        floor = cutoff(hits[0].score, self.index.searcher().typical_score(vector, kind))
        return None if floor is None else round(floor, 6)

    def image_path(self, id: int) -> str:
        path = self.index.label_of(id)
        if path is None:
            raise LookupError(f"no image with id {id} in the index")
        return path


class DuplicateCache:
    """The index's near-duplicate groups (index/duplicates.py), found once per state of the catalogue.

    Finding them decodes the candidate pairs' files, which can take minutes on a large library, so it
    runs on a thread of its own (with its own catalogue connection), never on the search thread: searches
    go on meanwhile, and their hits carry a "similar" count once a result exists (the last one found, while
    a newer one is being made: ids are never reused, so an older result only misses the newest files)."""

    def __init__(self, index: Index) -> None:
        self._folder = index.folder
        self._lock = threading.Lock()
        self._result: tuple[tuple, list, dict[int, int]] | None = None  # (catalogue state, groups, counts)
        self._running: tuple | None = None
        self._done = threading.Condition(self._lock)

    def _state(self) -> tuple:
        manifest = Index(self._folder).info()
        return manifest.get("instance"), manifest.get("indexes", {}).get("images", {}).get("generation")

    def groups(self) -> list:
        """The groups of the catalogue's current state, found now if need be (blocks the calling thread)."""
        state = self._state()
        with self._lock:
            while self._running == state:
                self._done.wait()
            if self._result is not None and self._result[0] == state:
                return self._result[1]
            self._running = state
        try:
            groups = Index(self._folder).duplicates()
        finally:
            with self._lock:
                self._running = None
                self._done.notify_all()
        counts = {i: len(g.ids) - 1 for g in groups for i in g.ids}
        with self._lock:
            self._result = (state, groups, counts)
        return groups

    def start(self) -> None:
        """Find the groups in the background (at start-up), so hits soon carry their counts."""
        threading.Thread(target=self._quietly, name="tmv-dupes", daemon=True).start()

    def _quietly(self) -> None:
        try:
            self.groups()
        except Exception:  # an unreadable index is reported by the searches themselves
            log.exception("finding near-duplicates failed")

    def similar_counts(self) -> dict[int, int]:
        """{image id: how many other copies its group has} from the last result (empty before one)."""
        with self._lock:
            return self._result[2] if self._result is not None else {}
