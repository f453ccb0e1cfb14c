"""Our training recipe against the original trainer's, on held-out Tux Paint stamps, in one run.

Builds the deterministic 80/20 split of Debian's tuxpaint-stamps-default (examples/tuxpaint_pairs.py),
then trains each configuration as its own `tmv train` process and prints, for each: wall time,
training pairs/s, peak memory (the training process's own peak resident set, as /usr/bin/time reports
it, and the peak of the resident sets of it and its DataLoader workers added up, sampled every 0.5 s
from /proc/PID/statm, which costs the trainer nothing but counts pages the workers share with it once
per process) and R@1/5/10 in both directions on the held-out split after the last
epoch (no checkpoint selection on the test split), plus the ratios to the original recipe.

    python benchmarks/bench_recipe.py [--out runs/bench-recipe] [--only ours,original] [--seeds 3]

With 152 held-out pairs one query is 0.66 points of R@1, and a different seed moves R@1 by a few
points; `--seeds N` also trains the default recipe with seeds 1..N-1 and prints their mean.

Configurations (YAML under examples/):
  original        tuxpaint-original.yaml   the original recipe in our flags: everything unfrozen,
                                           lr 2e-5 everywhere, no warmup or decay, padding to 32,
                                           fp32, channels-first images, batch 32, no workers,
                                           no label prior, 10 epochs
  ours            tuxpaint.yaml            the default small-data recipe
  ours-2min       tuxpaint-fast.yaml       the same recipe cut to fit two minutes
  ours-no-prior   tuxpaint.yaml            the default recipe without the label prior
                                           (--no-label-prior): what the prior is worth
  full-finetune   tuxpaint-full.yaml       everything unfrozen like the original, with bf16, 144 px
                                           training crops, activation checkpointing and dynamic padding
                                           (3 epochs: speed and memory only)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from tuxpaint_pairs import DEFAULT_STAMPS, split_stamps, write_pairs  # noqa: E402

CONFIGS = {  # name: (YAML under examples/, extra flags)
    "original": ("tuxpaint-original.yaml", []),
    "ours": ("tuxpaint.yaml", []),
    "ours-2min": ("tuxpaint-fast.yaml", []),
    "ours-no-prior": ("tuxpaint.yaml", ["--no-label-prior"]),
    "full-finetune": ("tuxpaint-full.yaml", ["--epochs", "3"]),
}
KEYS = ["t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10"]


def _tree_rss_kb(root: int) -> int:
    """Resident set sizes of a process and all its descendants, added up."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    total, stack, page_kb = 0, [root], os.sysconf("SC_PAGE_SIZE") // 1024
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page_kb
        except OSError:
            pass
    return total


def run_config(name: str, config: Path, data: Path, out: Path, extra: list[str]) -> dict:
    run_dir = out / name
    cmd = [sys.executable, "-m", "tinymvlm.cli", "train", "--config", str(config),
           "--data", str(data / "train.tsv"), "--val-data", str(data / "test.tsv"), "--out-dir", str(run_dir), *extra]
    peak = 0
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(out / f"{name}.log", "w"))

    def sample() -> None:
        nonlocal peak
        while proc.returncode is None:
            peak = max(peak, _tree_rss_kb(proc.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    sampler.join()
    if code != 0:
        raise SystemExit(f"{name} failed (exit {code}); see {out / f'{name}.log'}")
    epochs = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["type"] == "epoch"]
    pairs = sum(r["pairs_per_s"] * r["epoch_seconds"] for r in epochs)
    seconds = sum(r["epoch_seconds"] for r in epochs)
    return {"name": name, "wall_s": wall, "pairs_per_s": pairs / seconds, "peak_mb": usage.ru_maxrss / 1024,
            "tree_peak_mb": peak / 1024,
            "epochs": len(epochs), **{k: epochs[-1]["val"][k] for k in KEYS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-recipe"))
    parser.add_argument("--stamps", type=Path, default=DEFAULT_STAMPS)
    parser.add_argument("--only", help="Comma-separated configuration names to run.")
    parser.add_argument("--seeds", type=int, default=1, help="Train the default recipe with this many seeds.")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration {unknown[0]!r}; choose from {', '.join(CONFIGS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    train, test = split_stamps(args.stamps)
    write_pairs(args.out / "train.tsv", train)
    write_pairs(args.out / "test.tsv", test)
    print(f"Tux Paint stamps: {len(train)} train / {len(test)} held-out pairs; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads default")
    runs = [(name, *CONFIGS[name]) for name in names]
    if "ours" in names:
        runs += [(f"ours-seed{k}", CONFIGS["ours"][0], ["--seed", str(k)]) for k in range(1, args.seeds)]
    results = []
    for name, config, extra in runs:
        print(f"running {name} ...", flush=True)
        results.append(run_config(name, ROOT / "examples" / config, args.out, args.out, extra))
        r = results[-1]
        print(f"  {r['wall_s']:.0f} s, {r['pairs_per_s']:.1f} pairs/s, peak {r['peak_mb']:.0f} MB "
              f"({r['tree_peak_mb']:.0f} MB with workers), "
              f"t2i R@1 {r['t2i_R@1']:.1f}, i2t R@1 {r['i2t_R@1']:.1f}", flush=True)
    header = (f"{'config':<14} {'epochs':>6} {'wall s':>7} {'pairs/s':>8} {'peak MB':>8} {'+workers':>8} "
              + " ".join(f"{k:>9}" for k in KEYS))
    print("\n" + header)
    for r in results:
        print(f"{r['name']:<14} {r['epochs']:>6} {r['wall_s']:>7.0f} {r['pairs_per_s']:>8.1f} {r['peak_mb']:>8.0f} "
              f"{r['tree_peak_mb']:>8.0f} "
              + " ".join(f"{r[k]:>9.1f}" for k in KEYS))
    seeded = [r for r in results if r["name"] == "ours" or r["name"].startswith("ours-seed")]
    if len(seeded) > 1:
        print(f"{'ours, mean':<14} {'':>6} {'':>7} {'':>8} {'':>8} {'':>8} "
              + " ".join(f"{sum(r[k] for r in seeded) / len(seeded):>9.1f}" for k in KEYS))
    base = next((r for r in results if r["name"] == "original"), None)
    if base:
        print("\nratios to the original recipe (pairs/s and recall: higher is better; wall and memory: lower is better)")
        for r in results:
            if r is base:
                continue
            print(f"{r['name']:<14} wall x{r['wall_s'] / base['wall_s']:.2f}  pairs/s x{r['pairs_per_s'] / base['pairs_per_s']:.2f}  "
                  f"peak memory x{r['peak_mb'] / base['peak_mb']:.2f}  "
                  + "  ".join(f"{k} x{r[k] / max(base[k], 1e-9):.2f}" for k in ("t2i_R@1", "i2t_R@1")))
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
