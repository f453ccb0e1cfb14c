"""Retrieval evaluation of a checkpoint: embed every image and every caption of an evaluation set and
measure recall@k both ways under the multi-caption protocol (see `metrics` for ties and duplicates).

Shared by `tmv eval` and by training's per-epoch validation, so both report the same numbers.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .data import FileImages, PairSet
from .embed import embed_pixel_batches, embed_texts
from .errors import TmvError
from .metrics import BLOCK_ELEMENTS, check_ks, retrieval_ranks, summarize
from .model import TinyClip
from .transform import build_transforms

OnImages = Callable[[int], None]


@dataclass
class EvalSettings:
    """How to run the model: the same knobs as training."""

    batch_size: int = 64
    precision: str = "fp32"
    device: str = "cpu"
    workers: int = 0
    chunk: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise TmvError(f"precision must be fp32 or bf16, not '{self.precision}'")
        if self.batch_size <= 0:
            raise TmvError(f"batch size must be positive, not {self.batch_size}")
        if self.workers < 0:
            raise TmvError(f"workers must be 0 or more, not {self.workers}")


class ImageDataset(Dataset):
    """Preprocessed pixels of any image source with `.open(i)` (files, dataset rows, arrays)."""

    def __init__(self, images, count: int, transform) -> None:
        self.images, self.count, self.transform = images, count, transform

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.images.open(i))


def embed_images(model: TinyClip, images, count: int, settings: EvalSettings,
                 on_images: OnImages | None = None) -> np.ndarray:
    """L2-normalised float32 embeddings of `count` images, decoded in DataLoader workers."""
    model.eval()
    transform = build_transforms(model.data_config, training=False)
    loader = DataLoader(ImageDataset(images, count, transform), batch_size=settings.batch_size,
                        num_workers=settings.workers)
    batches = list(embed_pixel_batches(model, iter(loader), settings.precision, settings.device, on_images))
    return np.concatenate(batches) if batches else np.zeros((0, model.embed_dim), dtype=np.float32)


@dataclass
class EmbeddedPairs:
    """Embeddings of an evaluation set: one row per image, one per caption row, and caption -> image."""

    images: np.ndarray
    texts: np.ndarray
    text_image: np.ndarray
    captions: list[str]


def embed_pairs(model: TinyClip, tokenizer, pairs: PairSet, settings: EvalSettings,
                on_images: OnImages | None = None, images: np.ndarray | None = None) -> EmbeddedPairs:
    """Embed all images (unless `images` already holds their embeddings) and all captions. Each
    distinct caption string is embedded once, so identical strings get bit-identical vectors and tie
    exactly."""
    if not len(pairs) or not pairs.num_captions:
        raise TmvError(f"{pairs.name}: no usable image-caption pairs")
    if images is None:
        images = embed_images(model, pairs.images, len(pairs), settings, on_images)
    captions = [c for caps in pairs.captions for c in caps]
    text_image = np.array([i for i, caps in enumerate(pairs.captions) for _ in caps], dtype=np.int64)
    distinct = list(dict.fromkeys(captions))
    where = {c: i for i, c in enumerate(distinct)}
    vectors = embed_texts(model, tokenizer, distinct, batch_size=max(settings.batch_size, 256),
                          precision=settings.precision, device=settings.device)
    return EmbeddedPairs(images, vectors[[where[c] for c in captions]], text_image, captions)


def shared_caption_rows(pairs: PairSet) -> int:
    """Caption rows whose exact string also describes another image (they can hit only their own)."""
    images_of: dict[str, set[int]] = {}
    for i, caps in enumerate(pairs.captions):
        for c in caps:
            images_of.setdefault(c, set()).add(i)
    counts = Counter(c for caps in pairs.captions for c in caps)
    return sum(n for c, n in counts.items() if len(images_of[c]) > 1)


@dataclass
class RetrievalResult:
    metrics: dict[str, float]
    images: int
    captions: int
    shared_captions: int
    ks: list[int] = field(default_factory=list)
    embedded: EmbeddedPairs | None = None


@torch.inference_mode()
def evaluate_retrieval(model: TinyClip, tokenizer, pairs: PairSet, ks: Sequence[int] = (1, 5, 10),
                       settings: EvalSettings | None = None, on_images: OnImages | None = None,
                       images: np.ndarray | None = None) -> RetrievalResult:
    """Text->image and image->text R@k, mean and median rank over every caption of `pairs`."""
    settings = settings or EvalSettings()
    ks = check_ks(ks)
    emb = embed_pairs(model, tokenizer, pairs, settings, on_images, images)
    t2i, i2t = retrieval_ranks(emb.images, emb.texts, emb.text_image, settings.chunk)
    return RetrievalResult(summarize(t2i, i2t, ks), len(pairs), len(emb.captions), shared_caption_rows(pairs), ks, emb)


@torch.inference_mode()
def evaluate(model: TinyClip, tokenizer, pairs: PairSet, batch_size: int = 64, precision: str = "fp32",
             device: torch.device | str = "cpu", workers: int = 0, ks: Sequence[int] = (1, 5, 10),
             features: torch.Tensor | None = None) -> dict[str, float]:
    """Training's per-epoch validation: the metrics dict of `evaluate_retrieval`. `features` are the
    images' cached tower features, when the image tower is locked."""
    model.eval()
    images = None if features is None else model.project_image(features.to(device)).float().cpu().numpy()
    settings = EvalSettings(batch_size, precision, str(device), workers)
    return evaluate_retrieval(model, tokenizer, pairs, ks, settings, images=images).metrics


# ------------------------------------------------------------------------------- through an index


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

    `searcher` is a `tinymvlm.index.search.Searcher` already checked against the model. Evaluation
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
