"""Recall through an index: the same evaluation queries answered by what the index's search returns,
beside exact search over the same stored vectors; the difference is the recall cost of an approximate
index (`tmv eval --index`). It lives in the index package because it reads the catalogue directly."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from tinymvlm.data.pairs import FileImages, PairSet
from tinymvlm.errors import TmvError
from tinymvlm.evaluation.recall_at_k import BLOCK_ELEMENTS, check_ks
from tinymvlm.evaluation.retrieval import EmbeddedPairs

TIE_TOLERANCE = 1e-5  # the own score is a separate dot product: rounding must not rank it below itself


def _strictly_higher(queries: np.ndarray, own: np.ndarray, blocks) -> np.ndarray:
    """For each query, how many stored vectors score above its own score by more than float32
    rounding (exact search, chunked). The own vector itself, and copies of it, are not counted."""
    own = own + TIE_TOLERANCE
    counts = np.zeros(len(queries), dtype=np.int64)
    for _, vecs in blocks:
        step = max(1, BLOCK_ELEMENTS // max(len(vecs), 1))
        for start in range(0, len(queries), step):
            scores = queries[start:start + step] @ vecs.T
            counts[start:start + step] += (scores > own[start:start + step, None]).sum(1)
    return counts


def _recall(ranks: np.ndarray, ks: Sequence[int], prefix: str) -> dict[str, float]:
    return {f"{prefix}_R@{k}": float((ranks <= k).mean() * 100) for k in ks}


def evaluate_index(searcher, pairs: PairSet, emb: EmbeddedPairs, ks: Sequence[int]) -> dict:
    """R@k from what an index's search returns (top max(k) per query), beside exact search over the
    same stored vectors: the difference is the recall cost of the approximate index.

    `searcher` is a `tinymvlm.index.searcher.Searcher` already checked against the model. Evaluation
    images are matched to indexed ones by path. Text->image queries are the captions' embeddings;
    image->text queries are the images' stored vectors, searched in the index's captions (when it
    has any), a hit being any caption whose text is one of the image's captions. Images the index
    lacks are left out, and counted."""
    ks = check_ks(ks)
    depth = max(ks)
    if not isinstance(pairs.images, FileImages):
        raise TmvError("--index needs evaluation images that are files (a pairs file or image folder), to match them to the index")
    catalog, dim = searcher.catalog, int(searcher.manifest["embed_dim"])
    if emb.texts.shape[1] != dim:
        raise TmvError(f"the index holds {dim}-dimensional vectors, the model makes {emb.texts.shape[1]}")
    paths = [os.path.abspath(p) for p in pairs.images.paths]
    roots = sorted({os.path.dirname(p) for p in paths} | {os.path.dirname(os.path.realpath(p)) for p in paths})
    by_path = {os.path.realpath(path): row.id for path, row in catalog.images_under(roots).items()}
    image_id = [by_path.get(os.path.realpath(p)) for p in paths]
    found = [i for i, row in enumerate(image_id) if row is not None]
    if not found:
        raise TmvError(f"none of the {len(paths)} evaluation images is in index {searcher.store.folder}; "
                       f"index their folder first with 'tmv index'")
    record: dict = {"folder": str(searcher.store.folder), "types": {k: v["type"] for k, v in searcher.manifest.get("indexes", {}).items()},
                    "images_in_index": catalog.count("images"), "captions_in_index": catalog.count("captions"),
                    "eval_images_found": len(found), "eval_images_missing": len(paths) - len(found), "depth": depth}
    approx, exact = {}, {}

    rows = np.array([j for j, i in enumerate(emb.text_image) if image_id[i] is not None], dtype=np.int64)
    own_ids = np.array([image_id[i] for i in emb.text_image[rows]], dtype=np.int64)
    queries = emb.texts[rows]
    own_vecs = catalog.vectors("images", own_ids.tolist(), dim)
    own_scores = (queries * own_vecs).sum(1)
    t2i_exact = 1 + _strictly_higher(queries, own_scores, catalog.iter_vectors("images", dim))
    t2i_approx = np.array([_position([h.id for h in searcher.search(q, depth, "images")], {own}, depth)
                           for q, own in zip(queries, own_ids.tolist())])
    approx.update(_recall(t2i_approx, ks, "t2i"))
    exact.update(_recall(t2i_exact, ks, "t2i"))
    record["t2i_queries"] = len(rows)

    if record["captions_in_index"]:
        stored = catalog.caption_blobs_by_text({c for i in found for c in pairs.captions[i]})
        with_captions = [i for i in found if any(c in stored for c in pairs.captions[i])]
        record["i2t_queries"] = len(with_captions)
        if with_captions:
            image_vecs = catalog.vectors("images", [image_id[i] for i in with_captions], dim)
            best_own = np.array([max(float(v @ np.frombuffer(stored[c], dtype=np.float32)) for c in pairs.captions[i] if c in stored)
                                 for i, v in zip(with_captions, image_vecs)], dtype=np.float32)
            i2t_exact = 1 + _strictly_higher(image_vecs, best_own, catalog.iter_vectors("captions", dim))
            i2t_approx = np.array([_position([h.label for h in searcher.search(v, depth, "captions")], set(pairs.captions[i]), depth)
                                   for i, v in zip(with_captions, image_vecs)])
            approx.update(_recall(i2t_approx, ks, "i2t"))
            exact.update(_recall(i2t_exact, ks, "i2t"))
    record.update({"search": approx, "exact": exact, "recall_cost": {k: exact[k] - approx[k] for k in approx}})
    return record


def _position(results: list, own: set, depth: int) -> int:
    """1-based position of the first result in `own`; depth + 1 when none of the top `depth` is."""
    return next((n for n, r in enumerate(results, start=1) if r in own), depth + 1)
