"""Build a fresh model from a ModelConfig (towers resolved and loaded), with its tokenizer."""

from __future__ import annotations

from typing import Sequence

import torch

from tinymvlm.errors import TmvError
from tinymvlm.models.config import ModelConfig
from tinymvlm.models.hypernyms import DEPTH_WEIGHTS, weighted_names
from tinymvlm.models.label_prior import LabelPrior
from tinymvlm.models.tinyclip import TinyClip, data_config_for
from tinymvlm.models.tokenizer import tokenize
from tinymvlm.models.towers import TowerClassifier, load_image_tower, load_text_tower

PRIOR_TEMPLATE = "a photo of a {}."
PERSON = "person"  # the name a found face reads as (see `people`)
PRIOR_BATCH = 64


def create_model(config: ModelConfig):
    """Return (TinyClip, tokenizer) with pretrained towers unless `config.pretrained` is False."""
    image_tower, arch, classifier = load_image_tower(config.image_model, config.pretrained, config.image_weights,
                                                     config.image_size)
    text_tower, tokenizer = load_text_tower(config.text_model, config.pretrained)
    model = TinyClip(config, image_tower, text_tower, arch, data_config_for(image_tower, config.image_size))
    if config.label_prior and classifier is not None:
        model.label_prior = build_label_prior(model, tokenizer, classifier)
        if config.head == "linear" and config.embed_dim == text_tower.config.hidden_size:
            start_as_reading(model)  # step 0 is the built-in reading; training learns a correction
    return model, tokenizer


@torch.no_grad()
def build_label_prior(model: TinyClip, tokenizer, classifier: TowerClassifier,
                      templates: Sequence[str] = (PRIOR_TEMPLATE,),
                      depth_weights: dict[int, float] = DEPTH_WEIGHTS) -> LabelPrior:
    """Embed every class with the model's text tower as it is now (pretrained, in eval mode): its name
    mixed with its ancestors' names at `depth_weights` (see `hypernyms`), averaged over the templates;
    with `config.people`, "person" too, as its own row."""
    ancestors = classifier.ancestors or [()] * len(classifier.names)
    mixes = [weighted_names(name, levels, depth_weights) for name, levels in zip(classifier.names, ancestors)]
    words = sorted({text for mix in mixes for text, _ in mix} | ({PERSON} if model.config.people else set()))
    column = {text: i for i, text in enumerate(words)}
    mixing = torch.zeros(len(mixes), len(words))
    for row, mix in enumerate(mixes):
        for text, weight in mix:
            mixing[row, column[text]] += weight
    was_training = model.text_tower.training
    model.text_tower.eval()
    texts = [template.format(word) for template in templates for word in words]
    rows = []
    for start in range(0, len(texts), PRIOR_BATCH):
        batch = tokenize(tokenizer, texts[start:start + PRIOR_BATCH], model.config.context_length)
        rows.append(model.text_features(batch["input_ids"], batch["attention_mask"]).float())
    model.text_tower.train(was_training)
    embedded = torch.cat(rows).view(len(templates), len(words), -1).mean(0)
    return LabelPrior(classifier.layer, mixing @ embedded, embedded[column[PERSON]] if model.config.people else None)


@torch.no_grad()
def start_as_reading(model: TinyClip) -> None:
    """Set linear heads so that the model IS its label prior's centred reading (image head zero,
    text head the identity minus the mean class-name embedding): a start that already retrieves,
    from which training learns a correction."""
    width = model.text_tower.config.hidden_size
    if model.label_prior is None or model.config.head != "linear" or model.embed_dim != width:
        raise TmvError(f"heads can start as the built-in reading only with a label prior, --head linear and "
                       f"--embed-dim {width} (the text tower's width)")
    model.image_proj.weight.zero_()
    model.image_proj.bias.zero_()
    model.text_proj.weight.copy_(torch.eye(width))
    model.text_proj.bias.copy_(-model.label_prior.label_text.mean(0))
