"""tinymvlm: train a small CLIP-style model, index images with FAISS, search and evaluate."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def load(path: str | Path | None = None, device: str = "cpu"):
    """Return `(model, preprocess, tokenizer)` for a checkpoint file or run folder (its best
    checkpoint); None means the latest run's best. The contract CLIP_benchmark-style tools use."""
    from .checkpoint import load_checkpoint
    from .run import resolve_checkpoint
    from .transform import build_transforms

    model, tokenizer, _ = load_checkpoint(resolve_checkpoint(path))
    return model.to(device).eval(), build_transforms(model.data_config, training=False), tokenizer


__all__ = ["load", "__version__"]
