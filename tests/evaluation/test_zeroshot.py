"""Zero-shot classification: accuracy by hand, labelled sources (IDX, class folders, label column)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinymvlm.errors import TmvError
from tinymvlm.evaluation.zeroshot import (
    FASHION_MNIST,
    classification_result,
    load_labelled,
    read_class_names,
    read_idx,
    spread,
)

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_accuracy_matches_a_hand_computation():
    classes = ["cat", "dog", "fox", "owl", "eel", "bat"]
    scores = np.array([[0.9, 0.1, 0.0, 0.0, 0.0, 0.0],    # cat -> cat (rank 1)
                       [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],    # dog -> cat (rank 2)
                       [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],    # eel: rank 5 -> top-5 hit, predicted cat
                       [0.1, 0.1, 0.1, 0.1, 0.1, 0.2],    # cat: rank 2 (bat higher), ties below don't count
                       [0.3, 0.3, 0.0, 0.0, 0.0, 0.0],    # dog ties cat at the top -> predicted dog
                       [0.0, 0.0, 0.0, 0.0, 0.0, 0.9]])   # owl: rank 2... only bat higher -> rank 2
    labels = np.array([0, 1, 4, 0, 1, 3])
    result = classification_result(scores, labels, classes)
    # ranks: 1, 2, 5, 2, 1, 2 -> top-1 2/6, top-5 6/6
    assert result.metrics["acc1"] == pytest.approx(100 * 2 / 6)
    assert result.metrics["acc5"] == pytest.approx(100.0)
    expected = np.zeros((6, 6), dtype=int)
    for true, pred in [(0, 0), (1, 0), (4, 0), (0, 5), (1, 1), (3, 5)]:
        expected[true, pred] += 1
    assert result.confusion.tolist() == expected.tolist()
    # per-class recall over classes with images: cat 1/2, dog 1/2, owl 0, eel 0 -> mean 25
    assert result.metrics["mean_per_class_recall"] == pytest.approx(25.0)
    assert result.per_class_recall()["fox"] is None
    worst = result.most_confused(2)
    assert worst[0][:3] == ("cat", "bat", 1) and worst[0][3] == pytest.approx(50.0)


def test_fewer_than_five_classes_has_no_top5():
    result = classification_result(np.array([[0.2, 0.8], [0.9, 0.1]]), np.array([1, 1]), ["a", "b"])
    assert set(result.metrics) == {"acc1", "mean_per_class_recall"} and result.metrics["acc1"] == 50


def test_idx_round_trip_and_bad_files(tmp_path):
    images = np.arange(3 * 4 * 5).reshape(3, 4, 5) % 256
    write_idx(tmp_path / "x.gz", images)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), images)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00"))
    with pytest.raises(TmvError, match="not an unsigned-byte IDX"):
        read_idx(tmp_path / "bad.gz")
    (tmp_path / "short.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02"))
    with pytest.raises(TmvError, match="bytes of data"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "notgz.gz").write_bytes(b"plain text")
    with pytest.raises(TmvError, match="cannot read"):
        read_idx(tmp_path / "notgz.gz")


def test_idx_folder_uses_fashion_names_and_splits(tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([9, 0, 3, 3]))
    labelled = load_labelled(str(folder), "test")
    assert labelled.classes == list(FASHION_MNIST) and labelled.labels.tolist() == [9, 0, 3, 3]
    image = labelled.images.open(0)
    assert image.mode == "RGB" and image.size == (28, 28)
    with pytest.raises(TmvError, match="train"):
        load_labelled(str(folder), "train")
    with pytest.raises(TmvError, match="no split 'val'"):
        load_labelled(str(folder), "val")


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_test_split():
    labelled = load_labelled(str(FASHION), "test")
    assert len(labelled) == 10_000 and labelled.classes[9] == "Ankle boot"
    assert np.bincount(labelled.labels).tolist() == [1000] * 10


def test_class_folders_and_stray_images(colour_folder, tmp_path):
    root = tmp_path / "classes"
    for name in ("red", "blue", "dark_green"):
        (root / name / "nested").mkdir(parents=True)
    shutil.copy(colour_folder / "red.png", root / "red" / "a.png")
    shutil.copy(colour_folder / "orange.png", root / "red" / "nested" / "b.png")
    shutil.copy(colour_folder / "blue.png", root / "blue" / "c.png")
    shutil.copy(colour_folder / "green.png", root / "dark_green" / "d.png")
    (root / "dark_green" / "broken.png").write_bytes(b"not a png")
    shutil.copy(colour_folder / "black.png", root / "stray.png")
    (root / "empty").mkdir()
    labelled = load_labelled(str(root))
    assert labelled.classes == ["blue", "dark green", "red"]
    assert labelled.labels.tolist() == [0, 1, 2, 2]
    skipped = {str(s.where): s.reason for s in labelled.skipped}
    assert skipped["stray.png"] == "not inside a class folder"
    assert skipped[str(Path("dark_green") / "broken.png")].startswith("cannot read image")
    assert len(skipped) == 2


def test_label_column_pairs_file(colour_folder, tmp_path):
    rows = ["image\tlabel", "red.png\twarm", "orange.png\twarm", "blue.png\tcold", "white.png\tcold", "white.png\twarm"]
    (colour_folder / "labels.tsv").write_text("\n".join(rows) + "\n")
    labelled = load_labelled(str(colour_folder / "labels.tsv"))
    assert labelled.classes == ["cold", "warm"] and labelled.labels.tolist() == [1, 1, 0]
    assert [s.reason for s in labelled.skipped] == ["several labels (cold, warm)"]
    names = tmp_path / "names.txt"
    names.write_text("cold\nwarm\nhot\n")
    numeric = colour_folder / "numeric.csv"
    numeric.write_text("path,class\nred.png,1\nblue.png,0\nyellow.png,2\n")
    labelled = load_labelled(str(numeric), label_column="class", classes=read_class_names(names))
    assert labelled.classes == ["cold", "warm", "hot"] and labelled.labels.tolist() == [1, 0, 2]
    with pytest.raises(TmvError, match="no label column 'kind'"):
        load_labelled(str(numeric), label_column="kind")


def test_single_class_or_nothing_is_an_error(tmp_path):
    (tmp_path / "only").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "x.png")
    with pytest.raises(TmvError, match="at least 2 classes"):
        load_labelled(str(tmp_path))
    with pytest.raises(TmvError, match="no usable labelled images"):
        load_labelled(str(tmp_path / "only"))


def test_spread_keeps_every_part_of_a_sorted_set():
    assert spread(10, 5) == [0, 2, 4, 6, 8]
    assert spread(3, 10) is None and spread(3, None) is None


def test_labelled_sources_follow_the_data_source_rules(colour_folder, offline_hub):
    """Column detection, error text and the offline check are the pairs loader's, in the label role."""
    (colour_folder / "classes.tsv").write_text("image\tclass\nred.png\twarm\nblue.png\tcold\n")
    assert load_labelled(str(colour_folder / "classes.tsv")).classes == ["cold", "warm"]
    (colour_folder / "colours.tsv").write_text("image\tcolour\nred.png\twarm\nblue.png\tcold\n")
    with pytest.raises(TmvError, match="cannot tell which column holds the label .*name it with --label-column"):
        load_labelled(str(colour_folder / "colours.tsv"))
    with pytest.raises(TmvError, match="must be downloaded from the Hugging Face hub, which cannot be reached"):
        load_labelled("someone/labelled-images")
    with pytest.raises(TmvError, match="no such file or folder"):
        load_labelled("./missing/labels")
