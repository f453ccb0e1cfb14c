"""What channels-last images and gradient checkpointing do to a training step of the image tower on CPU.

    python benchmarks/bench_train_levers.py [--n 48] [--batch-size 16] [--epochs 2] [--image-size 224]

Generates `--n` photo-like JPEGs (gpu_check's generator), then trains the packaged EfficientNet-Lite0
unlocked (the text tower locked, so the image tower's step is what is measured) through `train()`
three times: the default (channels-last), `--no-channels-last`, and `--grad-checkpointing`. Printed:
the pairs/s of the last epoch (the first warms up), the ratios to the default, and the load average
(the machine may be shared). Reproduces docs/training.md's 1.8x pairs/s (channels-last against
PyTorch's default layout) and 1.6x time per step (checkpointing), measured on 2 idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

LEVERS = {"default (channels-last)": {}, "--no-channels-last": {"channels_last": False},
          "--grad-checkpointing": {"grad_checkpointing": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2, help="The last is measured; the first warms up.")
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_check import _make_images

    from tinymvlm.models.config import ModelConfig
    from tinymvlm.training.config import TrainConfig
    from tinymvlm.training.trainer import train

    model = ModelConfig(image_model="efficientnet_lite0", text_model="minilm-l6", label_prior=False)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        _make_images(folder, range(args.n), (args.image_size + 96, args.image_size + 96))
        for name, lever in LEVERS.items():
            cfg = TrainConfig(data=str(folder), val_fraction=0.0, model=model, epochs=args.epochs,
                              batch_size=args.batch_size, lock_image=False, lock_text=True, workers=0,
                              precision="fp32", device="cpu", out_dir=str(Path(tmp) / name.strip("-")), **lever)
            run = train(cfg)
            records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            rates[name] = [r for r in records if r["type"] == "epoch"][-1]["pairs_per_s"]
            print(f"{name:<24} {rates[name]:7.2f} pairs/s", flush=True)
    base = rates["default (channels-last)"]
    print(f"channels-last against --no-channels-last: {base / rates['--no-channels-last']:.2f}x the pairs/s")
    print(f"--grad-checkpointing: {base / rates['--grad-checkpointing']:.2f}x the time per step")
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
