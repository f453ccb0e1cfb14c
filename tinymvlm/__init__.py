"""tinymvlm: train a small CLIP-style model, index images with FAISS, search and evaluate."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def load(path: str | Path | None = None, device: str = "cpu"):
    """Return `(model, preprocess, tokenizer)` for any model `--model` takes (see `tinymvlm.models.resolve`): a
    checkpoint file or run folder (its best checkpoint), `hf:ORG/NAME` or a Hugging Face CLIP/SigLIP
    folder, `open_clip:ARCH/TAG|FILE`, or "builtin" (the built-in model, see `tinymvlm.models.builtin`); None
    means the latest run's best, or the built-in model when there is no run. The open_clip contract that CLIP_benchmark uses:
    `model.encode_image(torch.stack([preprocess(pil) for pil in images]))`, and
    `model.encode_text(tokenizer(texts))` where the tokenizer gives one LongTensor padded to the
    model's context length. `preprocess` takes any PIL image and decodes it as `tmv index` does."""
    from tinymvlm.data.transform import Preprocess
    from tinymvlm.models.checkpoint import load_checkpoint
    from tinymvlm.models.resolve import resolve_model
    from tinymvlm.models.tokenizer import Tokenizer

    model, hf_tokenizer, _ = load_checkpoint(resolve_model(path))
    tokenizer = Tokenizer(hf_tokenizer, model.config.context_length, model.pad_token_id)
    return model.to(device).eval(), Preprocess(model.data_config), tokenizer


__all__ = ["load", "__version__"]
