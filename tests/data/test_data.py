"""Data sources: pairs files, image folders with sidecar captions, Hugging Face datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tinymvlm import hub
from tinymvlm.data.pairs import load_pairs, require_pairs
from tinymvlm.errors import TmvError


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "img"
    folder.mkdir()
    for i, colour in enumerate(["red", "green", "blue"]):
        Image.new("RGB", (20, 20), (60 * i, 100, 200 - 60 * i)).save(folder / f"{colour}.png")
    return folder


def test_tsv_without_header_groups_captions_by_image(tmp_path, images):
    pairs_file = tmp_path / "pairs.tsv"
    pairs_file.write_text("img/red.png\ta red square\nimg/green.png\ta green square\nimg/red.png\tsomething red\n")
    pairs = load_pairs(str(pairs_file))
    assert pairs.keys == ["img/red.png", "img/green.png"]
    assert pairs.captions == [["a red square", "something red"], ["a green square"]]
    assert pairs.skipped == []


def test_csv_with_header_quotes_and_image_root(tmp_path, images):
    pairs_file = tmp_path / "sub" / "pairs.csv"
    pairs_file.parent.mkdir()
    pairs_file.write_text('caption,filepath\n"a red, bright square",red.png\n"say ""blue""",blue.png\n')
    pairs = load_pairs(str(pairs_file), image_root=str(images))
    assert pairs.captions == [["a red, bright square"], ['say "blue"']]
    assert pairs.keys == ["red.png", "blue.png"]


def test_jsonl_with_caption_lists(tmp_path, images):
    pairs_file = tmp_path / "pairs.jsonl"
    rows = [{"image": "img/red.png", "captions": ["one", "two"]}, {"image": "img/blue.png", "captions": "three"}]
    pairs_file.write_text("\n".join(json.dumps(r) for r in rows))
    pairs = load_pairs(str(pairs_file))
    assert pairs.captions == [["one", "two"], ["three"]]


def test_bad_rows_are_skipped_with_row_numbers(tmp_path, images):
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    pairs_file = tmp_path / "pairs.tsv"
    pairs_file.write_bytes(
        "\ufeffimg/red.png\ta red square\r\n".encode()      # BOM + CRLF: fine
        + b"img/missing.png\tnothing here\n"                 # row 2: missing file
        + b"img/green.png\t   \n"                            # row 3: empty caption
        + b"img/blue.png\ttoo\tmany\n"                       # row 4: extra column
        + b"img/blue.png\t\xff\xfe bad bytes\n"              # row 5: invalid UTF-8
        + b"img/red.png\ta red square\n"                     # row 6: duplicate of row 1
        + b"img/broken.png\ta broken file\n"                 # row 7: corrupt image
        + b"img/blue.png\ta blue square\n"
    )
    pairs = load_pairs(str(pairs_file))
    assert pairs.keys == ["img/red.png", "img/blue.png"]
    reasons = {s.where.rsplit(":", 1)[-1]: s.reason for s in pairs.skipped if ":" in s.where}
    assert "image not found" in reasons["2"]
    assert reasons["3"] == "empty caption"
    assert "expected 2 columns, found 3" in reasons["4"]
    assert "UTF-8" in reasons["5"]
    assert "duplicate of row 1" in reasons["6"]
    assert any("cannot read image" in s.reason for s in pairs.skipped)


def test_nothing_usable_is_a_clear_error(tmp_path):
    pairs_file = tmp_path / "pairs.tsv"
    pairs_file.write_text("nope.png\tcaption\n")
    with pytest.raises(TmvError, match="no usable image-caption pairs"):
        require_pairs(load_pairs(str(pairs_file)))


def test_missing_data_path_is_a_clear_error(tmp_path):
    with pytest.raises(TmvError, match="no such file or folder"):
        load_pairs(str(tmp_path / "absent.tsv"))


def test_image_folder_with_sidecars(colour_folder):
    (colour_folder / "nocaption.png").write_bytes((colour_folder / "red.png").read_bytes())
    pairs = load_pairs(str(colour_folder))
    assert len(pairs) == 8
    assert pairs.captions[pairs.keys.index("red.png")] == ["a plain red square"]
    assert [s.where for s in pairs.skipped] == ["nocaption.png"]


def test_validation_split_is_stable_and_disjoint(colour_folder):
    pairs = load_pairs(str(colour_folder))
    train, val = pairs.split(0.5)
    again_train, again_val = pairs.subset(list(reversed(range(len(pairs))))).split(0.5)
    assert 0 < len(val) < len(pairs)  # a split, not everything on one side
    assert set(train.keys) | set(val.keys) == set(pairs.keys)
    assert not set(train.keys) & set(val.keys)
    assert set(val.keys) == set(again_val.keys)
    for gone in (val.keys[0], train.keys[0]):  # other rows leave or change: every image keeps its side
        fewer_train, fewer_val = pairs.subset([i for i, k in enumerate(pairs.keys) if k != gone]).split(0.5)
        assert (set(fewer_train.keys), set(fewer_val.keys)) == (set(train.keys) - {gone}, set(val.keys) - {gone})
    assert [val.captions[val.keys.index(k)] for k in val.keys] == [pairs.captions[pairs.keys.index(k)] for k in val.keys]


def _flickr_rows(n: int) -> dict:
    return {
        "image": [Image.new("RGB", (16, 16), (i * 20, 50, 90)) for i in range(n)],
        "caption": [[f"image {i} caption {j}" for j in range(5)] for i in range(n)],
        "sentids": [[str(5 * i + j) for j in range(5)] for i in range(n)],
        "split": ["train", "train", "train", "val", "test", "test"][:n],
        "img_id": [str(i) for i in range(n)],
        "filename": [f"{i}.jpg" for i in range(n)],
    }


def test_flickr30k_nlphuji_schema(tmp_path):
    """One 'test' split holding every row, a `split` column, five captions per image."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string")),
                                  "sentids": datasets.Sequence(datasets.Value("string")), "split": datasets.Value("string"),
                                  "img_id": datasets.Value("string"), "filename": datasets.Value("string")})
    ds = datasets.DatasetDict({"test": datasets.Dataset.from_dict(_flickr_rows(6), features=features)})
    ds.save_to_disk(tmp_path / "flickr")
    train = load_pairs(str(tmp_path / "flickr"), split="train")
    assert len(train) == 3 and all(len(c) == 5 for c in train.captions)
    assert train.keys == ["0", "1", "2"]
    test = load_pairs(str(tmp_path / "flickr"), split="test")
    assert test.captions[0][0] == "image 4 caption 0"
    assert test.images.open(1).size == (16, 16)
    val = load_pairs(str(tmp_path / "flickr"), split="validation")
    assert val.keys == ["3"]


def test_flickr30k_anymodal_schema(tmp_path):
    """Real splits train/validation/test, captions in `alt_text`."""
    import datasets

    rows = _flickr_rows(6)
    rows["alt_text"] = rows.pop("caption")
    full = datasets.Dataset.from_dict(rows)
    ds = datasets.DatasetDict({"train": full.select(range(3)), "validation": full.select([3]), "test": full.select([4, 5])})
    ds.save_to_disk(tmp_path / "anymodal")
    val = load_pairs(str(tmp_path / "anymodal"), split="val")
    assert val.captions == [[f"image 3 caption {j}" for j in range(5)]]
    with pytest.raises(TmvError, match="no caption column 'nope'"):
        load_pairs(str(tmp_path / "anymodal"), split="train", caption_column="nope")


def test_hub_dataset_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    hub.reachable.cache_clear()
    with pytest.raises(TmvError, match="cannot be reached"):
        load_pairs(None)


def test_skipped_rows_travel_with_a_subset_and_the_training_side_of_a_split(tmp_path, images):
    pairs_file = tmp_path / "pairs.tsv"
    pairs_file.write_text("img/red.png\tred\nimg/green.png\tgreen\nimg/blue.png\tblue\nimg/gone.png\tgone\nimg/red.png\t \n")
    pairs = load_pairs(str(pairs_file))
    assert [s.reason.split(":")[0] for s in pairs.skipped] == ["image not found", "empty caption"]
    assert pairs.subset([1]).skipped == pairs.skipped
    train, val = pairs.split(0.5)
    assert train.skipped == pairs.skipped and val.skipped == []  # reported once, with the training data
