"""Zero-shot classification: classify labelled images by their similarity to prompts built from the
class names ("a photo of a {}."), several templates averaged per class, as CLIP does.

Labelled images come from a folder of class subfolders, a pairs file or dataset with a label column,
or an IDX folder such as Debian's Fashion-MNIST (/usr/share/datasets/fashion-mnist).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tinymvlm.data.pairs import DatasetImages, FileImages, PairSet, Skip, drop_unreadable, load_pairs
from tinymvlm.data.sources import LABEL, SourceKind, find_image_column, open_dataset, pick_column, source_kind
from tinymvlm.data.transform import to_rgb
from tinymvlm.errors import TmvError
from tinymvlm.image_files import is_image_name, iter_image_files
from tinymvlm.inference.embed import OnImages, embed_images, embed_texts
from tinymvlm.inference.runtime import Runtime
from tinymvlm.models.tinyclip import TinyClip

FASHION_MNIST = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a drawing of a {}.")
IDX_PREFIXES = {"test": "t10k", "t10k": "t10k", "train": "train"}


class ArrayImages:
    """Images held as a uint8 array (N, H, W) or (N, H, W, 3); grayscale becomes RGB."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels

    def open(self, i: int, draft_size: tuple[int, int] | None = None) -> Image.Image:
        return to_rgb(Image.fromarray(self.pixels[i]))

    def describe(self, i: int) -> str:
        return f"image {i}"

    def subset(self, indices: Sequence[int]) -> "ArrayImages":
        return ArrayImages(self.pixels[np.asarray(indices, dtype=np.int64)])


@dataclass
class LabelledSet:
    """Images, each with one class index into `classes`."""

    name: str
    classes: list[str]
    labels: np.ndarray
    images: FileImages | DatasetImages | ArrayImages
    skipped: list[Skip] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int]) -> "LabelledSet":
        idx = np.asarray(indices, dtype=np.int64)
        return LabelledSet(self.name, self.classes, self.labels[idx], self.images.subset(idx.tolist()), self.skipped)


def spread(total: int, limit: int | None) -> list[int] | None:
    """Indices of `limit` evenly spaced items out of `total` (None: keep all). Evenly spaced rather
    than the first N, so a class-sorted folder still yields every class."""
    if limit is None or limit >= total:
        return None
    if limit <= 0:
        raise TmvError(f"--limit must be positive, not {limit}")
    return [(i * total) // limit for i in range(limit)]


# ---------------------------------------------------------------------------------------- sources


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not, as a uint8 array of its declared shape."""
    try:
        data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise TmvError(f"cannot read {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise TmvError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise TmvError(f"{path} is truncated")
    dims = [int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4)]
    if len(data) != header + int(np.prod(dims)):
        raise TmvError(f"{path}: {len(data) - header} bytes of data for shape {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _idx_file(folder: Path, prefix: str, kind: str) -> Path | None:
    for name in (f"{prefix}-{kind}-ubyte.gz", f"{prefix}-{kind}-ubyte", f"{prefix}-{kind}.idx"):
        if (folder / name).is_file():
            return folder / name
    return None


def is_idx_folder(folder: Path) -> bool:
    return any(_idx_file(folder, p, "labels-idx1") for p in ("t10k", "train"))


def load_idx_folder(folder: Path, split: str | None, classes: Sequence[str] | None = None) -> LabelledSet:
    """MNIST-layout folder: {t10k,train}-{images-idx3,labels-idx1}-ubyte[.gz]. Class names default to
    Fashion-MNIST's when the folder name says so, else to the label numbers."""
    split = split or "test"
    if split not in IDX_PREFIXES:
        raise TmvError(f"{folder}: no split '{split}' (splits: test, train)")
    prefix = IDX_PREFIXES[split]
    image_file, label_file = _idx_file(folder, prefix, "images-idx3"), _idx_file(folder, prefix, "labels-idx1")
    if image_file is None or label_file is None:
        raise TmvError(f"{folder}: no {prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz for split '{split}'")
    pixels, labels = read_idx(image_file), read_idx(label_file).astype(np.int64)
    if pixels.ndim != 3 or labels.ndim != 1 or len(pixels) != len(labels):
        raise TmvError(f"{folder}: {len(labels)} labels for images of shape {list(pixels.shape)}")
    if classes is None:
        fashion = "fashion" in str(folder.resolve()).lower() and labels.max(initial=0) < len(FASHION_MNIST)
        classes = FASHION_MNIST if fashion else [str(i) for i in range(int(labels.max(initial=-1)) + 1)]
    _check_labels(labels, classes, str(folder))
    return LabelledSet(f"{folder} [{split}]", list(classes), labels, ArrayImages(pixels))


def load_class_folder(folder: Path) -> LabelledSet:
    """ImageFolder layout: each first-level subfolder is a class (underscores read as spaces) and
    holds that class's images, at any depth. Images outside a class folder are skipped."""
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes, paths, labels, skipped = [], [], [], []
    for sub in subfolders:
        files = list(iter_image_files(sub))
        if files:
            classes.append(sub.name.replace("_", " "))
            paths.extend(files)
            labels.extend([len(classes) - 1] * len(files))
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and is_image_name(entry.name):
            skipped.append(Skip(entry.name, "not inside a class folder"))
    pairs = PairSet(str(folder), [os.path.relpath(p, folder) for p in paths], [[str(l)] for l in labels], FileImages(paths), skipped)
    pairs = drop_unreadable(pairs)
    return LabelledSet(str(folder), classes, np.array([int(c[0]) for c in pairs.captions], dtype=np.int64),
                       pairs.images, pairs.skipped)


def load_labelled_pairs(source: str, image_root: str | None, image_column: str | None, label_column: str | None,
                        split: str | None, classes: Sequence[str] | None = None) -> LabelledSet:
    """A pairs file with an image column and a label column (default 'label'). Labels are class names,
    or class numbers when `classes` names them in order."""
    pairs = load_pairs(source, image_root, image_column, label_column, split, role=LABEL)
    keep, values, skipped = [], [], list(pairs.skipped)
    for i, labels in enumerate(pairs.captions):
        if len(set(labels)) > 1:
            skipped.append(Skip(pairs.keys[i], f"several labels ({', '.join(sorted(set(labels)))})"))
        else:
            keep.append(i)
            values.append(labels[0])
    return _labelled(pairs.name, values, pairs.images.subset(keep), skipped, classes)


def load_labelled_dataset(source: str, split: str | None, image_column: str | None, label_column: str | None,
                          classes: Sequence[str] | None = None) -> LabelledSet:
    """A Hugging Face dataset (local or hub) with an image column and a label column; a ClassLabel
    column brings its own class names."""
    dataset, rows, name = open_dataset(source, split)
    features = dataset.features
    image_col = find_image_column(dataset, image_column, source)
    label_col = pick_column(list(features), label_column, LABEL.keys, LABEL.what, source)
    if classes is None and type(features[label_col]).__name__ == "ClassLabel":
        classes = features[label_col].names
    column = dataset.select_columns([label_col])[label_col]
    rows = [r for r in rows if column[r] is not None]
    values = [str(column[r]) for r in rows]
    return _labelled(name, values, DatasetImages(dataset, image_col, rows), [], classes)


def _labelled(name: str, values: list[str], images, skipped: list[Skip], classes: Sequence[str] | None) -> LabelledSet:
    """Class indices from label strings: the sorted distinct labels are the classes, or indices into
    `classes` when the labels are numbers."""
    if classes is not None:
        if not all(v.lstrip("-").isdigit() for v in values):
            by_name = {c: i for i, c in enumerate(classes)}
            unknown = sorted(set(values) - set(by_name))
            if unknown:
                raise TmvError(f"{name}: label(s) not among the class names: {', '.join(unknown[:5])}")
            labels = np.array([by_name[v] for v in values], dtype=np.int64)
        else:
            labels = np.array([int(v) for v in values], dtype=np.int64)
        _check_labels(labels, classes, name)
        return LabelledSet(name, list(classes), labels, images, skipped)
    names = sorted(set(values))
    index = {c: i for i, c in enumerate(names)}
    return LabelledSet(name, names, np.array([index[v] for v in values], dtype=np.int64), images, skipped)


def _check_labels(labels: np.ndarray, classes: Sequence[str], name: str) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise TmvError(f"{name}: label {int(labels.max())} has no class name ({len(classes)} classes given)")


def read_class_names(path: str | Path) -> list[str]:
    """One class name per line, in label order (line 1 names label 0)."""
    try:
        names = [" ".join(line.split()) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise TmvError(f"cannot read class names from {path}: {exc}") from exc
    names = [n for n in names if n]
    if not names:
        raise TmvError(f"{path} holds no class names")
    return names


def load_labelled(source: str, split: str | None = None, image_root: str | None = None, image_column: str | None = None,
                  label_column: str | None = None, classes: Sequence[str] | None = None) -> LabelledSet:
    """Any labelled source: IDX folder, class-subfolder folder, pairs file with a label column, dataset."""
    kind = source_kind(source)
    path = Path(source).expanduser()
    if kind is SourceKind.FOLDER and is_idx_folder(path):
        labelled = load_idx_folder(path, split, classes)
    elif kind is SourceKind.FOLDER:
        labelled = load_class_folder(path)
    elif kind is SourceKind.FILE:
        labelled = load_labelled_pairs(source, image_root, image_column, label_column, split, classes)
    else:
        labelled = load_labelled_dataset(source if kind is SourceKind.HUB else str(path), split, image_column,
                                         label_column, classes)
    if not len(labelled):
        reasons = "; ".join(str(s) for s in labelled.skipped[:3])
        raise TmvError(f"{labelled.name}: no usable labelled images" + (f" ({reasons})" if reasons else ""))
    if len(labelled.classes) < 2:
        raise TmvError(f"{labelled.name}: zero-shot classification needs at least 2 classes, found {len(labelled.classes)}")
    return labelled


# ---------------------------------------------------------------------------------------- scoring


def check_templates(templates: Sequence[str]) -> list[str]:
    templates = list(templates) or list(DEFAULT_TEMPLATES)
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise TmvError(f"prompt template {bad[0]!r} has no '{{}}' where the class name goes")
    return templates


@torch.inference_mode()
def class_embeddings(model: TinyClip, tokenizer, classes: Sequence[str], templates: Sequence[str],
                     runtime: Runtime) -> np.ndarray:
    """One unit vector per class: the normalised mean of its prompts' embeddings."""
    templates = check_templates(templates)
    prompts = [t.replace("{}", c) for c in classes for t in templates]
    vectors = embed_texts(model, tokenizer, prompts, runtime)
    mean = torch.from_numpy(vectors).view(len(classes), len(templates), -1).mean(1)
    return F.normalize(mean, dim=-1).numpy()


@dataclass
class ZeroShotResult:
    """Accuracies in percent; `confusion[t, p]` counts images of class t predicted as p."""

    metrics: dict[str, float]
    classes: list[str]
    confusion: np.ndarray
    images: int

    def per_class_recall(self) -> dict[str, float | None]:
        totals = self.confusion.sum(1)
        return {c: (float(self.confusion[i, i] / totals[i] * 100) if totals[i] else None) for i, c in enumerate(self.classes)}

    def record(self, labelled: LabelledSet, templates: Sequence[str]) -> dict:
        """What an evaluation record (`tmv eval --zeroshot --json`) states about this result."""
        return {"task": "zeroshot", "metrics": self.metrics, "classes": self.classes, "templates": list(templates),
                "per_class_recall": self.per_class_recall(), "confusion_matrix": self.confusion.tolist(),
                "most_confused": [{"true": t, "predicted": p, "images": n, "share_of_true": s}
                                  for t, p, n, s in self.most_confused(10)],
                "dataset": {"name": labelled.name, "images": len(labelled), "skipped": len(labelled.skipped)}}

    def most_confused(self, top: int = 5) -> list[tuple[str, str, int, float]]:
        """(true class, predicted class, count, share of the true class in percent), worst first."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        totals = self.confusion.sum(1)
        pairs = sorted(((int(off[t, p]), t, p) for t, p in zip(*np.nonzero(off))), key=lambda x: (-x[0], x[1], x[2]))
        return [(self.classes[t], self.classes[p], n, n / totals[t] * 100) for n, t, p in pairs[:top]]


def classification_result(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                          ks: Sequence[int] = (1, 5)) -> ZeroShotResult:
    """Top-k accuracy (k up to the number of classes), mean per-class recall over the classes that
    have images, and the confusion matrix. As in retrieval, a tie with the true class counts as a
    hit: rank = 1 + number of classes scoring strictly higher, and a top-1 tie predicts the true class."""
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels):
        raise TmvError("no labelled images to classify")
    own = scores[np.arange(len(labels)), labels]
    ranks = 1 + (scores > own[:, None]).sum(1)
    predicted = np.where(ranks == 1, labels, scores.argmax(1))
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    metrics = {f"acc{k}": float((ranks <= k).mean() * 100) for k in ks if k <= len(classes)}
    present = confusion.sum(1) > 0
    metrics["mean_per_class_recall"] = float((np.diag(confusion)[present] / confusion.sum(1)[present]).mean() * 100)
    return ZeroShotResult(metrics, list(classes), confusion, len(labels))


@torch.inference_mode()
def evaluate_zeroshot(model: TinyClip, tokenizer, labelled: LabelledSet, templates: Sequence[str] = DEFAULT_TEMPLATES,
                      runtime: Runtime | None = None, on_images: OnImages | None = None) -> ZeroShotResult:
    """Embed the images and the class prompts, predict each image's most similar class, score it."""
    runtime = runtime or Runtime()
    classes = class_embeddings(model, tokenizer, labelled.classes, templates, runtime)
    images = embed_images(model, labelled.images, len(labelled), runtime, on_images)
    if not (np.isfinite(images).all() and np.isfinite(classes).all()):
        raise TmvError("the model produced non-finite embeddings (NaN or inf); try --precision fp32")
    return classification_result(images @ classes.T, labelled.labels, labelled.classes)
