"""Retrieval recall@k under the standard multi-caption protocol, computed in bounded memory.

Text->image: every caption row is a query; it hits at k if its own image ranks in the top k.
Image->text: every image is a query; it hits at k if any of its captions ranks in the top k, among
all caption rows.

Ties: the rank of the true item is 1 + the number of candidates scoring strictly higher, so ties go
the query's way, whatever the order of the candidates.

Duplicate captions: a caption string shared by several images stays one query per (image, caption)
row, and as a text->image query it hits only for the image it was written for (the published
Flickr30k/COCO protocol, as in CLIP_benchmark, so numbers stay comparable). As an image->text
candidate each row counts once in the ranking, and a copy belonging to another image ties with the
image's own caption, so it never pushes that caption down. Bit-identical embeddings are scored once
(candidates are de-duplicated and weighted by multiplicity), so such ties are exact rather than
subject to the rounding of where a vector happens to sit in a matrix product.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from tinymvlm.errors import TmvError

BLOCK_ELEMENTS = 1 << 24  # scores per chunk (64 MiB of float32): bounds memory at any set size


def _unique_rows(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique rows, index of each input row's unique row, multiplicity of each unique row)."""
    unique, inverse, counts = np.unique(emb, axis=0, return_inverse=True, return_counts=True)
    return unique, inverse.reshape(-1), counts


def _rows_per_chunk(columns: int, chunk: int | None) -> int:
    return max(1, chunk if chunk is not None else BLOCK_ELEMENTS // max(columns, 1))


def _ranks_t2i(image_emb: np.ndarray, text_emb: torch.Tensor, text_image: np.ndarray, chunk: int | None) -> np.ndarray:
    images, image_of, weight = _unique_rows(image_emb)
    images_t = torch.from_numpy(images)
    weight_t = torch.from_numpy(weight.astype(np.float32))
    own = torch.from_numpy(image_of[text_image])
    ranks = torch.empty(len(text_emb), dtype=torch.long)
    step = _rows_per_chunk(len(images), chunk)
    for start in range(0, len(text_emb), step):
        scores = text_emb[start:start + step] @ images_t.t()
        own_score = scores.gather(1, own[start:start + step, None])
        ranks[start:start + step] = ((scores > own_score).float() @ weight_t).round().long() + 1
    return ranks.numpy()


def _ranks_i2t(image_emb: torch.Tensor, text_emb: np.ndarray, text_image: np.ndarray, chunk: int | None) -> np.ndarray:
    texts, text_of, weight = _unique_rows(text_emb)
    texts_t = torch.from_numpy(texts)
    weight_t = torch.from_numpy(weight.astype(np.float32))
    by_image = np.argsort(text_image, kind="stable")
    sorted_images = text_image[by_image]
    ranks = torch.empty(len(image_emb), dtype=torch.long)
    step = _rows_per_chunk(len(texts), chunk)
    for start in range(0, len(image_emb), step):
        stop = min(start + step, len(image_emb))
        scores = image_emb[start:stop] @ texts_t.t()
        lo, hi = np.searchsorted(sorted_images, [start, stop])
        rows = torch.from_numpy(sorted_images[lo:hi] - start)
        cols = torch.from_numpy(text_of[by_image[lo:hi]])
        best_own = torch.full((stop - start,), float("-inf")).scatter_reduce(0, rows, scores[rows, cols], "amax")
        ranks[start:stop] = ((scores > best_own[:, None]).float() @ weight_t).round().long() + 1
    return ranks.numpy()


def retrieval_ranks(image_emb, text_emb, text_image, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(t2i rank per caption row, i2t rank per image), 1-based. `text_image[j]` is caption j's image.
    `chunk` caps the query rows scored at once (default: as many as fit BLOCK_ELEMENTS scores)."""
    image_emb = np.ascontiguousarray(image_emb, dtype=np.float32)
    text_emb = np.ascontiguousarray(text_emb, dtype=np.float32)
    text_image = np.asarray(text_image, dtype=np.int64).reshape(-1)
    if len(image_emb) == 0 or len(text_emb) == 0:
        raise TmvError("the evaluation set has no usable image-caption pairs")
    if chunk is not None and chunk <= 0:
        raise TmvError(f"chunk size must be positive, not {chunk}")
    if len(text_image) != len(text_emb) or set(text_image.tolist()) != set(range(len(image_emb))):
        raise TmvError("every caption needs one image and every image at least one caption")
    if not (np.isfinite(image_emb).all() and np.isfinite(text_emb).all()):
        raise TmvError("the model produced non-finite embeddings (NaN or inf); try --precision fp32")
    t2i = _ranks_t2i(image_emb, torch.from_numpy(text_emb), text_image, chunk)
    i2t = _ranks_i2t(torch.from_numpy(image_emb), text_emb, text_image, chunk)
    return t2i, i2t


def check_ks(ks: Sequence[int]) -> list[int]:
    """Sorted, de-duplicated k values; a clear error for none or any k <= 0."""
    if not ks:
        raise TmvError("give at least one k for recall@k")
    bad = [k for k in ks if k <= 0]
    if bad:
        raise TmvError(f"recall k must be a positive integer, got {bad[0]}")
    return sorted(set(int(k) for k in ks))


def summarize(t2i_ranks: np.ndarray, i2t_ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@k in percent for both directions, plus mean and median rank. A k larger than the number of
    candidates gives 100."""
    out: dict[str, float] = {}
    ks = check_ks(ks)
    for prefix, ranks in (("t2i", np.asarray(t2i_ranks)), ("i2t", np.asarray(i2t_ranks))):
        for k in ks:
            out[f"{prefix}_R@{k}"] = float((ranks <= k).mean() * 100)
        out[f"{prefix}_mean_rank"] = float(ranks.mean())
        out[f"{prefix}_median_rank"] = float(np.median(ranks))
    return out


def recall_at_k(image_emb, text_emb, text_image, ks: Sequence[int] = (1, 5, 10), chunk: int | None = None) -> dict[str, float]:
    return summarize(*retrieval_ranks(image_emb, text_emb, text_image, chunk), ks)
