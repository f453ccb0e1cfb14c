"""The validation split is a property of the images themselves: the same validation set in another
process (another PYTHONHASHSEED), from another working folder, and with the pairs file in another
folder (so every image's path in it is spelled differently), and for the same images held in a
dataset instead of files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import noise_images
from tinymvlm.data.pairs import load_pairs

SPLIT_SCRIPT = """
import json, sys
from pathlib import Path
from tinymvlm.training.config import TrainConfig
from tinymvlm.training.splits import load_datasets, load_validation
cfg = TrainConfig(data=sys.argv[1], val_fraction=0.3)
train, val = load_datasets(cfg)
alone = load_validation(cfg)
names = lambda pairs: sorted(Path(p).name for p in pairs.images.paths)
print(json.dumps({"train": names(train), "val": names(val), "eval": names(alone)}))
"""


@pytest.fixture(scope="module")
def stamps(tmp_path_factory) -> Path:
    """40 distinct images in one folder, and two pairs files naming them from different folders."""
    root = tmp_path_factory.mktemp("split")
    images = noise_images(root / "images", count=40)
    rows = [(p.name, p.with_suffix(".txt").read_text().strip()) for p in sorted(images.glob("*.png"))]
    near, far = root / "near", root / "a" / "b" / "far"
    for folder, prefix in ((near, "../images/"), (far, "../../../images/")):
        folder.mkdir(parents=True)
        (folder / "pairs.tsv").write_text("".join(f"{prefix}{n}\t{c}\n" for n, c in rows), encoding="utf-8")
    return root


def _split_in_a_process(pairs_file: Path, cwd: Path, hash_seed: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run([sys.executable, "-c", SPLIT_SCRIPT, str(pairs_file)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_same_validation_set_in_every_process_folder_and_pairs_file(stamps):
    runs = [_split_in_a_process(stamps / "near" / "pairs.tsv", stamps, "1"),
            _split_in_a_process(stamps / "a" / "b" / "far" / "pairs.tsv", stamps / "a", "2"),
            _split_in_a_process(stamps / "a" / "b" / "far" / "pairs.tsv", stamps / "near", "3")]
    first = runs[0]
    assert 0 < len(first["val"]) < 40 and len(first["train"]) + len(first["val"]) == 40
    assert not set(first["train"]) & set(first["val"])
    assert first["eval"] == first["val"]  # `tmv eval` reads the side training held out
    assert all(run == first for run in runs[1:]), runs


def test_copies_of_one_image_land_on_one_side_and_a_dataset_splits_as_its_files(stamps, tmp_path):
    """The key is the image's bytes: a copy under another name joins the original, and the same
    images stored in a saved dataset (as their encoded bytes) are held out as the files are."""
    import datasets

    pairs = load_pairs(str(stamps / "near" / "pairs.tsv"))
    _, val = pairs.split(0.3)
    held = {Path(p).name for p in val.images.paths}
    copies = tmp_path / "copies"
    copies.mkdir()
    for path in pairs.images.paths:
        (copies / f"copy-of-{path.name}").write_bytes(path.read_bytes())
        (copies / f"copy-of-{path.name}").with_suffix(".txt").write_text("a copy\n", encoding="utf-8")
    _, copied_val = load_pairs(str(copies)).split(0.3)
    assert {Path(p).name.removeprefix("copy-of-") for p in copied_val.images.paths} == held
    rows = {"image": [{"bytes": p.read_bytes(), "path": None} for p in pairs.images.paths],
            "caption": [c[0] for c in pairs.captions], "filename": [p.name for p in pairs.images.paths]}
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "filename": datasets.Value("string")})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    _, dataset_val = load_pairs(str(tmp_path / "saved")).split(0.3)
    assert set(dataset_val.keys) == held
