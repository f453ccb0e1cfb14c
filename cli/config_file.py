"""Merge run options: dataclass defaults < resumed run's config < --config YAML < command-line flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

MODEL_FIELDS = ("image_model", "text_model", "image_weights", "pretrained", "embed_dim", "head", "image_size", "context_length",
                "init_logit_scale", "label_prior")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A flat mapping of option names; a nested `model:` section is flattened."""
    import yaml

    from tinymvlm.errors import TmvError

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TmvError(f"cannot read config {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(loaded, dict):
        raise TmvError(f"config {path} must be a mapping of option names to values")
    flat = {k.replace("-", "_"): v for k, v in loaded.items() if k != "model"}
    flat.update({k.replace("-", "_"): v for k, v in (loaded.get("model") or {}).items()})
    return flat


def build_config(ctx: click.Context, params: dict[str, Any], base: dict[str, Any]):
    """TrainConfig from `base` (YAML layers) overlaid with the flags given on the command line."""
    from tinymvlm.config import ModelConfig
    from tinymvlm.errors import TmvError
    from tinymvlm.train import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"} | set(MODEL_FIELDS)
    unknown = sorted(set(base) - known)
    if unknown:
        raise TmvError(f"unknown option(s) in config: {', '.join(unknown)}")
    merged = dict(base)
    for name, value in params.items():
        if name in known and ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
            merged[name] = value
    model = ModelConfig(**{k: merged.pop(k) for k in MODEL_FIELDS if k in merged})
    try:
        return TrainConfig(model=model, **merged)
    except TypeError as exc:
        raise TmvError(f"bad option value: {exc}") from exc
