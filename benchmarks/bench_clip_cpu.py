"""CPU speed of real-size pretrained-CLIP architectures through tinymvlm's own path, random weights.

    python benchmarks/bench_clip_cpu.py [--n 64] [--models builtin,clip-b32,siglip-b16,open_clip-b32] [--precisions fp32,bf16]

Speed does not depend on the weights, so the models are built offline from configs with random weights
(realsize_models.py: CLIP ViT-B/32 = openai/clip-vit-base-patch32's sizes, SigLIP B/16-224 =
google/siglip-base-patch16-224's, open_clip ViT-B-32 as a local checkpoint file); nothing is downloaded.
Each is named as a user names it (`hf:FOLDER`, `open_clip:ARCH/FILE`) and imported once into the tmv
model cache (a temporary XDG_CACHE_HOME). Every measurement runs in a fresh process, so its peak RSS
(wait4's ru_maxrss) is its own:

  import      first `--model` use: reading the source and writing the tmv checkpoint;
  index       `Index.add` of --n generated 2000x1500 JPEGs (the embedding-phase images/s `tmv index`
              reports, and the whole call's wall time), then forward-only images/s of the image tower
              on ready tensors (batch 64, same precision), in that process;
  cold query  `python -m tinymvlm.cli search TEXT` as a new process: the ONNX text path when indexing
              wrote the model's encoder, and the same on torch (a user cache with no encoder);
  warm query  p50/p90 of 20 text searches in one process (Runtime.for_queries: ONNX where present).

The load average is printed beside each figure: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUERIES = ["a photo of a cat", "a dog running on the beach", "mountains at sunset", "a red car", "two children playing",
           "a bowl of soup", "snow on the trees", "a city street at night", "a birthday cake", "an old church"]


def run_child(args: list[str], env: dict) -> tuple[float, float, str]:
    """(wall s, peak RSS MiB, stdout) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    # communicate() reaped it: its own ru_maxrss is gone from wait4, so children report it themselves too.
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}): {' '.join(args)}\n{err[-3000:]}")
    rss = 0.0
    for line in out.splitlines():
        if line.startswith("RSS_MIB "):
            rss = float(line.split()[1])
    return wall, rss, out


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


# ----------------------------------------------------------------------------------------- children


def child_prepare(work: str, n: str) -> None:
    sys.path.insert(0, str(HERE))
    from bench_index import make_jpegs
    from realsize_models import build_all

    from tinymvlm.inference.runtime import cpu_has_native_bf16

    refs = build_all(Path(work) / "models")
    make_jpegs(Path(work) / "images", int(n), (2000, 1500))
    print(json.dumps({**refs, "native_bf16": cpu_has_native_bf16()}))


def child_import(ref: str) -> None:
    from tinymvlm.models.resolve import resolve_model

    start = time.perf_counter()
    path = resolve_model(ref)
    print(json.dumps({"seconds": time.perf_counter() - start, "checkpoint_mb": path.stat().st_size / 1e6}))
    print(f"RSS_MIB {peak_rss_mib():.0f}")


def child_index(ref: str, precision: str, images: str, index: str) -> None:
    import torch

    from tinymvlm.index import Index
    from tinymvlm.inference.runtime import Runtime

    runtime = Runtime(device="cpu", precision=precision)
    idx = Index(index, checkpoint=ref, runtime=runtime)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    report = idx.add([images])
    wall, cpu_add = time.perf_counter() - start, cpu_seconds() - cpu0
    model, _ = idx.load_model()
    rss_index = peak_rss_mib()
    from tinymvlm.inference.runtime import autocast

    pixels = torch.randn(64, *model.data_config["input_size"]).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), Runtime.on("cpu", precision).model_threads():
        with autocast("cpu", precision):
            model.encode_image(pixels[:8])  # warm-up
        done, t0, c0 = 0, time.perf_counter(), cpu_seconds()
        while done < 128 or time.perf_counter() - t0 < 6:
            with autocast("cpu", precision):
                model.encode_image(pixels)
            done += 64
        forward = done / (time.perf_counter() - t0)
        forward_cpu_ms = (cpu_seconds() - c0) / done * 1e3
    print(json.dumps({"add_cpu_ms_per_image": cpu_add / max(1, report.embedded) * 1e3, "forward_cpu_ms": forward_cpu_ms,"images_per_s": report.images_per_s, "embedded": report.embedded, "wall": wall,
                      "forward_per_s": forward, "rss_index_mib": rss_index}))
    print(f"RSS_MIB {peak_rss_mib():.0f}")


def child_warm(index: str) -> None:
    from tinymvlm.index import Index
    from tinymvlm.inference.runtime import Runtime

    idx = Index(index, runtime=Runtime.for_queries())
    idx.search("warm up", k=5)
    onnx = idx.text_encoder() is not None
    times = []
    for q in QUERIES * 2:
        t0 = time.perf_counter()
        idx.search(q, k=5)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    print(json.dumps({"p50_ms": statistics.median(times), "p90_ms": times[int(0.9 * len(times)) - 1], "onnx": onnx,
                      "torch_loaded": "torch" in sys.modules}))
    print(f"RSS_MIB {peak_rss_mib():.0f}")


# ------------------------------------------------------------------------------------------- driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="generated 2000x1500 JPEGs to index")
    parser.add_argument("--models", default="builtin,clip-b32,siglip-b16,open_clip-b32")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--work", default="/tmp/tmv-bench-clip-cpu", help="models, images and caches (kept)")
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--cold-paths", default="onnx,torch", help="cold searches to time: onnx (the text encoder "
                        "file indexing wrote), torch (a user cache without it)")
    args = parser.parse_args()

    work = Path(args.work)
    images = work / "images"
    env = dict(os.environ, XDG_CACHE_HOME=str(work / "cache"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    me = [sys.executable, str(Path(__file__).resolve())]
    # Models and images are made in a child: a child's peak RSS starts from its parent's at the fork, so
    # this driver stays small (no torch) for every child's figure to be its own.
    refs = json.loads(run_child(me + ["_prepare", str(work), str(args.n)], env)[2].splitlines()[0])
    rows = []
    print(f"{os.cpu_count()} cores; native bf16: {refs.pop('native_bf16')}", flush=True)
    for name in args.models.split(","):
        ref = refs[name]
        row = {"model": name}
        row["load_import"] = load()
        wall, rss, out = run_child(me + ["_import", ref], env)
        info = json.loads(out.splitlines()[0])
        row.update(import_s=info["seconds"], import_rss=rss, checkpoint_mb=info["checkpoint_mb"])
        print(f"[{name}] import {info['seconds']:.1f} s, RSS {rss:.0f} MiB (load {row['load_import']})", flush=True)
        for precision in args.precisions.split(","):
            index = Path(tempfile.mkdtemp(prefix=f"idx-{name}-{precision}-", dir=work))
            row[f"load_index_{precision}"] = load()
            wall, rss, out = run_child(me + ["_index", ref, precision, str(images), str(index)], env)
            info = json.loads(out.splitlines()[0])
            row[precision] = {**info, "rss": rss}
            print(f"[{name}] {precision}: index {info['images_per_s']:.1f} img/s ({info['wall']:.1f} s for "
                  f"{info['embedded']}), forward {info['forward_per_s']:.1f} img/s, RSS {info['rss_index_mib']:.0f} MiB "
                  f"(load {row[f'load_index_{precision}']})", flush=True)
            if precision == args.precisions.split(",")[0]:
                row["index_dir"] = str(index)
        index = row["index_dir"]
        search = [sys.executable, "-m", "tinymvlm.cli", "search", QUERIES[0], "--index", index, "-k", "5", "--json"]
        torch_env = dict(env, XDG_CACHE_HOME=str(work / "no-cache-here"))  # finds no ONNX encoder; writes one there
        for label, cmd_env in [(p, {"onnx": env, "torch": torch_env}[p]) for p in args.cold_paths.split(",")]:
            walls, rsss = [], []
            row[f"load_cold_{label}"] = load()
            for _ in range(args.cold_runs):
                if label == "torch":  # no encoder may survive from the previous run
                    subprocess.run(["rm", "-rf", str(work / "no-cache-here")], check=True)
                with tempfile.TemporaryFile() as errors:
                    start = time.perf_counter()
                    proc = subprocess.Popen(search, stdout=subprocess.DEVNULL, stderr=errors, env=cmd_env)
                    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
                    walls.append(time.perf_counter() - start)
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    errors.seek(0)
                    assert proc.returncode == 0, f"search failed: {errors.read().decode()[-2000:]}"
                rsss.append(usage.ru_maxrss / 1024)
            row[f"cold_{label}"] = (statistics.median(walls), max(rsss))
            print(f"[{name}] cold search ({label}): median {statistics.median(walls):.2f} s of {args.cold_runs}, "
                  f"RSS {max(rsss):.0f} MiB (load {row[f'load_cold_{label}']})", flush=True)
        row["load_warm"] = load()
        wall, rss, out = run_child(me + ["_warm", index], env)
        info = json.loads(out.splitlines()[0])
        row["warm"] = {**info, "rss": rss}
        print(f"[{name}] warm query p50 {info['p50_ms']:.1f} ms p90 {info['p90_ms']:.1f} ms (onnx {info['onnx']}, "
              f"torch imported {info['torch_loaded']}), RSS {rss:.0f} MiB (load {row['load_warm']})", flush=True)
        rows.append(row)
    (work / "results.json").write_text(json.dumps(rows, indent=1))
    print_table(rows, args.precisions.split(","))


def print_table(rows: list[dict], precisions: list[str]) -> None:
    head = ["model", "ckpt MB", "import s"]
    for p in precisions:
        head += [f"index {p} img/s", f"fwd {p} img/s", f"index/fwd {p}", f"CPU ms/img index/fwd {p}", f"RSS {p} MiB"]
    if "bf16" in precisions and "fp32" in precisions:
        head += ["bf16/fp32 index"]
    head += ["cold ONNX s", "cold torch s", "torch/ONNX", "cold RSS ONNX/torch MiB", "warm p50 ms", "load"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["model"], f"{r['checkpoint_mb']:.0f}", f"{r['import_s']:.1f}"]
        for p in precisions:
            x = r[p]
            cells += [f"{x['images_per_s']:.1f}", f"{x['forward_per_s']:.1f}",
                      f"{x['images_per_s'] / x['forward_per_s']:.2f}",
                      f"{x.get('add_cpu_ms_per_image', float('nan')):.0f}/{x.get('forward_cpu_ms', float('nan')):.0f}",
                      f"{x['rss']:.0f}"]
        if "bf16" in precisions and "fp32" in precisions:
            cells += [f"{r['bf16']['images_per_s'] / r['fp32']['images_per_s']:.2f}x"]
        onnx, torch = r.get("cold_onnx", (float("nan"),) * 2), r.get("cold_torch", (float("nan"),) * 2)
        cells += [f"{onnx[0]:.2f}", f"{torch[0]:.2f}", f"{torch[0] / onnx[0]:.1f}x", f"{onnx[1]:.0f}/{torch[1]:.0f}",
                  f"{r['warm']['p50_ms']:.1f}{'' if r['warm']['onnx'] else ' (torch)'}",
                  "/".join(str(r[k]) for k in r if k.startswith("load_"))]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:  # print the table again from a results.json
        rows = json.loads(Path(sys.argv[2]).read_text())
        print_table(rows, [p for p in ("fp32", "bf16") if p in rows[0]])
        sys.exit()
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        {"_prepare": child_prepare, "_import": child_import, "_index": child_index,
         "_warm": child_warm}[sys.argv[1]](*sys.argv[2:])
    else:
        main()
