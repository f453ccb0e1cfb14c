"""Rebuilding an imported pretrained CLIP's towers from a checkpoint's `source` metadata: the one
place that knows which adapter module owns which kind of source."""

from __future__ import annotations

from tinymvlm.errors import TmvError
from tinymvlm.models.config import ModelConfig
from tinymvlm.models.tinyclip import TinyClip


def model_from_source(config: ModelConfig, source: dict, image_arch: str, data_config: dict) -> TinyClip:
    """The architecture of an imported model, random weights (the caller loads the checkpoint's)."""
    kind = source.get("kind")
    if kind == "hf":
        from tinymvlm.models import hf_clip

        return hf_clip.build(config, source, image_arch, data_config)
    if kind == "open_clip":
        from tinymvlm.models import openclip

        return openclip.build(config, source, image_arch, data_config)
    raise TmvError(f"checkpoint describes a model of unknown kind {kind!r}; a newer tinymvlm may read it")
