"""A pre-resized copy of the training images (`--image-cache`), for runs that train the image tower:
every epoch would otherwise decode each full-size photo again, which bounds a GPU run's speed.

Each image is decoded once, exactly as training decodes it (`images.open`), shrunk so that its
shorter side is SCALE x the training crop size (never enlarged), and appended to one uint8 file in the
run folder. The index beside it holds each image's offset, cached size and original size, and a
fingerprint of what it was built from (keys, each file's size and mtime, the side). A resumed run
reuses the cache when the fingerprint matches, and rebuilds it when not; both files are written
atomically, the data before the index.

Crops are those of the run without a cache: the random-resized-crop box is drawn for the original
size with the same seeded draws, then resampled from the cached copy at the scaled, sub-pixel box.
A crop covers at least half the image (scale 0.5-1), so its shorter side is over 0.6 of the image's,
and SCALE 2 keeps every crop a downscale of the cache: pixels differ from the uncached run's only by
resampling from a smaller source.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from tinymvlm.atomic import atomic_path, write_text
from tinymvlm.data.pairs import PairSet
from tinymvlm.errors import TmvError, first_line

SCALE = 2
DATA, INDEX = "image_cache.u8", "image_cache.json"


def fingerprint(pairs: PairSet, side: int) -> str:
    """What a cache was built from: the image keys in order, each file's size and mtime, the side."""
    digest = hashlib.sha256(f"{side}\n".encode())
    paths = getattr(pairs.images, "paths", None)  # dataset rows have no file to change under them
    for k, key in enumerate(pairs.keys):
        digest.update(key.encode("utf-8", "surrogateescape") + b"\0")
        if paths is not None:
            st = os.stat(paths[k])
            digest.update(f"{st.st_size} {st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class _Shrunk(Dataset):
    """(uint8 HxWx3 array with the shorter side at most `side`, original (width, height))."""

    def __init__(self, pairs: PairSet, side: int) -> None:
        self.images, self.count, self.side = pairs.images, len(pairs), side

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        try:
            image = self.images.open(i)
        except Exception as exc:  # changed since the run checked it: name it (and not as a write error)
            raise TmvError(f"cannot read image {self.images.describe(i)} for the image cache: {first_line(exc)}") from exc
        width, height = image.size
        short = min(width, height)
        if short > self.side:
            size = (max(1, round(width * self.side / short)), max(1, round(height * self.side / short)))
            image = image.resize(size, Image.Resampling.BICUBIC)
        return np.asarray(image), (width, height)


def _one(items):
    return items[0]


class ImageCache:
    """The cached images, read through a memory map; `open(i)` -> (PIL image, original (width, height))."""

    def __init__(self, folder: Path, layout: np.ndarray) -> None:
        self.path, self.layout, self._data = folder / DATA, layout, None

    def __getstate__(self) -> dict:  # a DataLoader worker maps the file itself
        return {**self.__dict__, "_data": None}

    def __len__(self) -> int:
        return len(self.layout)

    def open(self, i: int) -> tuple[Image.Image, tuple[int, int]]:
        if self._data is None:
            self._data = np.memmap(self.path, np.uint8, "r")
        offset, height, width, orig_w, orig_h = (int(v) for v in self.layout[i])
        pixels = np.asarray(self._data[offset:offset + height * width * 3]).reshape(height, width, 3)
        return Image.fromarray(pixels), (orig_w, orig_h)

    @classmethod
    def load(cls, folder: Path, expected: str) -> "ImageCache | None":
        """The cache in `folder` when it is whole and built from `expected`; None otherwise."""
        try:
            index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
            layout = np.asarray(index["layout"], dtype=np.int64).reshape(-1, 5)
            whole = (folder / DATA).stat().st_size == index["bytes"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(folder, layout) if whole and index.get("fingerprint") == expected else None


def build(pairs: PairSet, side: int, folder: Path, workers: int, expected: str,
          on_image: Callable[[], None] = lambda: None) -> ImageCache:
    """Decode and shrink every image (in `workers` processes), then write the data and the index."""
    loader = DataLoader(_Shrunk(pairs, side), batch_size=1, num_workers=workers, collate_fn=_one)
    layout, offset = [], 0
    with atomic_path(folder / DATA) as tmp, open(tmp, "wb") as fh:
        for pixels, (width, height) in loader:
            layout.append((offset, pixels.shape[0], pixels.shape[1], width, height))
            fh.write(pixels.tobytes())
            offset += pixels.nbytes
            on_image()
    write_text(folder / INDEX, json.dumps({"fingerprint": expected, "side": side, "bytes": offset, "layout": layout}))
    return ImageCache(folder, np.asarray(layout, dtype=np.int64).reshape(-1, 5))


def for_run(pairs: PairSet, crop_size: int, folder: Path, workers: int, builds: bool,
            notice: Callable[[str], None] = lambda message: None) -> ImageCache:
    """The run's cache of `pairs`: reused when it matches them, else built (by the process that
    `builds`; the others call this after it, and find it)."""
    side = SCALE * crop_size
    expected = fingerprint(pairs, side)
    cache = ImageCache.load(folder, expected)
    if cache is not None:
        notice(f"image cache: reusing {folder / DATA} ({len(pairs)} images)")
        return cache
    if not builds:
        raise TmvError(f"the image cache {folder / DATA} is missing or stale after rank 0 built it; "
                       "check that every process sees the same run folder")
    notice(f"image cache: decoding {len(pairs)} training images once, shorter side {side} px, into {folder / DATA}")
    try:
        return build(pairs, side, folder, workers, expected)
    except OSError as exc:  # a full disk, most likely: the cache is about 3 x side x 4/3 side bytes an image
        raise TmvError(f"cannot write the image cache {folder / DATA}: {first_line(exc)}; free some space there "
                       "or train without --image-cache") from exc


def _size_probe(width: int, height: int) -> torch.Tensor:
    """A tensor of an image's size and no pixels, for transforms that only ask for the size."""
    return torch.empty(1, 1, 1).expand(1, height, width)


class CachedCrop:
    """The training transform on an (image, original size) from the cache: the random-resized-crop box
    drawn for the original size (the draws of the uncached transform, in its order), cut from the
    cached copy at the scaled box, then the transform's other steps."""

    def __init__(self, transform) -> None:
        from timm.data.transforms import RandomResizedCropAndInterpolation

        steps = list(getattr(transform, "transforms", []))
        if not steps or not isinstance(steps[0], RandomResizedCropAndInterpolation):
            raise TmvError(f"--image-cache needs a training transform that starts with a random resized crop, "
                           f"not {transform!r}")
        self.crop, self.rest = steps[0], steps[1:]

    def __call__(self, item: tuple[Image.Image, tuple[int, int]]) -> torch.Tensor:
        from torchvision.transforms.functional import pil_modes_mapping

        image, (width, height) = item
        top, left, h, w = self.crop.get_params(_size_probe(width, height), self.crop.scale, self.crop.ratio)
        mode = self.crop.interpolation
        if isinstance(mode, (tuple, list)):
            mode = random.choice(mode)
        sx, sy = image.width / width, image.height / height
        box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
        # Cut the whole pixels around the box first, as the uncached transform cuts its crop: the
        # filter then never reaches outside it (and an unshrunk image crops exactly as uncached).
        cut = (math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3]))
        out = image.crop(cut).resize(self.crop.size[::-1], pil_modes_mapping[mode],
                                     box=(box[0] - cut[0], box[1] - cut[1], box[2] - cut[0], box[3] - cut[1]))
        for step in self.rest:
            out = step(out)
        return out
