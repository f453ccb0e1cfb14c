"""Load test of `tmv serve`: concurrent clients sending text queries to a real server on loopback.

    python benchmarks/bench_serve.py [--vectors 100000] [--queries 2000] [--clients 16] [--checkpoint FILE] [--torch]

The index holds --vectors synthetic image vectors (clustered unit vectors, as in bench_search.py),
written through the catalogue and FAISS sync exactly as `tmv index` writes them; the queries go
through the real model path (the text tower embeds every query). Without --checkpoint the model is the
packaged towers (MiniLM-L6 + EfficientNet-Lite0, untrained heads: realistic cost, meaningless ranking).
`tmv serve` runs as its own process on 127.0.0.1:0; --clients threads each keep one HTTP/1.1
connection and send queries until --queries are done or --max-seconds pass. Every query is different,
so the server's cache of recent query vectors never answers: each one runs the text encoder
(ONNX, which the server writes at start-up; torch where it cannot). Printed: errors,
throughput, client-side p50/p95 latency (includes queueing behind the other clients: the server runs
one query at a time), the server's own per-query time from its Server-Timing header (warm p50/p95,
wall time and the worker thread's CPU time: on a busy machine the wall time grows, the CPU time
hardly), and the server's RSS (now and peak).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np

WORDS = ("cat dog bird frog owl tree house car boat beach snow night sunset flower city street river "
         "mountain red blue green yellow small large old new happy running sleeping flying").split()


def distinct_queries(n: int) -> list[str]:
    """n different queries of 1-3 words, some in the weighted syntax: all distinct, so the server's
    cache of recent query vectors never answers and every query runs the text tower."""
    import itertools

    combos = [c for size in (1, 2, 3) for c in itertools.combinations(WORDS, size)]
    rng = np.random.default_rng(1)
    picked = rng.choice(len(combos), size=n, replace=False)
    return [(" + " if rng.random() < 0.3 else " ").join(combos[i]) for i in picked]


def packaged_checkpoint(folder: Path) -> Path:
    from tinymvlm.models.checkpoint import save_checkpoint
    from tinymvlm.models.config import ModelConfig
    from tinymvlm.models.factory import create_model

    model, tokenizer = create_model(ModelConfig(image_model="efficientnet_lite0", text_model="minilm-l6"))
    path = folder / "model.safetensors"
    save_checkpoint(path, model, tokenizer, {"epoch": 0})
    return path


def synthetic_index(folder: Path, checkpoint: Path, n: int, index_type: str = "auto") -> None:
    """n clustered unit vectors as image rows, then the FAISS file, as `tmv index` writes them."""
    from tinymvlm.index import Index
    from tinymvlm.index.catalog import Catalog
    from tinymvlm.index.vectors import IndexSpec

    index = Index(folder, checkpoint=checkpoint)
    info = index.model_info()
    store = index.store
    manifest = store.create(info, IndexSpec(type=index_type))
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2000, info.embed_dim), dtype=np.float32)
    catalog = Catalog(store.catalog_path)
    with catalog.transaction():
        for start in range(0, n, 10_000):
            m = min(10_000, n - start)
            block = centres[rng.integers(0, len(centres), m)] + rng.standard_normal((m, info.embed_dim), dtype=np.float32) * 0.05
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            for j, vec in enumerate(block):
                catalog.insert_image(f"/synthetic/{start + j:07d}.jpg", 1000, 0, f"h{start + j}", vec)
    manifest = store.sync(catalog, manifest, "images", IndexSpec(**manifest["spec"]))
    store.write_manifest(manifest)
    catalog.close()


def start_server(folder: Path, thumbs: Path, cache: Path) -> tuple[subprocess.Popen, str]:
    """`tmv serve` with its own user cache: its start-up writes the model's ONNX text encoder there."""
    proc = subprocess.Popen([sys.executable, "-m", "tinymvlm.cli", "serve", "--index", str(folder), "--port", "0",
                             "--thumbs", str(thumbs)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, XDG_CACHE_HOME=str(cache)))
    for line in proc.stderr:
        if " at http://" in line:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, line.rsplit(" at ", 1)[1].strip()
    raise SystemExit(f"tmv serve did not start (exit {proc.wait()})")


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def client(url: str, jobs: queue.Queue, results: list, deadline: float) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    while time.monotonic() < deadline:
        try:
            text = jobs.get_nowait()
        except queue.Empty:
            break
        start = time.perf_counter()
        try:
            conn.request("GET", "/api/search?" + urlencode({"q": text, "k": 24}))
            response = conn.getresponse()
            body = response.read()
            ok = response.status == 200 and len(json.loads(body)["results"]) == 24
            timing = dict(part.strip().split(";dur=") for part in response.getheader("server-timing").split(","))
            embed_ms, search_ms, cpu_ms = float(timing["embed"]), float(timing["search"]), float(timing["cpu"])
        except (OSError, http.client.HTTPException, ValueError, AttributeError, KeyError):
            conn.close()
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            ok, embed_ms, search_ms, cpu_ms = False, float("nan"), float("nan"), float("nan")
        results.append(((time.perf_counter() - start) * 1000, embed_ms, search_ms, cpu_ms, ok))
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=600, help="stop sending after this long")
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: the packaged towers, untrained heads)")
    parser.add_argument("--type", default="auto", help="FAISS index type, as tmv index --type (auto: flat below 200k)")
    parser.add_argument("--torch", action="store_true",
                        help="text queries on torch: the server gets a user cache that cannot exist, so no ONNX encoder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tmv-bench-serve-") as tmp:
        tmp_path = Path(tmp)
        start = time.perf_counter()
        checkpoint = Path(args.checkpoint) if args.checkpoint else packaged_checkpoint(tmp_path)
        synthetic_index(tmp_path / "index", checkpoint, args.vectors, args.type)
        print(f"{args.type} index of {args.vectors:,} vectors built in {time.perf_counter() - start:.1f} s")
        (tmp_path / "not-a-folder").write_text("")
        cache = tmp_path / ("not-a-folder/cache" if args.torch else "cache")
        proc, url = start_server(tmp_path / "index", tmp_path / "thumbs", cache)
        try:
            jobs: queue.Queue = queue.Queue()
            for text in distinct_queries(args.queries):
                jobs.put(text)
            results: list = []
            deadline = time.monotonic() + args.max_seconds
            threads = [threading.Thread(target=client, args=(url, jobs, results, deadline))
                       for _ in range(args.clients)]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - start
            rss, peak = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    latency = np.array([r[0] for r in results])
    warm = np.array([r[1:4] for r in results[args.clients:] if r[4]])  # after each client's first
    server, embed, search, cpu = warm[:, :2].sum(axis=1), warm[:, 0], warm[:, 1], warm[:, 2]
    errors = sum(not r[4] for r in results)
    print(f"{len(results)} queries from {args.clients} clients in {wall:.1f} s: {len(results) / wall:.1f} queries/s, "
          f"{errors} errors")
    print(f"client latency p50 {np.percentile(latency, 50):.1f} ms, p95 {np.percentile(latency, 95):.1f} ms")
    print(f"server-side query, warm: p50 {np.percentile(server, 50):.1f} ms, p95 {np.percentile(server, 95):.1f} ms "
          f"(text embedding p50 {np.percentile(embed, 50):.1f} ms, FAISS search + catalogue p50 "
          f"{np.percentile(search, 50):.1f} ms); its CPU time p50 {np.percentile(cpu, 50):.1f} ms, "
          f"p95 {np.percentile(cpu, 95):.1f} ms")
    print(f"machine load average while running: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"server RSS {rss:.0f} MB (peak {peak:.0f} MB)")
    if errors or len(results) < args.queries:
        raise SystemExit(f"FAILED: {errors} errors, {args.queries - len(results)} queries not sent in time")


if __name__ == "__main__":
    main()
