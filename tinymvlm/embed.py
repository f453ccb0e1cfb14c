"""Batch embedding of captions and images with a trained model (inference mode, optional bf16)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .model import TinyClip
from .tokenizer import tokenize


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix work runs natively (elsewhere it is emulated and slow)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(device: torch.device, precision: str) -> str:
    """`auto` is bf16 where the hardware runs it natively (CUDA, recent x86 CPUs), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def autocast(device: str | torch.device, precision: str):
    """bf16 autocast on CPU or CUDA when asked; a no-op context for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def embed_texts(model: TinyClip, tokenizer, texts: Sequence[str], batch_size: int = 256,
                precision: str = "fp32", device: str = "cpu") -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text. Texts are sorted by length so each
    batch pads little, then returned in input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.embed_dim), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = tokenize(tokenizer, [texts[i] for i in idx], model.config.context_length)
        with autocast(device, precision):
            vecs = model.encode_text(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        out[idx] = vecs.float().cpu().numpy()
    return out


@torch.inference_mode()
def embed_pixel_batches(model: TinyClip, batches: Iterator[torch.Tensor], precision: str = "fp32",
                        device: str = "cpu", on_batch: Callable[[int], None] | None = None) -> Iterator[np.ndarray]:
    """Embed preprocessed pixel batches as they arrive (from a DataLoader, typically)."""
    for pixels in batches:
        pixels = pixels.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            vecs = model.encode_image(pixels)
        if on_batch is not None:
            on_batch(len(pixels))
        yield vecs.float().cpu().numpy()
