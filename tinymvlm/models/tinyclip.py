"""The two-tower contrastive model: an image tower, a text tower, projection heads to a shared space."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tinymvlm.errors import TmvError
from tinymvlm.models.config import ModelConfig
from tinymvlm.models.label_prior import LabelPrior
from tinymvlm.models.people import person_mass

LOGIT_SCALE_MAX = math.log(100)


def _head(in_dim: int, out_dim: int, kind: str) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))
    return nn.Linear(in_dim, out_dim)


class TinyClip(nn.Module):
    """CLIP-style model. `encode_image` / `encode_text` return L2-normalised embeddings.

    The towers are a timm model and a Hugging Face encoder (mean-pooled), or the adapters of an
    imported pretrained CLIP (see `pretrained`): an image tower with `num_features` (pixels -> pooled
    features), a text tower with `pad_token_id` and `pool(ids, mask)` (its own pooling and
    padding rules). `heads` (the source model's own projections) replace fresh ones; `source`
    describes how to rebuild such towers from a checkpoint."""

    def __init__(self, config: ModelConfig, image_tower: nn.Module, text_tower: nn.Module,
                 image_arch: str, data_config: dict, heads: tuple[nn.Module, nn.Module] | None = None,
                 source: dict | None = None) -> None:
        super().__init__()
        self.config = config
        self.image_arch = image_arch
        self.data_config = data_config
        self.source = source
        self.image_tower = image_tower
        self.text_tower = text_tower
        if heads is None:
            heads = (_head(image_tower.num_features, config.embed_dim, config.head),
                     _head(text_tower.config.hidden_size, config.embed_dim, config.head))
        self.image_proj, self.text_proj = heads
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.init_logit_scale)))
        self.label_prior: LabelPrior | None = None

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def reads_people(self) -> bool:
        """Whether image features end with a found-face column (see `people`)."""
        return self.label_prior is not None and self.label_prior.reads_people

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled image-tower features, before the head (what a locked tower's cache stores), and for a
        model that reads people, one more column: the person mass found in these very pixels."""
        features = self.image_tower(pixels)
        if not self.reads_people:
            return features
        mass = person_mass(pixels, self.data_config).to(features.device, features.dtype)
        return torch.cat([features, mass], 1)

    def project_image(self, features: torch.Tensor) -> torch.Tensor:
        """The image head's output, plus the text head's reading of the tower's class predictions
        when the model has a label prior (see `label_prior`)."""
        mass = None
        if self.reads_people:
            features, mass = features[:, :-1], features[:, -1:]
        emb = self.image_proj(features)
        if self.label_prior is not None:
            emb = emb + self.text_proj(self.label_prior(features, mass))
        return F.normalize(emb.float(), dim=-1)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.project_image(self.image_features(pixels))

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled text-tower output, before the head: an adapter's own pooling, else the mean over the mask."""
        if hasattr(self.text_tower, "pool"):
            return self.text_tower.pool(input_ids, attention_mask)
        hidden = self.text_tower(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-6)

    @property
    def pad_token_id(self) -> int:
        """The token id that marks padding (the text tower's own), from which `encode_text` derives
        the attention mask when none is given."""
        pad = getattr(self.text_tower, "pad_token_id", None)
        pad = self.text_tower.config.pad_token_id if pad is None else pad
        if pad is None:
            raise TmvError(f"text tower {self.config.text_model} has no pad token; pass encode_text an attention_mask")
        return int(pad)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids -> embeddings. Without a mask (open_clip's one-argument form, fed by
        `tinymvlm.models.tokenizer.Tokenizer`), every position holding the pad token is padding."""
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_token_id).long()
        return F.normalize(self.text_proj(self.text_features(input_ids, attention_mask)).float(), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=LOGIT_SCALE_MAX).exp()

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        self.logit_scale.clamp_(0, LOGIT_SCALE_MAX)


def data_config_for(image_tower: nn.Module, image_size: int | None) -> dict:
    """The tower's own preprocessing (timm's data config), at an optional different square size."""
    from timm.data import resolve_data_config

    config = dict(resolve_data_config({}, model=image_tower))
    if image_size is not None:
        config["input_size"] = (3, image_size, image_size)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
