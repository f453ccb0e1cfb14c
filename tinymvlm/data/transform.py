"""Image loading and preprocessing.

Preprocessing comes from the image tower's own timm data config (size, mean/std, interpolation, crop),
never from hard-coded statistics. Every image is decoded the same way, whatever its format: EXIF
orientation applied, 16-bit and float images scaled to 8 bits, the first frame of an animation or page of
a multi-page file, and transparency composited onto one fixed background, so a transparent stamp never
shows whatever colour happens to hide under its transparent pixels. Pillow reads every format but camera
RAW files (HEIC/HEIF and AVIF through the openers `image_files.register_decoders` installs); LibRaw
(rawpy) reads those, from the camera's embedded preview when it is large enough.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image, ImageOps

from tinymvlm.errors import first_line
from tinymvlm.image_files import is_raw_name, register_decoders

BACKGROUND = (255, 255, 255)
MAX_PIXELS = 100_000_000  # a decompression bomb is refused, not decoded
EXIF_ORIENTATION = 0x0112
# LibRaw's `flip` (bit 1: mirror left-right, 2: upside down, 4: swap axes) as the EXIF orientation it
# was read from.
RAW_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}

Image.MAX_IMAGE_PIXELS = MAX_PIXELS
register_decoders()

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


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:  # Pillow itself only warns below twice its limit, and decodes
        raise Image.DecompressionBombError(f"{width}x{height} is {width * height:,} pixels, over the "
                                           f"{MAX_PIXELS:,}-pixel limit: a possible decompression bomb")


def _decode(image: Image.Image, draft_size: tuple[int, int] | None) -> None:
    """Load an opened image's pixels, refusing a bomb first; JPEGs and JPEG 2000s at a reduced scale
    near `draft_size` (never below it)."""
    _check_pixels(image.width, image.height)
    if draft_size is not None and image.format == "JPEG":
        image.draft("RGB", draft_size)
    elif draft_size is not None and image.format == "JPEG2000":
        fits = min(image.width // draft_size[0], image.height // draft_size[1])
        image.reduce = min(max(fits, 1).bit_length() - 1, _jpeg2000_levels(image))
    image.load()


def _jpeg2000_levels(image: Image.Image) -> int:
    """How many halvings a JPEG 2000 codestream holds (its COD segment's decomposition levels), which
    bounds how small OpenJPEG may decode it; 0 when the header cannot be read."""
    image.fp.seek(0)
    header = image.fp.read(65536)
    at = header.find(b"\xff\x4f\xff\x51")  # start of codestream, then the SIZ segment
    if at < 0:
        return 0
    at += 2
    while at + 10 <= len(header) and header[at] == 0xFF:
        marker, length = header[at + 1], int.from_bytes(header[at + 2:at + 4], "big")
        if marker == 0x52:  # COD: length, style, progression order, layers (2), transform, levels
            return header[at + 9]
        if marker == 0x90:  # the first tile: no COD in the main header
            return 0
        at += 2 + length
    return 0


def load_image(path: str | Path, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode a file to upright RGB. `draft_size` lets JPEGs decode at a reduced scale near the
    model's input size, which is several times faster for large photos. Raises on a bad file."""
    if is_raw_name(os.fspath(path)):
        return to_rgb(_load_raw(path, draft_size))
    with Image.open(path) as image:
        _decode(image, draft_size)
        return to_rgb(image)


def _load_raw(path: str | Path, draft_size: tuple[int, int] | None) -> Image.Image:
    """A camera RAW file: its embedded preview when that is at least `draft_size` (else at least what a
    half-size demosaic gives), which is many times faster; otherwise LibRaw's half-size demosaic with
    the camera's white balance. Either way with the orientation the camera recorded."""
    import rawpy

    try:
        raw = rawpy.imread(os.fspath(path))
    except rawpy.LibRawError as exc:
        raise ValueError(f"not a camera RAW file LibRaw reads ({_libraw_reason(exc)})") from None
    with raw:
        sizes = raw.sizes
        need = draft_size or (sizes.width // 2, sizes.height // 2)
        preview = _raw_preview(raw, need, draft_size)
        if preview is not None:
            preview.getexif().setdefault(EXIF_ORIENTATION, RAW_FLIP_TO_ORIENTATION.get(sizes.flip, 1))
            return preview
        _check_pixels(sizes.width // 2, sizes.height // 2)
        try:
            pixels = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
        except rawpy.LibRawError as exc:
            raise ValueError(f"cannot demosaic the RAW data ({_libraw_reason(exc)})") from None
    return Image.fromarray(pixels)


def _raw_preview(raw, need: tuple[int, int], draft_size: tuple[int, int] | None) -> Image.Image | None:
    """The RAW file's embedded preview, decoded, when both its sides cover `need`'s; else None."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawError, ValueError):  # none, or a kind rawpy does not hand over
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        image = Image.open(io.BytesIO(thumb.data))
    elif thumb.format == rawpy.ThumbFormat.BITMAP:
        image = Image.fromarray(thumb.data)
    else:
        return None
    (short, long), (need_short, need_long) = sorted(image.size), sorted(need)
    if short < need_short or long < need_long:
        return None
    try:
        _decode(image, draft_size)
    except Exception:  # a broken preview: the RAW data may still be whole
        return None
    return image


def _libraw_reason(exc: Exception) -> str:
    text = first_line(exc)
    return text[2:-1] if text.startswith(("b'", 'b"')) else text


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

