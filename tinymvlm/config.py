"""Model configuration: what the user chooses, saved in every checkpoint so it rebuilds the model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class ModelConfig:
    """The towers and the shared space. `image_model` None means the default ViT-Tiny (see towers).

    `init_logit_scale` is the starting inverse temperature of the contrastive loss. CLIP starts at
    1/0.07 (14.3) for hundreds of millions of pairs; on small data a softer start keeps the heads from
    over-sharpening on their few pairs and retrieves better (7 measured best of 5-14.3 on Tux Paint;
    see benchmarks/bench_recipe.py).

    `label_prior` adds the image tower's own class predictions, read through the text tower, to every
    image embedding (see `prior`); it needs a pretrained tower that comes with its classifier and
    class names (the packaged EfficientNet-Lite0, or a timm ImageNet model from the hub); with any
    other tower the model has none, and `tmv train` says which when it starts.
    """

    image_model: str | None = None
    text_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    image_weights: str | None = None
    pretrained: bool = True
    embed_dim: int = 256
    head: str = "mlp"
    image_size: int | None = None
    context_length: int = 77
    init_logit_scale: float = 7.0
    label_prior: bool = True

    def __post_init__(self) -> None:
        from .errors import TmvError

        if self.head not in ("linear", "mlp"):
            raise TmvError(f"head must be 'linear' or 'mlp', not '{self.head}'")
        if self.embed_dim <= 0 or self.context_length <= 0:
            raise TmvError("embed_dim and context_length must be positive")
        if not 1 <= self.init_logit_scale <= 100:
            raise TmvError(f"init_logit_scale must be between 1 and 100, not {self.init_logit_scale}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
