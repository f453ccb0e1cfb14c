"""One picture per format tmv reads, made in the test: Pillow writes most, pillow-heif HEIC, tifffile
a DNG (a Bayer mosaic of a picture, with or without an embedded preview) that LibRaw reads."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

ORIENTATION = 0x0112
# The e2e set of rclip plus the rest of what the issue names: file name -> how it is written.
NAMES = ["photo.jpg", "upper.JPG", "long.jpeg", "lossless.png", "web.webp", "scan.tiff", "deep16.tif",
         "pages.tiff", "paint.bmp", "still.gif", "moving.gif", "moving.webp", "moving.png", "duck.jp2",
         "kookaburras.pnm", "magpie.pbm", "parrot-and-flowers.pgm", "parrot-looks-into-the-camera.ppm",
         "icon.ico", "targa.tga", "phone.heic", "modern.avif", "camera.dng", "previewed.dng"]


def pattern(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A picture of its own: random colour blocks of 8 x 8 pixels, so no two seeds look alike to a model."""
    rng = np.random.default_rng(seed)
    w, h = size
    blocks = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8)))


def write(path: Path, image: Image.Image) -> None:
    """`image` saved as `path`'s format says (the name decides, as in NAMES)."""
    name, ext = path.name, path.suffix.lower()
    if ext == ".dng":
        write_dng(path, image, preview=image if name.startswith("previewed") else None)
    elif ext == ".heic":
        import pillow_heif

        pillow_heif.register_heif_opener()
        image.save(path, "HEIF", quality=90)
    elif name.startswith("moving"):  # an animation: the first frame is the picture
        frames = [image, image.transpose(Image.Transpose.ROTATE_180)]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    elif name.startswith("pages"):  # a multi-page TIFF: the first page is the picture
        image.save(path, save_all=True, append_images=[image.transpose(Image.Transpose.ROTATE_180)])
    elif name.startswith("deep16"):  # 16-bit grey
        Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257).save(path)
    elif ext == ".pbm":
        image.convert("1").save(path)
    elif ext == ".pgm":
        image.convert("L").save(path)
    elif ext == ".ico":
        image.save(path, sizes=[image.size])
    else:
        image.save(path)


def bayer(rgb: np.ndarray, white: int) -> np.ndarray:
    """An RGGB mosaic of an sRGB picture, linear light up to `white`."""
    linear = (rgb.astype(np.float64) / 255) ** 2.2 * white
    mosaic = np.empty(rgb.shape[:2], np.uint16)
    mosaic[0::2, 0::2] = linear[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = linear[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = linear[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = linear[1::2, 1::2, 2]
    return mosaic


def write_dng(path: Path, image: Image.Image, orientation: int = 1, preview: Image.Image | None = None,
              preview_jpeg: bool = True) -> None:
    """A DNG 1.4 of `image` as an RGGB sensor saw it (identity colour matrix, D65), with the EXIF
    `orientation`; `preview` is embedded as cameras do (a JPEG in IFD0, the raw data in a SubIFD)."""
    import tifffile

    white = 4095
    identity = [1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1]
    main = [(271, "s", 0, "tinymvlm", True), (272, "s", 0, "test camera", True),
            (274, "H", 1, orientation, True), (50706, "B", 4, (1, 4, 0, 0), True),
            (50707, "B", 4, (1, 1, 0, 0), True), (50708, "s", 0, "tinymvlm test camera", True),
            (50721, "2i", 9, identity, True), (50778, "H", 1, 21, True), (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True)]
    cfa = [(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True), (50714, "H", 1, 0, True),
           (50717, "H", 1, white, True)]
    mosaic = bayer(np.asarray(image.convert("RGB")), white)
    with tifffile.TiffWriter(path) as tif:
        if preview is None:
            tif.write(mosaic, photometric=32803, extratags=main + cfa, subfiletype=0)
        else:
            tif.write(np.asarray(preview.convert("RGB")), photometric="rgb", extratags=main, subfiletype=1, subifds=1)
            tif.write(mosaic, photometric=32803, extratags=cfa, subfiletype=0)
    if preview is not None and preview_jpeg:
        buffer = io.BytesIO()
        preview.convert("RGB").save(buffer, "JPEG", quality=95)
        _jpeg_strip(path, buffer.getvalue())


def _jpeg_strip(path: Path, jpeg: bytes) -> None:
    """IFD0's uncompressed strip swapped for JPEG bytes (tifffile writes JPEG only with imagecodecs)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        tags, order = tif.pages[0].tags, tif.byteorder
        spots = {name: (tags[name].valueoffset, "H" if tags[name].dtype == 3 else "I")
                 for name in ("Compression", "StripOffsets", "StripByteCounts")}
    data = bytearray(path.read_bytes())
    for name, value in (("Compression", 7), ("StripOffsets", len(data)), ("StripByteCounts", len(jpeg))):
        offset, kind = spots[name]
        struct.pack_into(order + kind, data, offset, value)
    path.write_bytes(bytes(data + jpeg))


def make_folder(folder: Path, names: list[str] = NAMES) -> dict[str, Path]:
    """One picture of its own per name in `folder`: {name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for seed, name in enumerate(names):
        write(folder / name, pattern(seed))
        out[name] = folder / name
    return out
