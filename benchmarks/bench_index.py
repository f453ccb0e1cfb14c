"""Indexing throughput on real-size JPEGs, lever by lever, beside the image tower's pure forward rate.

    python benchmarks/bench_index.py --checkpoint builtin [--n 400] [--size 2000x1500] [--only 1,8]

Generates `--n` photo-like JPEGs (smooth gradients, shapes and sensor-like noise, so they compress like
photos: several hundred KB each) once into --images (reused later), then in one process measures
decoding and hashing on one core, and for each lever (a configuration of the embedding pipeline):

1. forward only: the image tower on ready pixel tensors, same batch size and precision, all cores;
2. `Index.add` of the folder into a fresh index: its embedding-phase images/s (what `tmv index`
   reports), CPU time per image, the end-to-end wall time (scan, hashing, FAISS), and the smallest
   cosine of any image's vector against the first lever's ("before": today's pipeline until now).

Ratio = indexing / forward images/s, measured back to back. A script, not a timed test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
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


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (DataLoader workers), all cores together."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def forward_throughput(model, batch_size: int, precision: str, seconds: float = 20.0) -> tuple[float, float]:
    """(images/s, CPU ms per image)."""
    import torch

    from tinymvlm.inference.runtime import autocast

    size = model.data_config["input_size"]
    pixels = torch.randn(batch_size, *size).contiguous(memory_format=torch.channels_last)
    done, start = 0, None
    with torch.inference_mode():
        for step in range(10_000):
            if step == 1:
                start, done, cpu = time.perf_counter(), 0, cpu_seconds()  # the first batch warms up
            with autocast("cpu", precision):
                model.encode_image(pixels)
            done += batch_size
            if start is not None and time.perf_counter() - start > seconds:
                break
    return done / (time.perf_counter() - start), (cpu_seconds() - cpu) / done * 1e3


def decode_throughput(paths: list[Path], draft: tuple[int, int] | None) -> float:
    from tinymvlm.data.transform import load_image

    start = time.perf_counter()
    for path in paths:
        load_image(path, draft)
    return len(paths) / (time.perf_counter() - start)


def hash_throughput(paths: list[Path]) -> float:
    from tinymvlm.index.scan import file_hash

    start = time.perf_counter()
    for path in paths:
        file_hash(str(path))
    return len(paths) / (time.perf_counter() - start)


@dataclass
class Lever:
    """One configuration of `tmv index`'s embedding pipeline; None settings are the runtime's auto."""

    name: str
    workers: int | None = None
    model_threads: int | None = None
    batch_size: int | None = None
    split_transform: bool = True  # EvalTransform's uint8 crop-region resize; False: timm's whole transform


def levers(cores: int, batch_size: int) -> list[Lever]:
    return [
        Lever(f"before: timm transform, {cores} worker processes, {cores} torch threads", cores, cores,
              split_transform=False),
        Lever(f"crop-region uint8 transform, {cores} workers, {cores} threads", cores, cores),
        Lever("crop-region uint8 transform, 1 worker, all threads", 1, cores),
        Lever("crop-region uint8 transform, 1 worker, cores - 1 threads", 1, max(1, cores - 1)),
        Lever("timm transform, decode threads between forward passes", split_transform=False),
        Lever(f"batch {batch_size // 2}, decode threads between forward passes", batch_size=batch_size // 2),
        Lever(f"batch {batch_size * 2}, decode threads between forward passes", batch_size=batch_size * 2),
        Lever("auto (`tmv index`): uint8 transform, decode threads between forward passes"),
    ]


def index_once(folder: Path, checkpoint: Path, runtime, lever: Lever) -> tuple[float, float, float, dict[str, np.ndarray]]:
    """(embedding images/s, embedding CPU ms per image, end-to-end wall s, {path: vector}) of `Index.add`
    into a fresh index."""
    from tinymvlm.index import Index
    from tinymvlm.index.update import Progress

    import tinymvlm.inference.embed as embed
    from tinymvlm.data.transform import EvalTransform

    class EmbeddingCpu(Progress):  # CPU time of the embedding phase alone
        def embedding(self, total: int, what: str) -> None:
            self.start, self.total = cpu_seconds(), total

        def finished_embedding(self) -> None:
            self.ms = (cpu_seconds() - self.start) / self.total * 1e3

    class WholeTransform(EvalTransform):  # the transform before the split, for the lever table only
        def __init__(self, data_config: dict) -> None:
            super().__init__(data_config)
            self.split = False

    store = Path(tempfile.mkdtemp(prefix="tmv-bench-index-"))
    saved = embed.EvalTransform
    try:
        embed.EvalTransform = EvalTransform if lever.split_transform else WholeTransform
        with Index(store, checkpoint=checkpoint) as idx:
            start = time.perf_counter()
            cpu = EmbeddingCpu()
            report = idx.add([folder], runtime=runtime, progress=cpu)
            wall = time.perf_counter() - start
            catalog = idx.searcher().catalog
            ids = catalog.ids("images")
            labels = catalog.labels("images", ids)
            vectors = catalog.vectors("images", ids, idx.searcher().manifest["embed_dim"])
        return report.images_per_s, cpu.ms, wall, {Path(labels[i]).name: v for i, v in zip(ids, vectors)}
    finally:
        embed.EvalTransform = saved
        shutil.rmtree(store, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint or run folder (default: the latest run's best)")
    parser.add_argument("--images", default=os.path.join(tempfile.gettempdir(), "tmv-bench-jpegs"))
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--size", default="2000x1500")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="auto: bf16 where the CPU runs it natively, else fp32 (as `tmv index`)")
    parser.add_argument("--forward-seconds", type=float, default=8.0, help="forward-only measure before each lever")
    parser.add_argument("--only", help="comma-separated lever numbers to run (default: all)")
    args = parser.parse_args()

    import torch

    from tinymvlm.inference.embed import draft_size
    from tinymvlm.inference.runtime import Runtime
    from tinymvlm.models.checkpoint import load_checkpoint
    from tinymvlm.models.resolve import resolve_model

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
    cores = Runtime("cpu").cpu_cores()
    print(f"machine: {cores} CPU cores, torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, load average {os.getloadavg()[0]:.2f} at the start")

    checkpoint = resolve_model(args.checkpoint)
    model, _, meta = load_checkpoint(checkpoint)
    model.eval()
    base = Runtime("cpu", args.precision, args.batch_size).resolve()
    print(f"model: {meta['image_arch']} at {model.data_config['input_size'][1:]}, embed dim {model.embed_dim} "
          f"({checkpoint}); precision {base.precision}")

    sample = paths[: min(40, len(paths))]
    full, draft = decode_throughput(sample, None), decode_throughput(sample, draft_size(model.data_config))
    print(f"one core: decode full {full:.1f} images/s, draft mode {draft:.1f} images/s ({draft / full:.1f}x); "
          f"BLAKE2b hashing {hash_throughput(sample):.0f} files/s (before embedding, not in its rate)")

    chosen = levers(cores, args.batch_size)
    if args.only:
        chosen = [chosen[int(i) - 1] for i in args.only.split(",")]
    reference: dict[str, np.ndarray] | None = None
    print("\nCPU ms/img: CPU time per image, all cores together; CPU ratio = forward's / indexing's, the ratio\n"
          "idle cores would show if both kept every core busy (wall-clock rates move with other jobs' load).")
    print("\n| lever | forward img/s | index img/s | ratio | forward CPU ms/img | index CPU ms/img | CPU ratio "
          "| min cosine | end to end s | load | kept |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for lever in chosen:
        runtime = replace(base, workers=lever.workers, model_threads_cpu=lever.model_threads,
                          batch_size=lever.batch_size or base.batch_size)
        torch.set_num_threads(cores)
        forward, forward_ms = forward_throughput(model, runtime.batch_size, base.precision, args.forward_seconds)
        rate, index_ms, wall, vectors = index_once(folder, checkpoint, runtime, lever)
        if reference is None:
            reference = vectors
        cosine = min(float(np.dot(vectors[k], reference[k])) for k in reference)
        kept = lever.split_transform and lever.workers is None and lever.model_threads is None and \
            runtime.batch_size == base.batch_size
        print(f"| {lever.name} | {forward:.1f} | {rate:.1f} | {rate / forward:.2f} | {forward_ms:.1f} | {index_ms:.1f} | "
              f"{forward_ms / index_ms:.2f} | {cosine:.5f} | {wall:.1f} | "
              f"{os.getloadavg()[0]:.2f} | {'yes' if kept else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
