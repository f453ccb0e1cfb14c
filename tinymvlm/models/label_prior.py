"""The label prior: a pretrained image tower's own class predictions, read as text.

An ImageNet tower already knows that a photo shows a dingo or a violin; what a few hundred training
pairs cannot teach is how its features map to captions about things those pairs never show. The
prior bridges that gap: the tower's classifier gives each image a distribution over its class
names, and the text tower's embedding of each name turns that distribution into one caption-like
vector, which goes through the same text head as real captions. The image embedding is the image
head's output plus that term, so the heads train on top of a mapping that already generalises.

ImageNet's classes hardly name people, so a prior may also hold a "person" row: an image in which
a face is found (see `people`) gives it part of the probability mass, the classes share the rest.

The classifier stays frozen (it defines what the class names mean) and the names are embedded once,
when the model is built, by the pretrained text tower; all is saved in the checkpoint, so a saved
model needs neither the class names nor the pretrained weights again.
"""

from __future__ import annotations

import torch
from torch import nn


class LabelPrior(nn.Module):
    """Pooled image features -> expected text-tower embedding of the predicted class name."""

    def __init__(self, classifier: nn.Linear, label_text: torch.Tensor, person_text: torch.Tensor | None = None) -> None:
        super().__init__()
        self.classifier = classifier.requires_grad_(False)
        self.register_buffer("label_text", label_text)
        self.person_text: torch.Tensor | None
        self.register_buffer("person_text", None if person_text is None else person_text.reshape(1, -1))

    @classmethod
    def empty(cls, classes: int, in_features: int, text_width: int, people: bool = False) -> "LabelPrior":
        """The right shapes to load a checkpoint's prior into."""
        return cls(nn.Linear(in_features, classes), torch.zeros(classes, text_width),
                   torch.zeros(1, text_width) if people else None)

    @property
    def classes(self) -> int:
        return self.label_text.shape[0]

    @property
    def reads_people(self) -> bool:
        return self.person_text is not None

    def forward(self, features: torch.Tensor, person_mass: torch.Tensor | None = None) -> torch.Tensor:
        """The expected row; with a person row, `person_mass` (n, 1) goes to it and the classes share the rest."""
        reading = self.classifier(features).float().softmax(-1) @ self.label_text
        if self.person_text is None or person_mass is None:
            return reading
        mass = person_mass.float()
        return (1 - mass) * reading + mass * self.person_text
