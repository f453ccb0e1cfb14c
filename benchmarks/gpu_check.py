"""GPU check: training steps/s and indexing images/s on a CUDA machine, offline, from scratch.

    python benchmarks/gpu_check.py --out DIR --text-config MINILM_DIR [--images 2048] [--batch-size 128]

Needs no internet, no packaged weights and no `datasets`: it generates photo-like JPEGs with captions
under DIR, builds the towers untrained (`--no-pretrained`: timm's tf_efficientnet_lite0, and the text
encoder described by the config.json + tokenizer files in --text-config), then

1. `tmv train` in fp32 and in bf16 (AMP), both towers trained, no validation: steps/s and pairs/s of
   the epochs after the first (warm), and peak GPU memory (torch.cuda.max_memory_allocated of the
   training process);
2. with 2 or more GPUs, the same bf16 run as `tmv train --nproc 2` (DDP over NCCL): global pairs/s;
3. `tmv index` of the image folder with the bf16 model, in fp32 and bf16: the images/s it reports
   for its embedding phase, and end to end (start-up, imports, FAISS included).

Prints a table and writes DIR/gpu_check.json. `--device cpu` with small sizes smoke-tests the script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

COLOURS = {"red": (210, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 210), "yellow": (235, 210, 40),
           "black": (20, 20, 20), "white": (240, 240, 240), "purple": (130, 50, 160), "orange": (245, 140, 30)}
SHAPES = ("circle", "square", "triangle")
INDEX_RATE = re.compile(r"\(([\d.]+) images/s\)")  # the summary line of `tmv index`

# Runs the real CLI in a fresh process and then records that process's peak GPU memory.
_TRAIN_WITH_PEAK = """
import json, sys, torch
from tinymvlm.cli.main import cli
try:
    cli(sys.argv[2:], prog_name="tmv", standalone_mode=False)
finally:
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    open(sys.argv[1], "w").write(json.dumps({"peak_bytes": peak}))
"""


def make_images(folder: Path, n: int, size: int) -> None:
    """Noisy gradient backgrounds with one coloured shape, and a caption naming both."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = list(COLOURS)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        back, fore = rng.choice(len(names), 2, replace=False)
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        shade = 0.75 + 0.25 * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
        pixels = np.asarray(COLOURS[names[back]], dtype=np.float32) * shade + rng.normal(0, 8, (size, size, 1))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        x0, y0 = rng.uniform(0, size * 0.5, 2)
        r = rng.uniform(size * 0.2, size * 0.45)
        box, fill = [x0, y0, x0 + r, y0 + r], COLOURS[names[fore]]
        draw = ImageDraw.Draw(image)
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(x0, y0 + r), (x0 + r, y0 + r), (x0 + r / 2, y0)], fill=fill)
        image.save(folder / f"img_{i:05d}.jpg", quality=90)
        (folder / f"img_{i:05d}.txt").write_text(f"a {names[fore]} {shape} on a {names[back]} background\n",
                                                 encoding="utf-8")


def run(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run a command to completion, echoing its output; returns (seconds, output). Stops the check
    on failure."""
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        sys.exit(f"gpu_check: command failed with exit status {result.returncode}")
    return time.perf_counter() - start, result.stdout


def epoch_records(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if r["type"] == "epoch"]


def warm(epochs: list[dict]) -> dict:
    """Steps/s and pairs/s of the epochs after the first (which pays for cuDNN tuning, allocations)."""
    measured = epochs[1:] or epochs
    seconds = float(np.mean([e["epoch_seconds"] for e in measured]))
    return {"steps_per_s": epochs[0]["step"] / seconds, "pairs_per_s": float(np.mean([e["pairs_per_s"] for e in measured])),
            "final_loss": epochs[-1]["train_loss"]}


def train_flags(args: argparse.Namespace, data: Path, out: Path, precision: str) -> list[str]:
    return ["train", "--data", str(data), "--val-fraction", "0", "--image-model", "tf_efficientnet_lite0",
            "--text-model", str(args.text_config), "--no-pretrained", "--batch-size", str(args.batch_size),
            "--epochs", str(args.epochs), "--warmup-steps", "0", "--precision", precision, "--workers",
            str(args.workers), "--device", args.device, "--out-dir", str(out)]


def train_check(args: argparse.Namespace, data: Path, out: Path, precision: str, env: dict[str, str]) -> dict:
    run_dir, peak_file = out / f"train_{precision}", out / f"train_{precision}.peak.json"
    shutil.rmtree(run_dir, ignore_errors=True)
    wall, _ = run([sys.executable, "-c", _TRAIN_WITH_PEAK, str(peak_file), *train_flags(args, data, run_dir, precision)], env)
    return {**warm(epoch_records(run_dir)), "peak_gpu_gib": json.loads(peak_file.read_text())["peak_bytes"] / 2**30,
            "wall_s": wall}


def ddp_check(args: argparse.Namespace, data: Path, out: Path, env: dict[str, str]) -> dict:
    run_dir = out / "train_bf16_ddp2"
    shutil.rmtree(run_dir, ignore_errors=True)
    wall, _ = run([sys.executable, "-m", "tinymvlm.cli", *train_flags(args, data, run_dir, "bf16"), "--nproc", "2"], env)
    return {**warm(epoch_records(run_dir)), "wall_s": wall}


def index_check(args: argparse.Namespace, data: Path, checkpoint: Path, out: Path, precision: str,
                env: dict[str, str]) -> dict:
    target = out / f"index_{precision}"
    shutil.rmtree(target, ignore_errors=True)
    wall, output = run([sys.executable, "-m", "tinymvlm.cli", "index", str(data), "--checkpoint", str(checkpoint),
                        "--index", str(target), "--device", args.device, "--precision", precision,
                        "--batch-size", str(args.batch_size)], env)
    rates = INDEX_RATE.findall(output)
    return {"images_per_s": float(rates[-1]) if rates else None, "end_to_end_images_per_s": args.images / wall,
            "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for images, runs, indexes and gpu_check.json.")
    parser.add_argument("--text-config", type=Path, required=True,
                        help="Folder with the text encoder's config.json and tokenizer files (no weights needed).")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--size", type=int, default=320, help="Side of the generated JPEGs.")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="The first is warm-up; the others are measured.")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test of this script.")
    args = parser.parse_args()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU here (use --device cpu only to smoke-test the script)")
    if not (args.text_config / "config.json").is_file():
        sys.exit(f"gpu_check: {args.text_config} has no config.json")
    if args.images < 2 * args.batch_size:
        sys.exit("gpu_check: --images must be at least twice --batch-size")
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "images"
    if len(list(data.glob("*.jpg"))) != args.images:
        shutil.rmtree(data, ignore_errors=True)
        make_images(data, args.images, args.size)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TMV_RUNS": str(args.out / "runs")}

    report = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "gpus": torch.cuda.device_count(), "images": args.images,
              "image_size": args.size, "batch_size": args.batch_size, "train": {}, "index": {}}
    for precision in ("fp32", "bf16"):
        report["train"][precision] = train_check(args, data, args.out, precision, env)
    if args.device.startswith("cuda") and torch.cuda.device_count() >= 2:
        report["train"]["bf16_ddp2"] = ddp_check(args, data, args.out, env)
    checkpoint = args.out / "train_bf16" / "latest.safetensors"
    for precision in ("fp32", "bf16"):
        report["index"][precision] = index_check(args, data, checkpoint, args.out, precision, env)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    print(f"\n{report['device']}, torch {report['torch']}, {args.images} images at {args.size}px, batch {args.batch_size}")
    print(f"{'train':<12}{'steps/s':>10}{'pairs/s':>10}{'peak GiB':>10}")
    for name, row in report["train"].items():
        steps = f"{row['steps_per_s']:>10.2f}"
        peak = f"{row['peak_gpu_gib']:>10.2f}" if "peak_gpu_gib" in row else f"{'':>10}"
        print(f"{name:<12}{steps}{row['pairs_per_s']:>10.1f}{peak}")
    print(f"{'index':<12}{'images/s':>10}{'e2e/s':>10}")
    for name, row in report["index"].items():
        rate = f"{row['images_per_s']:>10.1f}" if row["images_per_s"] is not None else f"{'?':>10}"
        print(f"{name:<12}{rate}{row['end_to_end_images_per_s']:>10.1f}")
    print(f"\nwritten: {args.out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
