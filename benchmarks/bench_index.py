"""Indexing throughput on real-size JPEGs, beside the image tower's pure forward throughput.

    python benchmarks/bench_index.py --checkpoint /tmp/run1 [--n 1000] [--size 2000x1500]

Generates `--n` photo-like JPEGs (smooth gradients, shapes and sensor-like noise, so they compress like
photos: a few hundred KB each) once into --images (reused later), then in one process measures:

1. forward only: the image tower on ready pixel tensors, same batch size and precision (no decoding);
2. decoding only: one image at a time, with and without JPEG draft mode (what draft mode saves);
3. `Index.add` on the folder into a fresh index: scan, hash, decode in DataLoader workers, embed,
   commit, FAISS; both the embedding-phase images/s and the end-to-end wall time.

The ratio forward/indexing shows the decoding and bookkeeping overhead. A script, not a timed test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def make_jpegs(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> None:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.jpg")))
    if have >= n:
        return
    rng = np.random.default_rng(seed + have)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(have, n):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = ((xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / (w + h) + 1) / 2
        base = c0 * t[..., None] + c1 * (1 - t[..., None])
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(50, 400)
            draw.ellipse([x0, y0, x0 + r, y0 + r * rng.uniform(0.5, 1.5)], fill=tuple(int(v) for v in rng.uniform(0, 255, 3)))
        noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 6, (h, w, 1)).astype(np.int16)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"photo_{i:05d}.jpg", quality=90)


def forward_throughput(model, batch_size: int, precision: str, seconds: float = 20.0) -> float:
    import torch

    from tinymvlm.runtime import autocast

    size = model.data_config["input_size"]
    pixels = torch.randn(batch_size, *size).contiguous(memory_format=torch.channels_last)
    done, start = 0, None
    with torch.inference_mode():
        for step in range(10_000):
            if step == 1:
                start, done = time.perf_counter(), 0  # the first batch warms up
            with autocast("cpu", precision):
                model.encode_image(pixels)
            done += batch_size
            if start is not None and time.perf_counter() - start > seconds:
                break
    return done / (time.perf_counter() - start)


def decode_throughput(paths: list[Path], draft: tuple[int, int] | None) -> float:
    from tinymvlm.transform import load_image

    start = time.perf_counter()
    for path in paths:
        load_image(path, draft)
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint or run folder (default: the latest run's best)")
    parser.add_argument("--images", default=os.path.join(tempfile.gettempdir(), "tmv-bench-jpegs"))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", default="2000x1500")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--forward-seconds", type=float, default=20.0)
    args = parser.parse_args()

    import torch

    from tinymvlm.checkpoint import load_checkpoint
    from tinymvlm.run import resolve_checkpoint
    from tinymvlm.embed import draft_size
    from tinymvlm.index import Index
    from tinymvlm.runtime import Runtime

    w, h = (int(v) for v in args.size.lower().split("x"))
    folder = Path(args.images)
    t0 = time.perf_counter()
    make_jpegs(folder, args.n, (w, h))
    paths = sorted(folder.glob("*.jpg"))[: args.n]
    if len(list(folder.glob("*.jpg"))) > args.n:  # index exactly n files
        folder = Path(tempfile.mkdtemp(prefix="tmv-bench-subset-"))
        for p in paths:
            os.symlink(p, folder / p.name)
    mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
    print(f"images: {len(paths)} JPEGs of {w}x{h}, {mb:.2f} MB average, in {folder} (ready in {time.perf_counter() - t0:.0f} s)")
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")

    checkpoint = resolve_checkpoint(args.checkpoint)
    model, _, meta = load_checkpoint(checkpoint)
    print(f"model: {meta['image_arch']} at {model.data_config['input_size'][1:]}, embed dim {model.embed_dim} ({checkpoint})")

    fwd = {p: forward_throughput(model, args.batch_size, p, args.forward_seconds) for p in ("fp32", "bf16")}
    print(f"forward only (batch {args.batch_size}): fp32 {fwd['fp32']:.1f} images/s, bf16 {fwd['bf16']:.1f} images/s")

    sample = paths[: min(40, len(paths))]
    full, draft = decode_throughput(sample, None), decode_throughput(sample, draft_size(model.data_config))
    print(f"decode only (1 process): full {full:.1f} images/s, draft mode {draft:.1f} images/s ({draft / full:.1f}x)")

    store = Path(tempfile.mkdtemp(prefix="tmv-bench-index-"))
    try:
        idx = Index(store, checkpoint=checkpoint)
        start = time.perf_counter()
        report = idx.add([folder], runtime=Runtime("cpu", args.precision, args.batch_size, args.workers))
        wall = time.perf_counter() - start
        assert report.embedded == len(paths), report
        ratio = fwd[args.precision] / report.images_per_s
        print(f"tmv index ({args.precision}, workers {args.workers if args.workers is not None else 'auto'}): "
              f"{report.images_per_s:.1f} images/s embedding, {len(paths) / wall:.1f} images/s end to end "
              f"({wall:.1f} s incl. scan, hashing, FAISS)")
        print(f"ratio forward-only / indexing: {ratio:.2f} (1.0 = decoding fully hidden behind the model)")
        start = time.perf_counter()
        again = idx.add([folder])
        print(f"re-run with nothing changed: {time.perf_counter() - start:.2f} s, {again.embedded} embedded")
    finally:
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
