"""Image loading and preprocessing.

Preprocessing comes from the image tower's own timm data config (size, mean/std, interpolation, crop),
never from hard-coded statistics. Every image is decoded the same way: EXIF orientation applied, 16-bit
and float images scaled to 8 bits, and transparency composited onto one fixed background, so a
transparent stamp never shows whatever colour happens to hide under its transparent pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image, ImageOps

from tinymvlm.errors import first_line

BACKGROUND = (255, 255, 255)
MAX_PIXELS = 100_000_000  # a decompression bomb is refused, not decoded

Image.MAX_IMAGE_PIXELS = MAX_PIXELS

if TYPE_CHECKING:
    import torch
# Images over MAX_PIXELS are refused by load_image; Pillow's own warning for them is noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB on the fixed background, whatever the mode."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        high = array.max() if array.size else 0
        scale = 255.0 / (65535.0 if image.mode.startswith("I;16") or high > 255 else max(high, 1.0))
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, BACKGROUND + (255,))
        canvas.alpha_composite(image)
        return canvas.convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode a file to upright RGB. `draft_size` lets JPEGs decode at a reduced scale near the
    model's input size, which is several times faster for large photos. Raises on a bad file."""
    with Image.open(path) as image:
        pixels = image.width * image.height
        if pixels > MAX_PIXELS:  # Pillow itself only warns below twice its limit, and decodes
            raise Image.DecompressionBombError(f"{image.width}x{image.height} is {pixels:,} pixels, over the "
                                               f"{MAX_PIXELS:,}-pixel limit: a possible decompression bomb")
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", draft_size)
        image.load()
        return to_rgb(image)


def build_transforms(data_config: dict, training: bool) -> Callable[[Image.Image], "torch.Tensor"]:
    """timm's transform for this data config; training adds a random resized crop."""
    from timm.data import create_transform

    if training:
        return create_transform(**data_config, is_training=True, scale=(0.5, 1.0), hflip=0.0,
                                color_jitter=None, auto_augment=None, re_prob=0.0)
    return create_transform(**data_config, is_training=False)


def decode_image(images, i: int, transform: Callable, draft: tuple[int, int] | None,
                 keep_going: bool) -> tuple["torch.Tensor | None", str | None]:
    """Image `i` of a source with `open(i, draft)` through `transform`: (pixels, None), or (None, reason)
    for an image that fails with keep_going. How embedding (CPU batches and the GPU path's fallback)
    decodes one image on the CPU."""
    try:
        return transform(images.open(i, draft)), None
    except Exception as exc:  # with keep_going, any decoder failure is this image's problem, not the run's
        if not keep_going:
            raise
        return None, first_line(exc)


class EvalTransform:
    """timm's eval transform split in two halves so the per-image half, which decoding workers run on
    the same cores as the model, stays cheap. Per image: PIL resizes just the region the centre crop
    keeps, with the same filter taps as resizing the whole image (Pillow may run its two passes in the
    other order: a pixel of a photo moves by two levels at most), to uint8, a quarter of the bytes workers
    hand over as floats. Per batch (`normalise`): scaled and normalised at once, on
    the model's device. A timm eval transform of another shape runs whole per image, as timm built it."""

    def __init__(self, data_config: dict) -> None:
        from torchvision import transforms as tv

        self.timm = build_transforms(data_config, training=False)
        steps = self.timm.transforms
        self.split = (len(steps) == 4 and isinstance(steps[0], tv.Resize) and isinstance(steps[1], tv.CenterCrop)
                      and isinstance(steps[3], tv.Normalize) and isinstance(steps[0].size, (int, list, tuple))
                      and len(np.atleast_1d(steps[0].size)) == 1 and steps[0].max_size is None)
        if self.split:
            self.short = int(np.atleast_1d(steps[0].size)[0])
            self.crop_h, self.crop_w = steps[1].size
            self.split = self.short >= max(self.crop_h, self.crop_w)  # else CenterCrop pads: timm's path
        if self.split:
            from torchvision.transforms.functional import pil_modes_mapping

            self.resample = pil_modes_mapping[steps[0].interpolation]
            self.mean = [float(v) for v in steps[3].mean]
            self.std = [float(v) for v in steps[3].std]

    def __call__(self, image: Image.Image) -> "torch.Tensor":
        """CHW pixels: uint8 when split (normalise the batch), else timm's float tensor."""
        import torch

        if not self.split:
            return self.timm(image)
        w, h = image.size
        if w <= h:  # torchvision's Resize(int): the short edge to `short`, the long one truncated
            rw, rh = self.short, int(self.short * h / w)
        else:
            rw, rh = int(self.short * w / h), self.short
        top, left = int(round((rh - self.crop_h) / 2.0)), int(round((rw - self.crop_w) / 2.0))
        if (rw, rh) == (w, h):
            out = image.crop((left, top, left + self.crop_w, top + self.crop_h))
        else:
            sx, sy = w / rw, h / rh
            box = (left * sx, top * sy, (left + self.crop_w) * sx, (top + self.crop_h) * sy)
            out = image.resize((self.crop_w, self.crop_h), self.resample, box=box)
        return torch.from_numpy(np.array(out, dtype=np.uint8)).permute(2, 0, 1)

    def normalise(self, pixels: "torch.Tensor") -> "torch.Tensor":
        """A batch of `__call__` outputs as the model's float input."""
        import torch

        if pixels.dtype != torch.uint8:
            return pixels
        mean = torch.tensor(self.mean, device=pixels.device).mul_(255).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).mul_(255).view(1, -1, 1, 1)
        return pixels.float().sub_(mean).div_(std)


class Preprocess:
    """The public `preprocess` (tinymvlm.load): any PIL image -> the model's input tensor, decoded by
    `to_rgb` and transformed by `EvalTransform` exactly as `tmv index` does, so an image embeds the
    same either way."""

    def __init__(self, data_config: dict) -> None:
        self.transform = EvalTransform(data_config)

    def __call__(self, image: Image.Image) -> "torch.Tensor":
        return self.transform.normalise(self.transform(to_rgb(image))[None])[0]

    def __repr__(self) -> str:
        return f"Preprocess(to_rgb, {self.transform.timm!r})"

