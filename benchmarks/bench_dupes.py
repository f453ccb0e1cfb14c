"""`tmv dupes`: pairwise precision and recall on a near-duplicate set made from real photos, and the
candidate search's time on synthetic vectors.

    .venv/bin/python benchmarks/bench_dupes.py quality --photos /tmp/proto24/photos --work /tmp/dupes
    .venv/bin/python benchmarks/bench_dupes.py speed --sizes 100000 1000000

quality: every EDIT_EVERY-th photo (sorted by name) becomes an original with six edited copies (resized,
re-compressed, cropped a little, brightened, date-stamped, turned 4 degrees): each such group is a true
duplicate group. The other photos stay single, unedited: look-alikes of the originals (other dogs, other
cars, other faces) that must not be grouped. The set is indexed with the built-in model (the index is
kept in WORK, so a rerun embeds nothing), then pairs are scored: precision = true pairs among the pairs
found, recall = true pairs found among all true pairs. The first table is `tmv dupes` itself at its
defaults; the second sweeps both thresholds from one candidate search (embedding similarity down to
0.50), to show what each check contributes. Pairs of two source photos that are themselves the same
picture (a library's own duplicates) are counted as false, so precision is a lower bound.

speed: N random unit vectors (dim 384, the built-in model's) of which 1% get a near copy (cosine ~0.95):
the time of vectors.range_pairs at the default threshold and the share of the planted pairs it finds.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

EDIT_EVERY = 3
EDITS = ("resized", "recompressed", "cropped", "brightened", "stamped", "rotated")
console = Console(file=sys.stdout, width=140)


def edit(image, kind: str):
    from PIL import ImageDraw, ImageEnhance, ImageFont

    w, h = image.size
    if kind == "resized":
        return image.resize((max(1, w // 2), max(1, h // 2)))
    if kind == "cropped":
        return image.crop((int(w * 0.05), int(h * 0.05), int(w * 0.93), int(h * 0.93)))
    if kind == "brightened":
        return ImageEnhance.Brightness(image).enhance(1.35)
    if kind == "stamped":
        stamped = image.copy()
        font = ImageFont.load_default(size=max(10, h // 14))
        ImageDraw.Draw(stamped).text((int(w * 0.55), int(h * 0.88)), "2019-07-14 09:30", fill=(255, 140, 0), font=font)
        return stamped
    if kind == "rotated":
        turned = image.rotate(4, resample=3)
        return turned.crop((int(w * 0.06), int(h * 0.06), int(w * 0.94), int(h * 0.94)))
    return image  # recompressed: the saving does it


def build_set(photos: Path, out: Path) -> dict[str, str]:
    """{file name: group} of the set written to `out` (group: the original's name; a single's own name)."""
    from tinymvlm.data.transform import load_image
    from tinymvlm.image_files import is_image_name

    out.mkdir(parents=True, exist_ok=True)
    groups = {}
    sources = sorted(p for p in photos.iterdir() if is_image_name(p.name))
    for n, path in enumerate(sources):
        stem = path.stem
        image = load_image(path)
        image.save(out / f"{stem}.png") if not (out / f"{stem}.png").exists() else None
        groups[f"{stem}.png"] = stem
        if n % EDIT_EVERY:
            continue
        for kind in EDITS:
            name = f"{stem}__{kind}.jpg"
            if not (out / name).exists():
                edit(image, kind).save(out / name, quality=25 if kind == "recompressed" else 90)
            groups[name] = stem
    return groups


def true_pairs(groups: dict[str, str]) -> set[frozenset]:
    by_group: dict[str, list[str]] = {}
    for name, group in groups.items():
        by_group.setdefault(group, []).append(name)
    return {frozenset(p) for members in by_group.values() for p in itertools.combinations(members, 2)}


def found_pairs(duplicate_groups) -> set[frozenset]:
    return {frozenset(os.path.basename(x) for x in p) for g in duplicate_groups for p in itertools.combinations(g.paths, 2)}


def score(found: set[frozenset], truth: set[frozenset]) -> tuple[float, float, int]:
    hits = len(found & truth)
    return hits / len(found) if found else 1.0, hits / len(truth), len(found - truth)


def quality(args) -> None:
    from tinymvlm.index import Index
    from tinymvlm.index.duplicates import DEFAULT_THRESHOLD, LOOK_THRESHOLD, look_alike, thumbnail_signature
    from tinymvlm.index.vectors import range_pairs

    work = Path(args.work)
    groups = build_set(Path(args.photos), work / "photos")
    truth = true_pairs(groups)
    index = Index(work / "index")
    start = time.perf_counter()
    index.add([work / "photos"])
    console.print(f"set: {len(groups)} images, {sum(1 for n in groups if '__' in n) // len(EDITS)} originals x "
                  f"{len(EDITS)} edits, {len(truth)} true pairs; indexed in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    dupes = index.duplicates()
    elapsed = time.perf_counter() - start
    precision, recall, false = score(found_pairs(dupes), truth)
    table = Table(title=f"tmv dupes at its defaults (embedding >= {DEFAULT_THRESHOLD}, look >= {LOOK_THRESHOLD})")
    for column in ("groups", "pairs found", "precision", "recall", "false pairs", "time"):
        table.add_column(column, justify="right")
    table.add_row(str(len(dupes)), str(len(found_pairs(dupes))), f"{precision:.3f}", f"{recall:.3f}", str(false),
                  f"{elapsed:.1f} s")
    console.print(table)
    per_edit = Table(title="recall per edit (pairs original - edited copy)")
    per_edit.add_column("edit")
    per_edit.add_column("recall", justify="right")
    found = found_pairs(dupes)
    for kind in EDITS:
        wanted = {p for p in truth if any(n.endswith(f"__{kind}.jpg") for n in p) and any("__" not in n for n in p)}
        per_edit.add_row(kind, f"{len(wanted & found) / len(wanted):.3f}")
    console.print(per_edit)
    for group in dupes:
        names = {os.path.basename(p) for p in group.paths}
        if len({groups[n] for n in names}) > 1:
            console.print(f"mixed group: {sorted(names)}", markup=False)

    # the sweep: one candidate search at a low threshold, every pair's look computed once
    catalog = index.searcher().catalog
    with catalog.snapshot():
        ids = catalog.ids("images")
        vecs = catalog.vectors("images", ids, index.info()["embed_dim"])
        labels = catalog.labels("images", ids.tolist())
    names = [os.path.basename(labels[int(i)]) for i in ids]
    firsts, seconds, sims = range_pairs(vecs, 0.50)
    looks = {}
    for position in set(firsts.tolist()) | set(seconds.tolist()):
        looks[position] = thumbnail_signature(labels[int(ids[position])])
    corr = np.array([look_alike(looks[a], looks[b]) for a, b in zip(firsts.tolist(), seconds.tolist())])
    sweep = Table(title="pairwise precision / recall (no grouping) by threshold")
    sweep.add_column("embedding >=", justify="right")
    for look in (None, 0.6, 0.7, 0.75, 0.8):
        sweep.add_column("embedding alone" if look is None else f"and look >= {look}", justify="right")
    for threshold in (0.50, 0.60, 0.70, 0.80, 0.90):
        row = [f"{threshold:.2f}"]
        for look in (None, 0.6, 0.7, 0.75, 0.8):
            keep = (sims >= threshold) & ((corr >= look) if look is not None else True)
            pairs = {frozenset((names[a], names[b])) for a, b in zip(firsts[keep], seconds[keep])}
            p, r, f = score(pairs, truth)
            row.append(f"{p:.3f} / {r:.3f} ({f} false)")
        sweep.add_row(*row)
    console.print(sweep)
    index.close()


def speed(args) -> None:
    from tinymvlm.index.duplicates import DEFAULT_THRESHOLD
    from tinymvlm.index.vectors import range_pairs

    table = Table(title=f"candidate search (vectors.range_pairs at {DEFAULT_THRESHOLD}), dim {args.dim}, load "
                        f"{open('/proc/loadavg').read().split()[0] if os.path.exists('/proc/loadavg') else '?'}")
    for column in ("vectors", "planted pairs", "found", "recall", "other pairs", "time", "vectors/s"):
        table.add_column(column, justify="right")
    rng = np.random.default_rng(0)
    for n in args.sizes:
        base = rng.standard_normal((n, args.dim), dtype=np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        copies = rng.choice(n, size=n // 100, replace=False)
        targets = rng.choice(np.setdiff1d(np.arange(n), copies), size=len(copies), replace=False)
        noise = rng.standard_normal((len(copies), args.dim), dtype=np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        base[targets] = 0.95 * base[copies] + np.sqrt(1 - 0.95 ** 2) * noise  # cosine ~0.95 with its original
        base[targets] /= np.linalg.norm(base[targets], axis=1, keepdims=True)
        start = time.perf_counter()
        firsts, seconds, _ = range_pairs(base, DEFAULT_THRESHOLD)
        elapsed = time.perf_counter() - start
        planted = {(min(a, b), max(a, b)) for a, b in zip(copies.tolist(), targets.tolist())}
        found = set(zip(firsts.tolist(), seconds.tolist()))
        table.add_row(f"{n:,}", f"{len(planted):,}", f"{len(found & planted):,}", f"{len(found & planted) / len(planted):.4f}",
                      str(len(found - planted)), f"{elapsed:.1f} s", f"{n / elapsed:,.0f}")
        console.print(table)
        del base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--photos", default="/tmp/proto24/photos")
    q.add_argument("--work", default="/tmp/tmv-bench-dupes")
    s = sub.add_parser("speed")
    s.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    s.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    quality(args) if args.part == "quality" else speed(args)


if __name__ == "__main__":
    main()
