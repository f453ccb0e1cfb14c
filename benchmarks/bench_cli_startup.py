"""Cold wall time of `tmv --help`, of a text `tmv search` (ONNX text encoder, no torch) and of the same
search on torch, beside `python -c "import torch"`, each in a new process, interleaved round by round.

    python benchmarks/bench_cli_startup.py --checkpoint runs/tux [--runs 5]

Builds a small index (a few generated images and captions) with the given checkpoint in a temporary
user cache, so indexing writes the model's ONNX text encoder there (tinymvlm/inference/text_onnx.py). Then each
round runs every command once as a fresh process; printed are the median and minimum wall times, the
load average (the machine may be shared), and whether the ONNX and torch searches return the same hits
(same ids in the same order, scores within 1e-4). The torch search is the same command with a user
cache that cannot exist, so it finds no encoder (and cannot write one). Also prints where the ONNX
search's time goes, measured in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOLERANCE = 1e-4


def timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall time, CPU time (user + system: what a busy machine hardly changes) and stdout of one run."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.stdout


def summary(name: str, walls: list[float], cpus: list[float]) -> str:
    return (f"{name:<28} wall median {statistics.median(walls):.2f} s, min {min(walls):.2f} s; "
            f"CPU median {statistics.median(cpus):.2f} s ({len(walls)} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint or run folder (default: the latest run's best)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--query", default="a red square")
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
        (work / "not-a-folder").write_text("")
        env = dict(os.environ, XDG_CACHE_HOME=str(work / "cache"), TOKENIZERS_PARALLELISM="false")
        torch_env = dict(env, XDG_CACHE_HOME=str(work / "not-a-folder" / "cache"))
        index = work / "index"
        ckpt = ["--checkpoint", args.checkpoint] if args.checkpoint else []
        start = time.perf_counter()
        subprocess.run(base + ["index", str(images), "--index", str(index), "--captions", str(work / "captions.txt"),
                               "--workers", "0"] + ckpt, check=True, stdout=subprocess.DEVNULL, env=env)
        print(f"tmv index (embedding, then writing the ONNX text encoder): {time.perf_counter() - start:.1f} s; "
              f"encoder files: {[p.name for p in (work / 'cache').rglob('*.onnx')]}")

        search = base + ["search", args.query, "--index", str(index), "-k", "4", "--json"]
        commands = {"tmv --help": (base + ["--help"], env),
                    'python -c "import torch"': ([sys.executable, "-c", "import torch"], env),
                    "tmv search (ONNX)": (search, env),
                    "tmv search (torch)": (search, torch_env)}
        for cmd, cmd_env in commands.values():  # page in the files once, as a user's second call finds them
            timed(cmd, cmd_env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        outputs: dict[str, set[str]] = {name: set() for name in commands}
        loads = []
        for _ in range(args.runs):
            loads.append(os.getloadavg()[0])
            for name, (cmd, cmd_env) in commands.items():
                seconds, cpu_seconds, stdout = timed(cmd, cmd_env)
                times[name].append(seconds)
                cpu[name].append(cpu_seconds)
                outputs[name].add(stdout)
        for name in commands:
            print(summary(name, times[name], cpu[name]))
        print(f"load average (1 min) at each round: {', '.join(f'{x:.1f}' for x in loads)} on {os.cpu_count()} cores")

        fast = [json.loads(line) for line in outputs["tmv search (ONNX)"].pop().splitlines()]
        slow = [json.loads(line) for line in outputs["tmv search (torch)"].pop().splitlines()]
        same = ([h["id"] for h in fast] == [h["id"] for h in slow]
                and max(abs(a["score"] - b["score"]) for a, b in zip(fast, slow)) <= TOLERANCE)
        print(f"same hits, ONNX and torch: {same} ({[(h['id'], h['score']) for h in fast]})")

        code = f"""
import time
t0 = time.perf_counter()
import faiss, numpy, onnxruntime, tokenizers
from tinymvlm.index import Index
from tinymvlm.index.query_syntax import parse_query
from tinymvlm.inference.runtime import Runtime
t1 = time.perf_counter()
idx = Index({str(index)!r}, runtime=Runtime.for_queries())
idx.text_encoder()
t2 = time.perf_counter()
vec = idx.embed_query(parse_query({args.query!r}))
t3 = time.perf_counter()
idx.search_vector(vec, 4)
t4 = time.perf_counter()
import sys
print(f"  in one process: imports {{t1 - t0:.2f}} s, checkpoint metadata + ONNX session {{t2 - t1:.2f}} s, "
      f"query embedding {{(t3 - t2) * 1000:.1f}} ms, open index + search {{(t4 - t3) * 1000:.1f}} ms; "
      f"torch imported: {{'torch' in sys.modules}}")
"""
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
