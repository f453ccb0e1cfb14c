"""Decoding speed by format, one core, as `tmv index` decodes (draft size = the model's 224 px input).

    python benchmarks/bench_formats.py [--size 3000x2000] [--n 5]

Writes one photo-like picture per format (bench_index's generator; the DNG through the tests' DNG
writer: a Bayer mosaic with, for the "previewed" one, a full-size JPEG preview as cameras embed) into a
temporary folder, then times `load_image(path, (224, 224))` on each, best of --n, and prints images/s and
the ratio to JPEG. A script, not a timed test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the tests' format writers
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_index import make_jpegs  # noqa: E402

from helpers.formats import write, write_dng  # noqa: E402

NAMES = ["photo.jpg", "photo.png", "photo.webp", "photo.tiff", "photo.jp2", "photo.ppm", "photo.heic",
         "photo.avif", "camera.dng", "previewed.dng"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="3000x2000")
    parser.add_argument("--n", type=int, default=5, help="timed decodes per format (the best counts)")
    args = parser.parse_args()
    from PIL import Image

    from tinymvlm.data.transform import load_image

    w, h = (int(v) for v in args.size.lower().split("x"))
    folder = Path(tempfile.mkdtemp(prefix="tmv-bench-formats-"))
    make_jpegs(folder / "src", 1, (w, h))
    picture = Image.open(next((folder / "src").glob("*.jpg"))).convert("RGB")
    for name in NAMES:
        if name == "previewed.dng":
            write_dng(folder / name, picture, preview=picture)
        else:
            write(folder / name, picture)
    print(f"one {w}x{h} photo-like picture per format, load average {os.getloadavg()[0]:.2f} at the start")
    print("| format | file MB | decoded size | images/s (one core) | vs JPEG |\n| --- | --- | --- | --- | --- |")
    jpeg_rate = None
    for name in NAMES:
        path = folder / name
        best = float("inf")
        for _ in range(args.n):
            start = time.perf_counter()
            image = load_image(path, (224, 224))
            best = min(best, time.perf_counter() - start)
        rate = 1 / best
        jpeg_rate = jpeg_rate or rate
        print(f"| {name} | {path.stat().st_size / 1e6:.2f} | {image.size[0]}x{image.size[1]} | {rate:.1f} | "
              f"{rate / jpeg_rate:.2f} |")


if __name__ == "__main__":
    main()
