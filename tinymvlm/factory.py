"""Build a fresh model from a ModelConfig (towers resolved and loaded), with its tokenizer."""

from __future__ import annotations

from .config import ModelConfig
from .model import TinyClip, data_config_for
from .prior import build_label_prior
from .towers import load_image_tower, load_text_tower


def create_model(config: ModelConfig):
    """Return (TinyClip, tokenizer) with pretrained towers unless `config.pretrained` is False."""
    image_tower, arch, classifier = load_image_tower(config.image_model, config.pretrained, config.image_weights,
                                                     config.image_size)
    text_tower, tokenizer = load_text_tower(config.text_model, config.pretrained)
    model = TinyClip(config, image_tower, text_tower, arch, data_config_for(image_tower, config.image_size))
    if config.label_prior and classifier is not None:
        model.label_prior = build_label_prior(model, tokenizer, classifier.layer, classifier.names)
    return model, tokenizer
