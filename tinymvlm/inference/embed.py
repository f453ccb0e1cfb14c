"""Embedding captions and images with a model, in inference mode under a `Runtime`: the one routine
that evaluation, zero-shot classification, indexing and search queries all embed images with.

Images come from any source with `open(i, draft_size)` (files, dataset rows, arrays) and are decoded
in threads between forward passes on a CPU, else in DataLoader workers (`Runtime.decode_threads`), or
on the GPU for JPEG files (`gpu_decode`). A source that may hold bad files is embedded with
`keep_going`: an image that fails to decode is reported with its position and reason, and its batch
goes on without it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from tinymvlm.data.transform import EvalTransform, decode_image
from tinymvlm.errors import TmvError
from tinymvlm.inference.runtime import Runtime
from tinymvlm.models.tinyclip import TinyClip
from tinymvlm.models.tokenizer import tokenize

TEXT_BATCH = 256  # captions are cheap: at least this many a batch, whatever the image batch size
OnImages = Callable[[int], None]


class ImageSource(Protocol):
    def open(self, i: int, draft_size: tuple[int, int] | None = None) -> Image.Image: ...


def _runtime_of(model: TinyClip, runtime: Runtime | None) -> Runtime:
    """The given runtime, resolved; by default fp32 on the device the model is on."""
    return Runtime.on(next(model.parameters()).device, "fp32") if runtime is None else runtime.resolve()


@torch.inference_mode()
def embed_texts(model: TinyClip, tokenizer, texts: Sequence[str], runtime: Runtime | None = None) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text. Texts are sorted by length so each
    batch pads little, then returned in input order."""
    rt = _runtime_of(model, runtime)
    model.to(rt.torch_device).eval()
    batch_size = max(rt.batch_size, TEXT_BATCH)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.embed_dim), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = tokenize(tokenizer, [texts[i] for i in idx], model.config.context_length)
        with rt.autocast():
            vecs = model.encode_text(batch["input_ids"].to(rt.device), batch["attention_mask"].to(rt.device))
        out[idx] = vecs.float().cpu().numpy()
    return out


def draft_size(data_config: dict) -> tuple[int, int]:
    """The size the eval transform resizes to before cropping: JPEG draft decoding stops above it."""
    size = int(data_config["input_size"][-1] / data_config.get("crop_pct", 1.0))
    return size, size


@dataclass
class ImageBatch:
    positions: list[int]  # indices into the source of the images embedded
    vectors: np.ndarray  # one row per position
    failures: list[tuple[int, str]]  # (position, first line of the decoder's error), with keep_going


class _Pixels(Dataset):
    """(position, pixels, None), or (position, None, error) for an image that fails with keep_going."""

    def __init__(self, images: ImageSource, count: int, transform, draft: tuple[int, int] | None,
                 keep_going: bool) -> None:
        self.images, self.count, self.transform, self.draft, self.keep_going = images, count, transform, draft, keep_going

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        return i, *decode_image(self.images, i, self.transform, self.draft, self.keep_going)


def _collate(items):
    good = [(i, t) for i, t, _ in items if t is not None]
    pixels = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], pixels, [(i, e) for i, t, e in items if t is None]


@torch.inference_mode()
def image_batches(model: TinyClip, images: ImageSource, count: int, runtime: Runtime, *, draft: bool = False,
                  keep_going: bool = False, on_images: OnImages | None = None) -> Iterator[ImageBatch]:
    """Embed images 0..count-1 of `images` a batch at a time, in order, yielding each batch as soon as
    it is done. `draft`: JPEGs decode at a reduced scale near the model's input size (faster, and
    slightly different pixels than a full decode)."""
    rt = runtime.resolve()
    drafting = draft_size(model.data_config) if draft else None
    if rt.decodes_on_device:  # JPEG files decode on the GPU (gpu_images), in the same batches as the CPU's
        from tinymvlm.inference.gpu_decode import device_batches

        batches = device_batches(model, images, count, rt, drafting, keep_going)
    else:
        batches = _cpu_batches(model, _Pixels(images, count, EvalTransform(model.data_config), drafting, keep_going),
                               rt, count)
    for positions, vectors, failures in batches:
        if on_images is not None:
            on_images(len(positions) + len(failures))
        yield ImageBatch(positions, vectors, failures)


def _cpu_batches(model: TinyClip, data: _Pixels, rt: Runtime, count: int) -> Iterator[tuple]:
    """(positions, vectors, failures) of each batch, decoded on the CPU (`_pixel_batches`)."""
    device = rt.torch_device
    model.to(device).eval()
    with rt.model_threads():
        for positions, pixels, failures in _pixel_batches(data, rt, count):
            vectors = np.empty((0, model.embed_dim), np.float32)
            if pixels is not None:
                pixels = data.transform.normalise(pixels.to(device, non_blocking=True))
                with rt.autocast():
                    vectors = model.encode_image(pixels.contiguous(memory_format=torch.channels_last)).float().cpu().numpy()
            yield positions, vectors, failures


def _pixel_batches(data: _Pixels, rt: Runtime, count: int) -> Iterator[tuple]:
    """Collated batches, decoded either by threads of this process between forward passes (so decoding
    and the model take turns on all the cores instead of fighting over them: Pillow releases the GIL
    while it decodes and resizes) or by DataLoader worker processes (`Runtime.decode_threads`)."""
    threads = rt.decode_threads(count)
    if threads:
        with ThreadPoolExecutor(threads) as pool:
            for start in range(0, count, rt.batch_size):
                yield _collate(list(pool.map(data.__getitem__, range(start, min(count, start + rt.batch_size)))))
        return
    workers = rt.loader_workers(count)
    yield from DataLoader(data, batch_size=rt.batch_size, num_workers=workers, collate_fn=_collate,
                          pin_memory=rt.torch_device.type == "cuda", prefetch_factor=4 if workers else None)


def embed_images(model: TinyClip, images: ImageSource, count: int, runtime: Runtime,
                 on_images: OnImages | None = None) -> np.ndarray:
    """L2-normalised float32 embeddings of all `count` images (a decoding error is raised)."""
    batches = [b.vectors for b in image_batches(model, images, count, runtime, on_images=on_images)]
    return np.concatenate(batches) if batches else np.zeros((0, model.embed_dim), dtype=np.float32)


def embed_query_images(model: TinyClip, paths: Sequence[str], runtime: Runtime) -> np.ndarray:
    """A few named image files, embedded as search queries are (JPEGs decoded in draft mode, as the
    index decodes them); a file that cannot be read is a one-line error naming it."""
    from tinymvlm.data.pairs import FileImages

    out = np.zeros((len(paths), model.embed_dim), dtype=np.float32)
    for batch in image_batches(model, FileImages(list(paths)), len(paths), runtime, draft=True, keep_going=True):
        for position, reason in batch.failures:
            raise TmvError(f"cannot read query image {paths[position]}: {reason}")
        out[batch.positions] = batch.vectors
    return out
