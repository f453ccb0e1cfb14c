"""What `--image-cache` saves a training run's input pipeline, on one CPU core.

    python benchmarks/bench_image_cache.py [--n 40] [--size 2000x1500] [--crop 224]

Generates `--n` JPEGs (gpu_check's generator) in a temporary folder, builds the image cache once, then
runs one epoch of training items (seeded random resized crop, to tensor, normalised) from the original
files and from the cache: items/s of each, the build's images/s and the cache's bytes per image. The
model is not involved: this is the decoding work a training step waits for. A script, not a timed test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--size", default="2000x1500", help="WIDTHxHEIGHT of the generated JPEGs.")
    parser.add_argument("--crop", type=int, default=224, help="Training crop size.")
    args = parser.parse_args()

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_check import _make_images, parse_size

    from tinymvlm.data.pairs import load_image_folder
    from tinymvlm.data.transform import build_transforms
    from tinymvlm.training import image_cache
    from tinymvlm.training.batches import PairDataset

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        _make_images(folder, range(args.n), parse_size(args.size))
        pairs = load_image_folder(folder)
        config = dict(input_size=(3, args.crop, args.crop), interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3,
                      crop_pct=0.875, crop_mode="center")
        transform = build_transforms(config, training=True)
        start = time.perf_counter()
        cache = image_cache.for_run(pairs, args.crop, Path(tmp), 0, True)
        build = time.perf_counter() - start
        tokens = [[[1]]] * len(pairs)
        rates = {}
        for name, dataset in (("original files", PairDataset(pairs, transform, tokens)),
                              ("image cache", PairDataset(pairs, image_cache.CachedCrop(transform), tokens, cache))):
            dataset.set_epoch(0, 1)
            start = time.perf_counter()
            for i in range(len(dataset)):
                dataset[i]
            rates[name] = len(dataset) / (time.perf_counter() - start)
            print(f"{name:<15} {rates[name]:8.1f} training items/s (one core)")
        size = (Path(tmp) / image_cache.DATA).stat().st_size / len(pairs)
        print(f"{'ratio':<15} {rates['image cache'] / rates['original files']:8.1f}x")
        print(f"cache build     {len(pairs) / build:8.1f} images/s, {size / 1e6:.2f} MB an image")


if __name__ == "__main__":
    main()
