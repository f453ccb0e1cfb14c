"""Cold wall time of `tmv --help` and of one `tmv search` in a new process.

    python benchmarks/bench_cli_startup.py --checkpoint /tmp/run1 [--runs 5]

Builds a small index (a few generated images and captions) with the given checkpoint, then runs each
command `--runs` times as a fresh process and prints the median and the minimum wall time. `tmv --help`
must not import torch, FAISS or numpy (the CLI imports them inside the commands that need them); a search
pays for importing torch, loading the checkpoint and embedding one query. Also prints where a search's
time goes (imports, model load, query, FAISS) measured in one process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(cmd: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint or run folder (default: the latest run's best)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    tmv = shutil.which("tmv")
    base = [tmv] if tmv else [sys.executable, "-m", "tinymvlm.cli"]
    work = Path(tempfile.mkdtemp(prefix="tmv-bench-cli-"))
    try:
        from PIL import Image

        images = work / "images"
        images.mkdir()
        for i, rgb in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (240, 220, 30)]):
            Image.new("RGB", (320, 240), rgb).save(images / f"{i}.jpg")
        (work / "captions.txt").write_text("a red square\na green square\n", encoding="utf-8")
        index = work / "index"
        ckpt = ["--checkpoint", args.checkpoint] if args.checkpoint else []
        subprocess.run(base + ["index", str(images), "--index", str(index), "--captions", str(work / "captions.txt"),
                               "--workers", "0"] + ckpt, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        wall(base + ["--help"], 1)  # page in the files once, as a user's second call would find them
        help_times = wall(base + ["--help"], args.runs)
        search_times = wall(base + ["search", "a red square", "--index", str(index), "-k", "3"], args.runs)
        print(f"tmv --help: median {statistics.median(help_times):.3f} s, min {min(help_times):.3f} s ({args.runs} runs)")
        print(f"tmv search: median {statistics.median(search_times):.3f} s, min {min(search_times):.3f} s ({args.runs} runs)")

        code = f"""
import time
t0 = time.perf_counter()
import torch, faiss, numpy
from tinymvlm.index import Index
t1 = time.perf_counter()
idx = Index({str(index)!r})
idx.load_model()
t2 = time.perf_counter()
from tinymvlm.index.query import parse_query
vec = idx.embed_query(parse_query("a red square"))
t3 = time.perf_counter()
idx.search_vector(vec, 3)
t4 = time.perf_counter()
print(f"  in one process: imports {{t1 - t0:.2f}} s, checkpoint load {{t2 - t1:.2f}} s, "
      f"query embedding {{t3 - t2:.3f}} s, open index + search {{(t4 - t3) * 1000:.1f}} ms")
"""
        subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
