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

from .embed import autocast, embed_texts, resolve_precision
from .errors import TmvError
from .model import TinyClip


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
                 device: torch.device, precision: str = "auto") -> list[ImageScores]:
    """Each image against every caption. Captions are embedded once for all images."""
    check_inputs(images, captions)
    precision = resolve_precision(device, precision)
    text = embed_texts(model, tokenizer, list(captions), precision=precision, device=str(device))
    image = _embed_images(model, images, device, precision)
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


@torch.inference_mode()
def _embed_images(model: TinyClip, paths: Sequence[str], device: torch.device, precision: str) -> np.ndarray:
    from .errors import first_line
    from .transform import build_transforms, load_image

    transform = build_transforms(model.data_config, training=False)
    pixels = []
    for path in paths:
        try:
            pixels.append(transform(load_image(path)))
        except Exception as exc:
            raise TmvError(f"cannot read image {path}: {first_line(exc)}") from exc
    with autocast(device, precision):
        return model.encode_image(torch.stack(pixels).to(device)).float().cpu().numpy()
