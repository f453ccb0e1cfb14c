"""Hostile inputs for the fault suite: image folders full of broken and odd files, and broken pairs files.

Every planted file or row comes with what should happen to it, so a test can assert each fault's outcome
by name. `make_hostile_folder` plants:

* good files: plain PNGs, an EXIF-rotated JPEG (with its upright twin), CMYK, 16-bit, palette with
  transparency, animated GIF, a 24-megapixel camera-size JPEG, a PNG named `.jpg`, an upper-case `.JPEG`,
  a unicode name and a non-UTF-8 (Latin-1 byte) name;
* bad files: a corrupt JPEG (opens, fails to decode), a truncated PNG, a zero-byte `.jpg`, a text file
  named `.jpg`, a 30000x30000 decompression bomb, a 12000x12000 one (between Pillow's warning and error
  limits), a mode-000 file (readable by root, so good when running as root), a file symlink loop and a
  dangling symlink;
* a folder symlink loop (`loop -> ..`), which must be walked once and add nothing.

`make_hostile_pairs` writes a TSV with a BOM, CRLF and LF endings, and one fault per row.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

LATIN1_NAME = b"caf\xe9 latin-1.png"  # not valid UTF-8: Python sees "caf\udce9 latin-1.png"
UNICODE_NAME = "猫 café 🐱 ünïcødé.png"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class Planted:
    """One planted file: its name in the folder, what it is, and its expected outcome."""

    name: str  # path relative to the folder, as Python's os functions spell it (surrogate-escaped)
    what: str
    good: bool
    reason: str = ""  # a fragment of the skip reason, for bad files

    def path(self, folder: Path) -> str:
        return os.path.join(os.fspath(folder), self.name)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit PNG of `width` x `height` black pixels: a few KB on disk, however large."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def two_tone(size: tuple[int, int] = (48, 48), a=(200, 20, 20), b=(20, 20, 200)) -> Image.Image:
    """Left half `a`, right half `b`: orientation shows in the embedding."""
    image = Image.new("RGB", size, b)
    image.paste(Image.new("RGB", (size[0] // 2, size[1]), a), (0, 0))
    return image


def corrupt_jpeg() -> bytes:
    """A JPEG whose header opens but whose Huffman table is garbage: decoding it fails."""
    import io

    noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    dht = data.find(b"\xff\xc4")
    data[dht + 5:dht + 21] = bytes([255] * 16)  # impossible code counts
    return bytes(data)


def huge_jpeg(path: Path, size: tuple[int, int] = (6000, 4000)) -> None:
    """A camera-sized (24 MP) JPEG: a smooth gradient, so it is quick to write and a few MB at most."""
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    pixels = np.stack([np.broadcast_to(x, (h, w)), np.broadcast_to(y, (h, w)), np.full((h, w), 90, np.float32)], -1)
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=80)


def make_hostile_folder(folder: Path) -> list[Planted]:
    """Plant every hostile file under `folder`; returns what each one is and should become."""
    folder.mkdir(parents=True, exist_ok=True)
    planted: list[Planted] = []

    def good(name: str, what: str) -> None:
        planted.append(Planted(name, what, True))

    def bad(name: str, what: str, reason: str) -> None:
        planted.append(Planted(name, what, False, reason))

    for name, rgb in {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220)}.items():
        Image.new("RGB", (40, 40), rgb).save(folder / f"{name}.png")
        good(f"{name}.png", f"plain {name} PNG")

    upright = two_tone()
    upright.save(folder / "upright.jpg", quality=100)
    good("upright.jpg", "upright twin of the EXIF-rotated JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, "rotate 90 degrees clockwise to display"
    upright.transpose(Image.Transpose.ROTATE_90).save(folder / "exif_rotated.jpg", exif=exif, quality=100)
    good("exif_rotated.jpg", "EXIF-rotated JPEG (orientation 6)")

    Image.new("CMYK", (40, 40), (0, 200, 200, 0)).save(folder / "cmyk.jpg", quality=95)
    good("cmyk.jpg", "CMYK JPEG")
    ramp = (np.linspace(0, 65535, 40 * 40).reshape(40, 40)).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "sixteen_bit.png")  # mode I;16
    good("sixteen_bit.png", "16-bit greyscale PNG")
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (0, 0, 20, 40))
    palette.save(folder / "palette_transparent.png", transparency=0)
    good("palette_transparent.png", "palette PNG with a transparent colour")
    frames = [Image.new("RGB", (40, 40), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    good("animated.gif", "animated GIF (3 frames)")
    huge_jpeg(folder / "huge_camera.jpg")
    good("huge_camera.jpg", "6000x4000 camera-size JPEG")
    Image.new("RGB", (40, 40), (250, 140, 20)).save(folder / "png_named.jpg", format="PNG")
    good("png_named.jpg", "a PNG named .jpg")
    Image.new("RGB", (40, 40), (140, 40, 160)).save(folder / "UPPER.JPEG")
    good("UPPER.JPEG", "upper-case .JPEG extension")
    Image.new("RGB", (40, 40), (10, 10, 10)).save(folder / UNICODE_NAME)
    good(UNICODE_NAME, "unicode file name")
    latin1 = os.fsdecode(LATIN1_NAME)
    Image.new("RGB", (40, 40), (245, 245, 245)).save(os.path.join(os.fsencode(folder), LATIN1_NAME), format="PNG")
    good(latin1, "non-UTF-8 (Latin-1 byte) file name")
    locked = folder / "mode_000.png"
    Image.new("RGB", (40, 40), (240, 220, 30)).save(locked)
    locked.chmod(0)
    if IS_ROOT:  # root reads mode-000 files: the file is good there
        good("mode_000.png", "unreadable file (mode 000; readable because the tests run as root)")
    else:
        bad("mode_000.png", "unreadable file (mode 000)", "Permission denied")

    (folder / "corrupt.jpg").write_bytes(corrupt_jpeg())
    bad("corrupt.jpg", "corrupt JPEG (garbage Huffman table)", "broken data stream")
    noisy = Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8))
    noisy.save(folder / "whole.tmp.png")
    data = (folder / "whole.tmp.png").read_bytes()
    (folder / "whole.tmp.png").unlink()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    bad("truncated.png", "truncated PNG (first half)", "truncated")
    (folder / "zero_bytes.jpg").write_bytes(b"")
    bad("zero_bytes.jpg", "zero-byte file", "cannot identify image file")
    (folder / "text_file.jpg").write_text("this is a shopping list, not a photo\n", encoding="utf-8")
    bad("text_file.jpg", "text file named .jpg", "cannot identify image file")
    (folder / "bomb_30000.png").write_bytes(bomb_png(30000, 30000))
    bad("bomb_30000.png", "decompression bomb, 30000x30000 PNG", "decompression bomb")
    (folder / "bomb_12000.png").write_bytes(bomb_png(12000, 12000))
    bad("bomb_12000.png", "decompression bomb, 12000x12000 PNG (144 MP: Pillow only warns)", "decompression bomb")
    (folder / "self_loop.jpg").symlink_to("self_loop.jpg")
    bad("self_loop.jpg", "symlink loop (a file link to itself)", "Too many levels of symbolic links")
    (folder / "dangling.png").symlink_to("no_such_target.png")
    bad("dangling.png", "dangling symlink", "No such file or directory")
    (folder / "sub").mkdir()
    (folder / "sub" / "loop").symlink_to("..", target_is_directory=True)  # folder loop: walked once
    (folder / "readme.md").write_text("not an image name: ignored, not skipped\n", encoding="utf-8")
    return planted


# ------------------------------------------------------------------------------------------ pairs


@dataclass(frozen=True)
class Row:
    """One planted row of a pairs file: its 1-based line number and expected outcome."""

    line: int
    what: str
    reason: str = ""  # fragment of the skip reason; empty for a good row


def make_hostile_pairs(folder: Path, long_words: int = 5000) -> tuple[Path, list[Row], dict[str, list[str]]]:
    """A hostile TSV beside an `img/` folder. Returns (file, rows, {image key: captions expected})."""
    img = folder / "img"
    img.mkdir(parents=True, exist_ok=True)
    for name, rgb in {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "grey": (128, 128, 128),
                      "white": (250, 250, 250)}.items():
        Image.new("RGB", (24, 24), rgb).save(img / f"{name}.png")
    (img / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    long_caption = " ".join(["word"] * long_words)
    lines: list[tuple[bytes, str, str]] = [  # (raw line without newline, what, reason)
        ("\ufeffimage\tcaption".encode(), "header after a UTF-8 BOM", "header"),
        (b"img/red.png\ta red square", "good row (CRLF ending)", ""),
        (b"img/green.png", "missing column", "expected 2 columns, found 1"),
        (b"img/blue.png\ta blue\tsquare", "extra column (stray tab)", "expected 2 columns, found 3"),
        (b"img/blue.png\ta blue square\t", "trailing stray tab", "expected 2 columns, found 3"),
        (b"img/blue.png\t\xff\xfe caf\xe9", "invalid UTF-8 bytes", "invalid UTF-8"),
        (b"img/green.png\t   ", "empty caption", "empty caption"),
        (b"\ta caption without an image", "empty image path", "empty image path"),
        (b"img/missing.png\tnothing here", "path to a missing file", "image not found"),
        (b"img/red.png\ta red square", "duplicate row", "duplicate of row 2"),
        (b"img/broken.png\ta broken file", "corrupt image", "cannot read image"),
        (b"https://example.com/x.jpg\ta web image", "URL instead of a path", "is a URL"),
        (b'img/green.png\t"unterminated quote and a green square', "stray quote: unterminated", ""),
        (b'img/grey.png\t"Stop" sign on a grey square', "stray quotes: quoted word first", ""),
        (b'img/blue.png\ta "blue" square', "quotes inside a caption", ""),
        (b"img/white.png\t" + long_caption.encode(), "very long caption (5000 words)", ""),
        (b"   ", "blank line (whitespace only)", "blank"),
        (b"img/green.png\tgreen\x00square", "NUL byte in a caption", ""),
    ]
    raw = b""
    rows = []
    for number, (line, what, reason) in enumerate(lines, start=1):
        raw += line + (b"\r\n" if number % 2 == 0 else b"\n")
        rows.append(Row(number, what, reason))
    path = folder / "pairs.tsv"
    path.write_bytes(raw)
    expected = {
        "img/red.png": ["a red square"],
        "img/green.png": ['"unterminated quote and a green square', "green square"],
        "img/grey.png": ['"Stop" sign on a grey square'],
        "img/blue.png": ['a "blue" square'],
        "img/white.png": [long_caption],
    }
    return path, rows, expected
