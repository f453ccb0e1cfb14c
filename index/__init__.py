"""FAISS indexing and search of image folders and captions (tinymvlm.index).

Modules, one job each: lock (one writer), catalog (SQLite, the source of truth), vectors (FAISS types),
store (index folder, manifest, FAISS kept in step with the catalogue), scan (what changed), embedder
(DataLoader decoding + batched inference), captions (caption files), indexer (applying a scan a batch at a
time), query (the query grammar: text, quoted phrases, weighted expressions), search (snapshot-consistent
search), html (contact sheets), api (the `Index` class the CLI uses).
"""

from .api import Index
from .embedder import EmbedConfig
from .indexer import IndexReport, Progress
from .search import Hit
from .store import default_index_dir
from .vectors import APPROX_THRESHOLD, IndexSpec

__all__ = ["Index", "IndexSpec", "EmbedConfig", "IndexReport", "Progress", "Hit", "default_index_dir", "APPROX_THRESHOLD"]
