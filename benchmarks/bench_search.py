"""Search latency, exact vs approximate, at 100k and 1M vectors, with the approximate types' recall@10.

    python benchmarks/bench_search.py [--sizes 100000,1000000] [--dim 256] [--types flat,ivf,hnsw]

Vectors are synthetic but shaped like embeddings rather than uniform noise (uniform noise has no
neighbourhoods and makes every approximate index look bad): unit vectors drawn around 2,000 random
centres with per-cluster spread, dimension 256 (the packaged towers' embed dim). Queries are 200 fresh
draws from the same distribution. Indexes are built exactly as `tmv index` builds them (index/vectors.py,
default parameters unless overridden) and searched one query at a time in a warm process, as
`tmv search` does: p50/p95 milliseconds per query, and recall@10 against the exact flat index.
Latency is shown with 1 FAISS thread (what `tmv search` uses for its single query) and with all of
them: on a loaded machine OpenMP's thread hand-offs can cost more than the parallel scan saves.
HNSW takes many minutes to build at 1M on a few cores, so by default it is only run up to 200k
(`--hnsw-max`).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def clustered(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    spread = rng.uniform(0.5, 1.2, len(centres)).astype(np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        c = rng.integers(0, len(centres), m)
        noise = rng.standard_normal((m, dim), dtype=np.float32) * (spread[c, None] / np.sqrt(dim))
        block = centres[c] + noise
        out[start:start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def latencies(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from tinymvlm.index import vectors

    for q in queries[:10]:  # warm-up
        vectors.search(index, q[None], k)
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        _, ids = vectors.search(index, q[None], k)
        times.append((time.perf_counter() - start) * 1000)
        found.append(ids[0])
    return np.array(times), np.array(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--types", default="flat,ivf,hnsw")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nprobe", type=int, help="IVF cells per query (default: IndexSpec's)")
    parser.add_argument("--ef-search", type=int, help="HNSW breadth (default: IndexSpec's)")
    parser.add_argument("--hnsw-max", type=int, default=200_000, help="skip HNSW above this many vectors")
    args = parser.parse_args()

    import faiss
    from tinymvlm.index import vectors
    from tinymvlm.index.vectors import IndexSpec

    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; dim {args.dim}, k {args.k}, "
          f"{args.queries} single-vector queries")
    all_threads = faiss.omp_get_max_threads()
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2000, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    queries = clustered(args.queries, args.dim, rng, centres)
    spec = IndexSpec(**{k: v for k, v in (("nprobe", args.nprobe), ("ef_search", args.ef_search)) if v})
    for n in (int(s) for s in args.sizes.split(",")):
        data = clustered(n, args.dim, rng, centres)
        ids = np.arange(n, dtype=np.int64)
        truth = None
        for kind in [t.strip() for t in args.types.split(",")]:
            if kind == "hnsw" and n > args.hnsw_max:
                print(f"{n:>9,} {kind:5s} skipped (--hnsw-max {args.hnsw_max:,})")
                continue
            index_type, params = vectors.resolve(IndexSpec(**{**spec.to_dict(), "type": kind}), n)
            start = time.perf_counter()
            index = vectors.empty(index_type, params, args.dim)
            if index_type == "ivf":
                vectors.train(index, index_type, data[vectors.train_sample(ids, params)])
            for s in range(0, n, 100_000):
                vectors.add(index, ids[s:s + 100_000], data[s:s + 100_000])
            vectors.set_search_params(index, index_type, params.get("nprobe"), params.get("ef_search"))
            build = time.perf_counter() - start
            cells = []
            for threads in (1, all_threads):
                faiss.omp_set_num_threads(threads)
                times, found = latencies(index, queries, args.k)
                cells.append(f"{threads} thr p50 {np.percentile(times, 50):7.2f} ms p95 {np.percentile(times, 95):7.2f} ms")
            faiss.omp_set_num_threads(all_threads)
            if index_type == "flat":
                truth = found
            recall = "" if truth is None else \
                f"recall@{args.k} {np.mean([len(set(a) & set(b)) / args.k for a, b in zip(truth, found)]):.3f}"
            shown = {k: v for k, v in params.items() if k in ("nlist", "nprobe", "m", "ef_search")}
            print(f"{n:>9,} {index_type:5s} {' | '.join(cells)}  {recall:17s} build {build:6.1f} s  {shown}", flush=True)
            del index


if __name__ == "__main__":
    main()
