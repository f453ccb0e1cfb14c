"""Hugging Face CLIP and SigLIP models as tmv towers.

The adapters keep the source model's own semantics, those of its `get_image_features` and
`get_text_features`: CLIP's vision pooler output through its visual projection, its causal text
tower pooled at the end-of-text token through its text projection; SigLIP's attention-pooled vision
output and last-position text output with no projection (identity heads), its text padded to its
full context length as it was trained. Preprocessing is the image processor's, as a timm data config.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tinymvlm.errors import TmvError, first_line
from tinymvlm.models.config import ModelConfig
from tinymvlm.models.tinyclip import TinyClip
from tinymvlm.models.tokenizer import pad_to

MODEL_TYPES = ("clip", "siglip")
_PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


class HfImageTower(nn.Module):
    """Pixels -> the vision model's pooled output (before any projection)."""

    def __init__(self, vision_model: nn.Module, width: int) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.num_features = width

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixel_values=pixels).pooler_output


class HfTextTower(nn.Module):
    """Token ids -> the text model's pooled output. The mask is not passed on: CLIP's text tower is
    causal (the end-of-text position never sees padding) and SigLIP's was trained without one, on
    text padded to its full context length, which `pool` restores whatever padding it is given."""

    def __init__(self, text_model: nn.Module, model_type: str, pad_token_id: int, context_length: int) -> None:
        super().__init__()
        self.text_model = text_model
        self.model_type = model_type
        self.pad_token_id = pad_token_id
        self.context_length = context_length

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.model_type == "siglip":
            input_ids = pad_to(input_ids, attention_mask, self.context_length, self.pad_token_id)
        return self.text_model(input_ids=input_ids).pooler_output


def _parts(full: nn.Module, source: dict) -> tuple[nn.Module, nn.Module, tuple[nn.Module, nn.Module]]:
    config = full.config
    image = HfImageTower(full.vision_model, config.vision_config.hidden_size)
    text = HfTextTower(full.text_model, config.model_type, source["pad_token_id"], source["context_length"])
    if config.model_type == "clip":
        heads = (full.visual_projection, full.text_projection)
    else:
        heads = (nn.Identity(), nn.Identity())
    return image, text, heads


def _embed_dim(config) -> int:
    return config.projection_dim if config.model_type == "clip" else config.vision_config.hidden_size


def _model_config(ref: str, full: nn.Module, source: dict) -> ModelConfig:
    scale = math.exp(float(full.logit_scale.detach().reshape(())))
    return ModelConfig(image_model=ref, text_model=ref, pretrained=True, embed_dim=_embed_dim(full.config),
                       head="linear", context_length=source["context_length"],
                       init_logit_scale=min(100.0, max(1.0, scale)), label_prior=False)


def build(config: ModelConfig, source: dict, image_arch: str, data_config: dict) -> TinyClip:
    """The architecture a checkpoint's `source` describes, with random weights (the checkpoint's follow)."""
    from transformers import AutoConfig, AutoModel

    hf_config = dict(source["config"])
    full = AutoModel.from_config(AutoConfig.for_model(hf_config.pop("model_type"), **hf_config))
    image, text, heads = _parts(full, source)
    return TinyClip(config, image, text, image_arch, data_config, heads=heads, source=source)


def data_config_of(processor) -> dict:
    """The image processor's preprocessing as the timm data config our pipeline uses: resize the
    shortest side then centre-crop (CLIP), or squash to the size (SigLIP)."""
    size = dict(processor.size) if not isinstance(processor.size, int) else {"shortest_edge": processor.size}
    resample = getattr(processor, "resample", 3)
    interpolation = _PIL_FILTERS.get(int(getattr(resample, "value", resample)), "bicubic")
    config = {"mean": [float(x) for x in processor.image_mean], "std": [float(x) for x in processor.image_std],
              "interpolation": interpolation}
    if "shortest_edge" in size:
        crop = dict(processor.crop_size) if getattr(processor, "do_center_crop", False) else None
        edge = int(size["shortest_edge"])
        height, width = (int(crop["height"]), int(crop["width"])) if crop else (edge, edge)
        return {**config, "input_size": [3, height, width], "crop_pct": height / edge, "crop_mode": "center"}
    if "height" in size and "width" in size:
        return {**config, "input_size": [3, int(size["height"]), int(size["width"])], "crop_pct": 1.0, "crop_mode": "squash"}
    raise TmvError(f"unsupported image processor size {size}: expected shortest_edge or height and width")


def import_model(source_dir: str, ref: str):
    """Return (TinyClip, tokenizer) for a CLIP or SigLIP model in `source_dir` (a local folder or a
    hub id that the caller has checked can be fetched)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the library never prints; the CLI reports the import
    try:
        config = AutoConfig.from_pretrained(source_dir)
        if config.model_type not in MODEL_TYPES:
            raise TmvError(f"{ref} is a Hugging Face '{config.model_type}' model, not CLIP or SigLIP")
        full = AutoModel.from_pretrained(source_dir).float().eval()
        tokenizer = AutoTokenizer.from_pretrained(source_dir)
        processor = AutoImageProcessor.from_pretrained(source_dir)
    except (OSError, ValueError, ImportError) as exc:  # ImportError: a tokenizer's library is missing
        raise TmvError(f"could not load {ref}: {first_line(exc)}") from exc
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    source = {"kind": "hf", "config": full.config.to_dict(), "pad_token_id": int(pad),
              "context_length": int(full.config.text_config.max_position_embeddings)}
    source["config"]["model_type"] = full.config.model_type
    image, text, heads = _parts(full, source)
    model = TinyClip(_model_config(ref, full, source), image, text, f"hf:{full.config.model_type}",
                     data_config_of(processor), heads=heads, source=source)
    with torch.no_grad():
        model.logit_scale.copy_(full.logit_scale.detach().float().reshape(()))
    return model.eval(), tokenizer
