"""Image embedding with JPEGs decoded and resized on the accelerator: the CPU only reads file bytes.

On a GPU, decoding JPEGs with Pillow is what bounds indexing (hundreds of images/s from a whole CPU,
against thousands the image tower could embed). Here DataLoader workers read each file's bytes into
pinned memory; a batch of JPEGs is decoded at once by `torchvision.io.decode_jpeg` (nvJPEG on CUDA),
and resized, cropped and normalised on the device with the eval transform's own steps (timm's
Resize and CenterCrop, applied to uint8 tensors as Pillow applies them to images), so the geometry has
one owner. `draft` mirrors Pillow's JPEG draft decoding: the same power-of-two reduction, by averaging.

Anything that would not decode exactly as `transform.load_image` decodes it goes the CPU way, one file
at a time: not a JPEG, CMYK, an EXIF rotation, over the pixel limit, no end-of-image marker (truncated),
or refused by decode_jpeg. So a bad file is skipped with Pillow's own reason, as on the CPU path.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from tinymvlm.data.transform import EXIF_ORIENTATION, MAX_PIXELS, EvalTransform, decode_image
from tinymvlm.errors import TmvError
from tinymvlm.inference.runtime import Runtime
from tinymvlm.models.tinyclip import TinyClip

END_OF_IMAGE = b"\xff\xd9"


def device_decodable(data: bytes) -> bool:
    """True when decode_jpeg gives the pixels `load_image` would: a complete, upright RGB or grey JPEG
    within the pixel limit. Only the header is parsed."""
    if not data.rstrip(b"\0").endswith(END_OF_IMAGE):
        return False
    try:
        with Image.open(io.BytesIO(data)) as image:
            return (image.format == "JPEG" and image.mode in ("RGB", "L")
                    and image.width * image.height <= MAX_PIXELS
                    and image.getexif().get(EXIF_ORIENTATION, 1) == 1)
    except Exception:  # anything Pillow cannot even open is the CPU path's to report
        return False


def draft_reduction(width: int, height: int, draft: tuple[int, int]) -> int:
    """The scale Pillow's JpegImageFile.draft picks: the largest of 8, 4, 2, 1 that keeps both sides
    at least the draft size."""
    scale = min(width // draft[0], height // draft[1])
    return next((s for s in (8, 4, 2) if scale >= s), 1)


class DeviceSteps:
    """The eval transform split at its ToTensor: geometric steps on uint8 CHW tensors, then the
    float steps (Normalize) on the whole batch."""

    def __init__(self, transform) -> None:
        steps = list(getattr(transform, "transforms", []))
        cut = next((k for k, s in enumerate(steps) if type(s).__name__ in ("ToTensor", "MaybeToTensor")), None)
        if cut is None:
            raise TmvError(f"cannot run the eval transform on the GPU (no ToTensor step in {transform!r}); "
                           "set TMV_DEVICE_DECODE=0 to decode on the CPU")
        self.geometry, self.normalise = steps[:cut], steps[cut + 1:]

    def image(self, pixels: torch.Tensor, reduction: int) -> torch.Tensor:
        """One decoded uint8 (3, H, W) image to the model's size, still uint8."""
        if reduction > 1:
            pixels = F.avg_pool2d(pixels[None].float(), reduction, ceil_mode=True)[0].round_().to(torch.uint8)
        for step in self.geometry:
            pixels = step(pixels)
        return pixels

    def batch(self, pixels: torch.Tensor) -> torch.Tensor:
        out = pixels.float().div_(255)
        for step in self.normalise:
            out = step(out)
        return out


class _Bytes(Dataset):
    """(position, bytes, None, None) for a JPEG the device can decode; else the CPU way:
    (position, None, pixels, None), or (position, None, None, error) with keep_going."""

    def __init__(self, images, count: int, transform, draft: tuple[int, int] | None, keep_going: bool) -> None:
        self.images, self.count, self.transform, self.draft, self.keep_going = images, count, transform, draft, keep_going
        self.paths = getattr(images, "paths", None)  # files; other sources decode on the CPU

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        if self.paths is not None:
            try:
                data = Path(self.paths[i]).read_bytes()
            except OSError:
                data = b""  # the CPU decode below reports it as the CPU path does
            if device_decodable(data):
                return i, torch.frombuffer(bytearray(data), dtype=torch.uint8), None, None
        return i, None, *decode_image(self.images, i, self.transform, self.draft, self.keep_going)


def _collate(items):
    return ([(i, b) for i, b, _, _ in items if b is not None], [(i, p) for i, _, p, _ in items if p is not None],
            [(i, e) for i, _, _, e in items if e is not None])


def decode_batch(datas: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """decode_jpeg on the whole batch; when it refuses the batch, one file at a time (None: refused)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    try:
        return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        out: list[torch.Tensor | None] = []
        for data in datas:
            try:
                out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out


Batch = tuple[list[int], np.ndarray, list[tuple[int, str]]]  # positions, their vectors, (position, reason) failures


@torch.inference_mode()
def device_batches(model: TinyClip, images, count: int, runtime: Runtime, draft: tuple[int, int] | None,
                   keep_going: bool, decode_device: torch.device | str | None = None) -> Iterator[Batch]:
    """The batches of `embed.image_batches` (`images` is any of its sources, `draft` its draft size),
    with JPEG files decoded on `decode_device` (default: the runtime's device): the same positions
    and failure reasons and, within resampling differences, the same vectors."""
    rt = runtime.resolve()
    device = rt.torch_device
    decoder = torch.device(decode_device) if decode_device is not None else device
    model.to(device).eval()
    transform = EvalTransform(model.data_config)  # the CPU way, for the files the device does not decode
    steps = DeviceSteps(transform.timm)
    workers = rt.loader_workers(count)
    loader = DataLoader(_Bytes(images, count, transform, draft, keep_going), batch_size=rt.batch_size,
                        num_workers=workers, collate_fn=_collate, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if workers else None)
    for encoded, decoded, failures in loader:
        pixels = {i: transform.normalise(p.to(device, non_blocking=True)[None])[0] for i, p in decoded}
        resized = {}
        for (i, _), image in zip(encoded, decode_batch([d for _, d in encoded], decoder)):
            if image is None:  # refused by decode_jpeg: Pillow decides, and names what is wrong
                cpu, error = decode_image(images, i, transform, draft, keep_going)
                if error is not None:
                    failures.append((i, error))
                else:
                    pixels[i] = transform.normalise(cpu.to(device)[None])[0]
                continue
            reduction = draft_reduction(image.shape[2], image.shape[1], draft) if draft else 1
            resized[i] = steps.image(image, reduction)
        if resized:
            normalised = steps.batch(torch.stack(list(resized.values()))).to(device)
            pixels.update(zip(resized, normalised))
        positions = sorted(pixels)
        vectors = np.empty((0, model.embed_dim), np.float32)
        if positions:
            batch = torch.stack([pixels[i] for i in positions]).contiguous(memory_format=torch.channels_last)
            with rt.autocast():
                vectors = model.encode_image(batch).float().cpu().numpy()
        yield positions, vectors, sorted(failures)
