"""Score images against captions typed on the spot: "which of these labels fits this picture?".

Every caption's cosine similarity to the image, and its probability under the model's own learned
temperature (a softmax over the given captions, as in contrastive training), best first. No index is
involved, so the captions need not be embedded ahead of time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from tinymvlm.errors import TmvError
from tinymvlm.inference.embed import embed_query_images, embed_texts
from tinymvlm.inference.runtime import Runtime
from tinymvlm.models.tinyclip import TinyClip


@dataclass
class CaptionScore:
    caption: str
    similarity: float
    probability: float


@dataclass
class ImageScores:
    image: str
    captions: list[CaptionScore]  # best first

    def to_dict(self) -> dict:
        return asdict(self)


def check_inputs(images: Sequence[str], captions: Sequence[str]) -> None:
    """Fail before any model is loaded: captions and existing image files are needed."""
    from pathlib import Path

    if not captions:
        raise TmvError('no captions to score: give some with --captions "a cat" "a dog" or --captions-file FILE')
    if not images:
        raise TmvError("no images to score: give one or more image files")
    for image in images:
        if not Path(image).is_file():
            raise TmvError(f"image {image} does not exist; give an image file")


def score_images(model: TinyClip, tokenizer, images: Sequence[str], captions: Sequence[str],
                 runtime: Runtime | None = None) -> list[ImageScores]:
    """Each image against every caption, embedded as search queries are (so the similarities equal
    those `tmv search --image X --texts` finds for the same captions). Captions are embedded once."""
    check_inputs(images, captions)
    runtime = runtime or Runtime.for_queries()
    text = embed_texts(model, tokenizer, list(captions), runtime)
    image = embed_query_images(model, images, runtime)
    similarity = image @ text.T
    with torch.no_grad():
        scale = float(model.scale())
    logits = scale * similarity
    probability = np.exp(logits - logits.max(axis=1, keepdims=True))
    probability /= probability.sum(axis=1, keepdims=True)
    results = []
    for row, path in enumerate(images):
        order = np.argsort(-similarity[row], kind="stable")
        results.append(ImageScores(str(path), [CaptionScore(captions[j], float(similarity[row, j]),
                                                            float(probability[row, j])) for j in order]))
    return results
