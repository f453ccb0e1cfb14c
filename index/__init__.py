"""FAISS indexing and search of image folders and captions (tinymvlm.index).

Modules, one job each: lock (one writer), catalog (SQLite, the source of truth), vectors (FAISS types),
store (index folder, manifest, FAISS kept in step with the catalogue), scan (what changed), captions
(caption files), indexer (applying a scan a batch at a time, embedding with tinymvlm.embed), query
(the query grammar: text, quoted phrases, weighted expressions), search (snapshot-consistent search),
html (contact sheets), recall (recall through an index), shard and merge (sharded indexing), api (the
`Index` class), build (a whole `tmv index` run, torchrun's index-then-merge included), and for
`tmv serve`: serving (the search service), webapp (pages and JSON API), hostguard (Host/Origin checks),
thumbs (the thumbnail cache).
"""

from .api import Index
from .indexer import IndexReport, Progress
from .search import Hit
from .store import default_index_dir
from .vectors import APPROX_THRESHOLD, IndexSpec

__all__ = ["Index", "IndexSpec", "IndexReport", "Progress", "Hit", "default_index_dir", "APPROX_THRESHOLD"]
