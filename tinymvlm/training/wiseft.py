"""WiSE-FT (Wortsman et al. 2022): keep what the starting model knew by saving a weight-space mix.

Fine-tuning on a few hundred pairs from one domain moves the weights to fit that domain and loses the
general knowledge of the starting point (the built-in reading retrieves real photos far better than a
model trained on Tux Paint stamps). Interpolating every weight between the start and the fine-tuned
model, `start + alpha * (trained - start)`, keeps most of the in-domain gain and most of the start's
out-of-domain accuracy: the two models are fine-tuned from one another, so the straight line between
them stays in one basin. Training itself runs on the fine-tuned weights (`latest.safetensors`, which
a resume continues from); the run's validation and the models it saves (`best`, `epoch_NNN`) are the
mix. The start is saved once as RUN/start.safetensors, so a resumed run mixes with the same weights.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file

from tinymvlm.errors import TmvError
from tinymvlm.models.tinyclip import TinyClip

START = "start.safetensors"


def start_weights(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """The weights a run started from, as its start.safetensors holds them."""
    if not path.is_file():
        raise TmvError(f"{path.parent} has no {START} (it started with wise_alpha 1), so there is nothing to mix "
                       "with; resume it with --wise-alpha 1")
    return {k: v.to(device) for k, v in load_file(str(path)).items()}


def mix(start: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """start + alpha * (trained - start) for floating-point weights; others (counters) as trained."""
    return {k: start[k] + alpha * (v - start[k]) if v.is_floating_point() else v for k, v in trained.items()}


@contextlib.contextmanager
def mixed(model: TinyClip, start: dict[str, torch.Tensor] | None, alpha: float) -> Iterator[TinyClip]:
    """The model with its weights mixed toward `start` inside the block, restored after it (in place:
    the optimiser keeps its parameters). alpha 1 or no start: the model as it is."""
    if start is None or alpha == 1:
        yield model
        return
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(mix(start, trained, alpha))
    try:
        yield model
    finally:
        model.load_state_dict(trained)
