"""Retrieval recall@k under the standard multi-caption protocol, computed in bounded memory.

Text->image: every caption is a query; it hits at k if its own image ranks in the top k.
Image->text: every image is a query; it hits at k if any of its captions ranks in the top k.
The rank of the true item is 1 + the number of candidates scoring strictly higher, so ties are
resolved in the query's favour, the same rule whatever the order of the candidates. A caption
string shared by several images is still one query per (image, caption) row, and counts as a hit
only for the image it was written for.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import TmvError


def _ranks_t2i(image_emb: torch.Tensor, text_emb: torch.Tensor, text_image: torch.Tensor, chunk: int) -> torch.Tensor:
    ranks = torch.empty(len(text_emb), dtype=torch.long)
    for start in range(0, len(text_emb), chunk):
        scores = text_emb[start:start + chunk] @ image_emb.t()
        own = scores.gather(1, text_image[start:start + chunk, None])
        ranks[start:start + chunk] = (scores > own).sum(1) + 1
    return ranks


def _ranks_i2t(image_emb: torch.Tensor, text_emb: torch.Tensor, text_image: torch.Tensor, chunk: int) -> torch.Tensor:
    ranks = torch.empty(len(image_emb), dtype=torch.long)
    for start in range(0, len(image_emb), chunk):
        scores = image_emb[start:start + chunk] @ text_emb.t()
        rows = torch.arange(start, min(start + chunk, len(image_emb)))
        own = text_image[None, :] == rows[:, None]
        best_own = scores.masked_fill(~own, float("-inf")).max(1, keepdim=True).values
        ranks[start:start + chunk] = (scores > best_own).sum(1) + 1
    return ranks


def retrieval_ranks(image_emb, text_emb, text_image, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(t2i ranks per caption, i2t ranks per image), 1-based. `text_image[j]` is caption j's image."""
    image_emb = torch.as_tensor(np.asarray(image_emb), dtype=torch.float32)
    text_emb = torch.as_tensor(np.asarray(text_emb), dtype=torch.float32)
    text_image = torch.as_tensor(np.asarray(text_image), dtype=torch.long)
    if len(image_emb) == 0 or len(text_emb) == 0:
        raise TmvError("the evaluation set has no usable image-caption pairs")
    if len(text_image) != len(text_emb) or set(text_image.tolist()) != set(range(len(image_emb))):
        raise TmvError("every caption needs one image and every image at least one caption")
    return _ranks_t2i(image_emb, text_emb, text_image, chunk).numpy(), _ranks_i2t(image_emb, text_emb, text_image, chunk).numpy()


def summarize(t2i_ranks: np.ndarray, i2t_ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@k in percent for both directions, plus mean and median rank."""
    if any(k <= 0 for k in ks):
        raise TmvError(f"recall k must be positive, got {sorted(ks)}")
    out: dict[str, float] = {}
    for prefix, ranks in (("t2i", t2i_ranks), ("i2t", i2t_ranks)):
        for k in ks:
            out[f"{prefix}_R@{k}"] = float((ranks <= k).mean() * 100)
        out[f"{prefix}_mean_rank"] = float(ranks.mean())
        out[f"{prefix}_median_rank"] = float(np.median(ranks))
    return out


def recall_at_k(image_emb, text_emb, text_image, ks: Sequence[int] = (1, 5, 10), chunk: int = 1024) -> dict[str, float]:
    return summarize(*retrieval_ranks(image_emb, text_emb, text_image, chunk), ks)
