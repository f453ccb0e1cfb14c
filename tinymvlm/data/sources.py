"""What a `--data` source is and how a Hugging Face dataset is opened: the rules that image-caption
pairs (data.py) and labelled images (zeroshot.py) share, so the two read the same sources alike.

A source is an existing file, an existing folder (a `save_to_disk` dataset when it holds one of its
marker files), or an `owner/name` hub dataset. Columns are named by the user or found among the usual
names; a text column plays one role, captions or labels, which names it in every error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tinymvlm.errors import TmvError, first_line

SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
SPLIT_SYNONYMS = {"val": ("val", "validation", "valid", "dev"), "validation": ("validation", "val", "valid", "dev"),
                  "test": ("test",), "train": ("train",)}
IMAGE_KEYS = ("image", "image_path", "filepath", "file", "filename", "path", "img", "img_path")


@dataclass(frozen=True)
class TextRole:
    """What a source's text column holds: its name in errors and flags, and the usual column names."""

    what: str
    keys: tuple[str, ...]


CAPTION = TextRole("caption", ("caption", "captions", "alt_text", "text", "sentences", "sentence", "raw", "title", "label"))
LABEL = TextRole("label", ("label", "labels", "class", "category", "fine_label", "coarse_label"))


class SourceKind(enum.Enum):
    FILE = "file"
    FOLDER = "folder"
    SAVED_DATASET = "saved dataset"
    HUB = "hub dataset"


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in SAVED_DATASET_MARKERS)


def is_hub_name(source: str) -> bool:
    """`owner/name`, and not a path that merely does not exist."""
    return "/" in source and not source.startswith((".", "/", "~")) and len(source.split("/")) == 2


def source_kind(source: str) -> SourceKind:
    path = Path(source).expanduser()
    if path.is_file():
        return SourceKind.FILE
    if path.is_dir():
        return SourceKind.SAVED_DATASET if is_saved_dataset(path) else SourceKind.FOLDER
    if is_hub_name(source):
        return SourceKind.HUB
    raise TmvError(f"--data {source}: no such file or folder")


def pick_column(names: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, where: str) -> str:
    """The column the user named (any case), else the first of the usual `candidates` present."""
    lowered = {n.lower(): n for n in names}
    if wanted is not None:
        if wanted not in names and wanted.lower() not in lowered:
            raise TmvError(f"{where}: no {what} column '{wanted}' (columns: {', '.join(names)}); "
                           f"name it with --{what}-column")
        return wanted if wanted in names else lowered[wanted.lower()]
    for c in candidates:
        if c in lowered:
            return lowered[c]
    raise TmvError(f"{where}: cannot tell which column holds the {what} (columns: {', '.join(names)}); "
                   f"name it with --{what}-column")


def open_dataset(source: str, split: str | None, streaming: bool = False):
    """(dataset, row indices of `split`, display name) of a saved, local or hub dataset; a hub dataset
    while the hub cannot be reached is a clear error rather than a long timeout. `streaming` (hub names
    and folders of data files): an IterableDataset read row by row as it is iterated, with `split`
    narrowed by a filter, and no row indices (None)."""
    import datasets

    from tinymvlm import hub

    path = Path(source).expanduser()
    if not path.exists() and not hub.reachable():
        hint = "; offline, pass --data with a local pairs file, image folder or saved dataset"
        raise TmvError(f"dataset '{source}' must be downloaded from the Hugging Face hub, which cannot be reached{hint}")
    try:
        if is_saved_dataset(path):
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(source, streaming=streaming)
    except Exception as exc:
        raise TmvError(f"could not load dataset '{source}': {first_line(exc)}") from exc
    name = f"{source} [{split or 'all'}]"
    if streaming:
        return (*select_stream_split(loaded, split, source), name)
    dataset, rows = select_split(loaded, split, source)
    return dataset, rows, name


def find_image_column(dataset, wanted: str | None, source: str) -> str:
    """The named image column, else the first column of the `Image` feature type, else a usual name."""
    found = wanted or next((n for n, f in dataset.features.items() if type(f).__name__ == "Image"), None)
    return pick_column(list(dataset.column_names), found, IMAGE_KEYS, "image", source)


def _named_split(loaded, split: str | None, source: str):
    """(dataset of the requested named split, or the only/first one; the split's synonyms; whether the
    dataset had a split of that name)."""
    import datasets

    wanted = SPLIT_SYNONYMS.get(split, (split,)) if split else None
    if not isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return loaded, wanted, False
    available = list(loaded.keys())
    chosen = next((n for n in (wanted or ("train",)) if n in loaded), None)
    if chosen is None and wanted and len(available) > 1:
        raise TmvError(f"dataset '{source}' has no split '{split}' (splits: {', '.join(available)})")
    return loaded[chosen or available[0]], wanted, chosen is not None


def select_split(loaded, split: str | None, source: str):
    """(dataset, row indices) for the requested split: a named split if the dataset has it, then
    narrowed by a `split` column when there is one (nlphuji/flickr30k keeps every row in 'test')."""
    dataset, wanted, named = _named_split(loaded, split, source)
    if wanted and "split" in dataset.column_names:
        column = dataset.select_columns(["split"])["split"]
        rows = [i for i, s in enumerate(column) if s in wanted]
        if rows or not named:
            if not rows:
                raise TmvError(f"dataset '{source}' has no rows with split '{split}' (values: {', '.join(sorted(set(map(str, column))))})")
            return dataset, rows
    return dataset, range(len(dataset))


def select_stream_split(loaded, split: str | None, source: str):
    """(stream, None): `select_split` for a streamed dataset. Without a split of that name, a `split`
    column narrows the rows as they stream past (there is no reading ahead to check it has any)."""
    stream, wanted, named = _named_split(loaded, split, source)
    if wanted and not named and "split" in (stream.column_names or ()):
        stream = stream.filter(lambda row: row["split"] in wanted)
    return stream, None
