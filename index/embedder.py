"""Fast batch embedding of image files: DataLoader workers decode in parallel (JPEGs in draft mode, at
about the model's input size), the main process runs the image tower in inference mode.

A file that fails to decode does not stop the run: the worker returns its error instead of a tensor and
the batch goes on without it. Precision `auto` is bf16 where it is faster: on a CUDA device that
supports it, and on a CPU with native bf16 instructions (AVX512-BF16 or AMX; efficientnet_lite0 ran
1.4x faster in bf16 on such a 2-core machine, see benchmarks/bench_index.py); elsewhere fp32, because
emulated bf16 is slower than fp32. bf16 embeddings differ from fp32 ones by about 1e-3 in cosine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tinymvlm.distributed import resolve_device
from tinymvlm.embed import embed_pixel_batches, resolve_precision
from tinymvlm.errors import TmvError, first_line
from tinymvlm.transform import build_transforms, load_image


@dataclass
class EmbedConfig:
    batch_size: int = 64
    workers: int | None = None  # None: one per CPU core, at most 8; 0 decodes in the main process
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise TmvError("--batch-size must be at least 1")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise TmvError(f"precision must be auto, fp32 or bf16, not '{self.precision}'")


def resolve_workers(workers: int | None, n_files: int, batch_size: int) -> int:
    if workers is not None:
        return max(0, workers)
    if n_files <= batch_size:  # one batch: starting workers costs more than it saves
        return 0
    return min(8, os.cpu_count() or 1)


def draft_size(data_config: dict) -> tuple[int, int]:
    """The size the eval transform resizes to before cropping: JPEG draft decoding stops above it."""
    size = int(data_config["input_size"][-1] / data_config.get("crop_pct", 1.0))
    return size, size


class ImageFiles(Dataset):
    """Decoded, preprocessed images; (position, tensor, None) or (position, None, error)."""

    def __init__(self, paths: Sequence[str], transform, draft: tuple[int, int] | None) -> None:
        self.paths, self.transform, self.draft = list(paths), transform, draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, self.transform(load_image(self.paths[i], self.draft)), None
        except Exception as exc:  # any decoder failure is this file's problem, not the run's
            message = first_line(exc)
            return i, None, f"cannot decode: {message}"


def collate(items):
    """(positions decoded, pixel batch or None, [(position, error)])."""
    good = [(i, t) for i, t, _ in items if t is not None]
    failures = [(i, e) for i, t, e in items if t is None]
    pixels = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], pixels, failures


@dataclass
class Batch:
    positions: list[int]  # indices into the paths given to embed_files
    vectors: np.ndarray  # one row per position
    failures: list[tuple[int, str]]


def embed_files(model, paths: Sequence[str], cfg: EmbedConfig) -> Iterator[Batch]:
    """Embed image files a batch at a time, in order, yielding each batch as soon as it is done."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(device, cfg.precision)
    model.to(device).eval()
    data = ImageFiles(paths, build_transforms(model.data_config, training=False), draft_size(model.data_config))
    workers = resolve_workers(cfg.workers, len(paths), cfg.batch_size)
    loader = DataLoader(data, batch_size=cfg.batch_size, num_workers=workers, collate_fn=collate,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
                        persistent_workers=False)
    batches = iter(loader)
    pending: list[tuple[list[int], list[tuple[int, str]]]] = []

    def pixels() -> Iterator[torch.Tensor]:
        for positions, pix, failures in batches:
            if pix is None:
                pending.append(([], failures))
                continue
            pending.append((positions, failures))
            yield pix

    for vecs in embed_pixel_batches(model, pixels(), precision, str(device)):
        # every batch without a single good image was queued before this one
        while len(pending) > 1:
            _, failures = pending.pop(0)
            yield Batch([], np.empty((0, model.embed_dim), np.float32), failures)
        positions, failures = pending.pop(0)
        yield Batch(positions, vecs, failures)
    for _, failures in pending:
        yield Batch([], np.empty((0, model.embed_dim), np.float32), failures)
