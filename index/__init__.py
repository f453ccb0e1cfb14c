"""FAISS indexing and search of image folders and captions (tinymvlm.index).

Modules, one job each: writer_lock (one writer), catalog (SQLite, the source of truth), vectors (FAISS
types), store (the index folder: manifest, FAISS kept in step with the catalogue), scan (what changed on
disk), caption_files (caption files), update (applying a scan a committed batch at a time, embedding with
tinymvlm.inference), query_syntax (text, quoted phrases, weighted expressions), searcher
(snapshot-consistent search), shard and shard_merge (sharded indexing), python_api (the `Index` class),
jobs (a whole `tmv index` job: one index, one shard, or torchrun's index-then-merge).
Imports the library (models, inference, evaluation, data, shared modules), never training.
"""

from tinymvlm.index.python_api import Index
from tinymvlm.index.searcher import Hit
from tinymvlm.index.store import default_index_dir
from tinymvlm.index.update import IndexReport, Progress
from tinymvlm.index.vectors import APPROX_THRESHOLD, IndexSpec

__all__ = ["Index", "IndexSpec", "IndexReport", "Progress", "Hit", "default_index_dir", "APPROX_THRESHOLD"]
