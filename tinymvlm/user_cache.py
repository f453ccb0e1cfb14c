"""The user cache folder: what tinymvlm makes once and can always make again (the built-in model,
imported pretrained models, ONNX text encoders, thumbnails). One folder for every index and run, outside
them, so a read-only index still gets its thumbnails and text encoder. $XDG_CACHE_HOME moves it on Linux."""

from __future__ import annotations

from pathlib import Path


def user_cache(*parts: str) -> Path:
    """The platform's user cache folder for tinymvlm (~/.cache/tinymvlm on Linux), or a path inside it."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tinymvlm", appauthor=False)).joinpath(*parts)


def model_cache() -> Path:
    """Where models made once live: the built-in model and every imported pretrained CLIP."""
    return user_cache("models")
