"""One `tmv index` process against the same collection split into two `--shard k/2` processes and merged.

    python benchmarks/bench_shard.py [--n 200] [--size 640x480] [--model builtin]

Generates `--n` photo-like JPEGs (gpu_check's generator), then, each as its own `tmv index` process on
the CPU: the whole folder in one process; shards 0/2 and 1/2 started together; `tmv index --merge`.
Printed: the images/s each process reports while embedding, the end-to-end wall seconds, the merge's
seconds and the load average (the machine may be shared). Reproduces docs/distributed.md's figures
(2 idle cores, built-in v3: one process 33.5 images/s, two shards about 16 each, 15.2 s end to end both
ways; the merge command 0.5 s).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RATE = re.compile(r"\(([\d.]+) images/s\)")


def _tmv(*args: str) -> list[str]:
    return [sys.executable, "-m", "tinymvlm.cli", "index", *args]


def _rate(stderr: str) -> float:
    found = RATE.findall(stderr)
    if not found:
        raise SystemExit(f"no images/s in tmv index's output:\n{stderr[-2000:]}")
    return float(found[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the generated JPEGs.")
    parser.add_argument("--model", default="builtin")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_check import _make_images, parse_size

    env = {**os.environ, "COLUMNS": "200"}
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        _make_images(images, range(args.n), parse_size(args.size))
        common = ["--model", args.model, "--device", "cpu"]
        start = time.perf_counter()
        one = subprocess.run(_tmv(str(images), "--index", f"{tmp}/one", *common), capture_output=True, text=True,
                             env=env, check=True)
        one_wall = time.perf_counter() - start
        print(f"one process:      {_rate(one.stderr):6.1f} images/s embedding, {one_wall:5.1f} s end to end", flush=True)
        start = time.perf_counter()
        shards = [subprocess.Popen(_tmv(str(images), "--index", f"{tmp}/sharded", "--shard", f"{k}/2", *common),
                                   stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
                  for k in range(2)]
        outputs = [p.communicate()[1] for p in shards]
        shard_wall = time.perf_counter() - start
        if any(p.returncode for p in shards):
            raise SystemExit("a shard failed:\n" + "\n".join(o[-2000:] for o in outputs))
        rates = ", ".join(f"{_rate(o):.1f}" for o in outputs)
        print(f"two shards:       {rates} images/s embedding, {shard_wall:5.1f} s end to end", flush=True)
        start = time.perf_counter()
        subprocess.run(_tmv("--merge", "--index", f"{tmp}/sharded"), capture_output=True, text=True, env=env,
                       check=True)
        print(f"merge:            {time.perf_counter() - start:5.1f} s (the command, start-up included)")
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
