"""Retrieval evaluation of a checkpoint: embed every image and every caption of an evaluation set and
measure recall@k both ways under the multi-caption protocol (see `recall_at_k` for ties and duplicates).

Shared by `tmv eval` and by training's per-epoch validation, so both report the same numbers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from tinymvlm.data.pairs import PairSet
from tinymvlm.errors import TmvError
from tinymvlm.evaluation.recall_at_k import check_ks, retrieval_ranks, summarize
from tinymvlm.inference.embed import OnImages, embed_images, embed_texts
from tinymvlm.inference.runtime import Runtime
from tinymvlm.models.tinyclip import TinyClip


@dataclass
class EmbeddedPairs:
    """Embeddings of an evaluation set: one row per image, one per caption row, and caption -> image."""

    images: np.ndarray
    texts: np.ndarray
    text_image: np.ndarray
    captions: list[str]


def embed_pairs(model: TinyClip, tokenizer, pairs: PairSet, runtime: Runtime,
                on_images: OnImages | None = None, images: np.ndarray | None = None) -> EmbeddedPairs:
    """Embed all images (unless `images` already holds their embeddings) and all captions. Each
    distinct caption string is embedded once, so identical strings get bit-identical vectors and tie
    exactly."""
    if not len(pairs) or not pairs.num_captions:
        raise TmvError(f"{pairs.name}: no usable image-caption pairs")
    if images is None:
        images = embed_images(model, pairs.images, len(pairs), runtime, on_images)
    captions = [c for caps in pairs.captions for c in caps]
    text_image = np.array([i for i, caps in enumerate(pairs.captions) for _ in caps], dtype=np.int64)
    distinct = list(dict.fromkeys(captions))
    where = {c: i for i, c in enumerate(distinct)}
    vectors = embed_texts(model, tokenizer, distinct, runtime)
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
    ranks: tuple[np.ndarray, np.ndarray] | None = None  # (t2i per caption row, i2t per image): for `recall_curve`

    def record(self, pairs: PairSet) -> dict:
        """What an evaluation record (`tmv eval --json`) states about this result."""
        return {"task": "retrieval", "metrics": self.metrics, "ks": self.ks, "protocol": PROTOCOL,
                "dataset": {"name": pairs.name, "images": self.images, "captions": self.captions,
                            "shared_caption_rows": self.shared_captions, "skipped": len(pairs.skipped)}}


PROTOCOL = ("every caption is a text->image query; an image->text query hits if any of its captions is in the top k; "
            "ties count as hits; a caption shared by several images hits only its own")


@torch.inference_mode()
def evaluate_retrieval(model: TinyClip, tokenizer, pairs: PairSet, ks: Sequence[int] = (1, 5, 10),
                       runtime: Runtime | None = None, on_images: OnImages | None = None,
                       images: np.ndarray | None = None, chunk: int | None = None) -> RetrievalResult:
    """Text->image and image->text R@k, mean and median rank over every caption of `pairs`.
    `chunk`: queries scored at a time (None: as many as fit a fixed block of memory)."""
    ks = check_ks(ks)
    emb = embed_pairs(model, tokenizer, pairs, runtime or Runtime(), on_images, images)
    t2i, i2t = retrieval_ranks(emb.images, emb.texts, emb.text_image, chunk)
    return RetrievalResult(summarize(t2i, i2t, ks), len(pairs), len(emb.captions), shared_caption_rows(pairs), ks, emb,
                           (t2i, i2t))


@torch.inference_mode()
def evaluate(model: TinyClip, tokenizer, pairs: PairSet, runtime: Runtime, ks: Sequence[int] = (1, 5, 10),
             features: torch.Tensor | None = None, on_images: OnImages | None = None) -> dict[str, float]:
    """Training's per-epoch validation: the metrics dict of `evaluate_retrieval`. `features` are the
    images' cached tower features, when the image tower is locked; `on_images` hears each batch of
    images embedded otherwise."""
    model.eval()
    images = None if features is None else model.project_image(features.to(runtime.torch_device)).float().cpu().numpy()
    return evaluate_retrieval(model, tokenizer, pairs, ks, runtime, on_images, images=images).metrics


# ------------------------------------------------------------------------------ evaluation records


def checkpoint_record(path: str | Path, meta: dict, run_options: dict | None) -> dict:
    """What an evaluation record states about the checkpoint: its identity and its run's options."""
    return {"path": str(path), "fingerprint": meta.get("fingerprint"), "model_config": meta.get("model_config"),
            "image_arch": meta.get("image_arch"), "info": meta.get("info"), "run_config": run_options}


def evaluation_record(checkpoint: str | Path, meta: dict, run_options: dict | None, runtime: Runtime, task: dict,
                      source: str | None, split: str | None, limit: int | None) -> dict:
    """The record `tmv eval --json` writes: checkpoint and its run's options (None outside a run folder),
    resolved settings, the task's result record (a `record()` of its result) and where its data came from."""
    record = {"checkpoint": checkpoint_record(checkpoint, meta, run_options), "settings": runtime.to_dict(), **task}
    record["dataset"].update({"source": source, "split": split, "limit": limit})
    return record
