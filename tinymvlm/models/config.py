"""What the user chooses for a model: the towers, the heads and the shared space. Saved in every
checkpoint, so a checkpoint rebuilds its model. Each field is declared once, with its default and help,
and `tmv train`'s flags and the YAML keys come from it (see `tinymvlm.options`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tinymvlm.errors import TmvError
from tinymvlm.models.towers import DEFAULT_IMAGE_MODEL, DEFAULT_TEXT_MODEL, PACKAGED_IMAGE, PACKAGED_TEXT
from tinymvlm.options import check_choices, option


@dataclass
class ModelConfig:
    """The towers and the shared space. `image_model` None means the default ViT-Tiny (see towers).

    `init_logit_scale` is the starting inverse temperature of the contrastive loss. CLIP starts at
    1/0.07 (14.3) for hundreds of millions of pairs; on small data a softer start keeps the heads from
    over-sharpening on their few pairs and retrieves better (7 measured best of 5-14.3 on Tux Paint;
    see benchmarks/bench_recipe.py).

    `label_prior` adds the image tower's own class predictions, read through the text tower, to every
    image embedding (see `label_prior`); it needs a pretrained tower that comes with its classifier and
    class names (the packaged EfficientNet-Lite0, or a timm ImageNet model from the hub); with any
    other tower the model has none, and `tmv train` says which when it starts. `people` gives that
    prior a "person" row, which a face found in the image (OpenCV, see `people`) reads as.
    """

    image_model: str | None = option(
        None, f"timm model name, folder, or '{PACKAGED_IMAGE}' (packaged). Default {DEFAULT_IMAGE_MODEL}, "
              f"falling back to {PACKAGED_IMAGE} offline.")
    text_model: str = option(DEFAULT_TEXT_MODEL, f"Hugging Face encoder name or folder, or '{PACKAGED_TEXT}' (packaged).")
    image_weights: str | None = option(None, "Weights file (.safetensors/.pth) for --image-model.")
    pretrained: bool = option(True, "Start from pretrained towers, or train from scratch.")
    embed_dim: int = option(384, "Size of the shared embedding space (384: MiniLM's width, see --head).")
    head: str = option(
        "linear", "Projection head type. Linear heads over a label prior at the text tower's width start as the "
                  "built-in model's reading, and training learns a correction: what the towers knew is kept.",
        choices=("linear", "mlp"))
    image_size: int | None = option(None, "Train and embed at this square size instead of the tower's own.")
    context_length: int = option(77, "Caption token limit (longer captions are truncated).")
    init_logit_scale: float = option(
        7.0, "Starting inverse temperature (learned from there). CLIP's 14.3 suits huge data; small data "
             "retrieves better from 5-10.")
    label_prior: bool = option(
        True, "Add the image tower's own class predictions, read through the text tower, to image embeddings "
              "(pretrained towers with a classifier: the packaged one, timm ImageNet models).")
    people: bool = option(
        True, "With --label-prior: read a face found in an image (OpenCV's detectors) as 'a photo of a person.', "
              "which ImageNet's classes hardly name.")

    def __post_init__(self) -> None:
        check_choices(self)
        if self.embed_dim <= 0 or self.context_length <= 0:
            raise TmvError("embed_dim and context_length must be positive")
        if not 1 <= self.init_logit_scale <= 100:
            raise TmvError(f"init_logit_scale must be between 1 and 100, not {self.init_logit_scale}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
