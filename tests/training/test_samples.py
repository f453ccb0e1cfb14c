"""`--samples N`: a seeded sample of N images of any source, taken before the validation split."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner
from tinymvlm.cli.main import cli

import tinymvlm.data.pairs as data
from tinymvlm.data.pairs import load_pairs
from tinymvlm.training.config import TrainConfig
from tinymvlm.training.splits import load_datasets, load_validation, sample


def _more_images(folder: Path, count: int) -> None:
    from PIL import Image

    for i in range(count):
        Image.new("RGB", (40, 40), (i * 9 % 256, i * 41 % 256, i * 83 % 256)).save(folder / f"extra{i:02d}.png")
        (folder / f"extra{i:02d}.txt").write_text(f"extra picture {i}\n", encoding="utf-8")


def test_the_same_seed_gives_the_same_sample(colour_folder):
    _more_images(colour_folder, 16)
    pairs = load_pairs(str(colour_folder), check_images=False)
    first, again, other = (sample(pairs, 10, seed).keys for seed in (3, 3, 4))
    assert len(first) == 10 and len(set(first)) == 10 and set(first) <= set(pairs.keys)
    assert first == again
    assert first != other


def test_only_sampled_images_are_decoded_and_unreadable_ones_are_replaced(colour_folder, monkeypatch):
    _more_images(colour_folder, 16)
    (colour_folder / "broken.png").write_bytes(b"not an image")
    (colour_folder / "broken.txt").write_text("a broken picture\n", encoding="utf-8")
    opened: list[str] = []
    load = data.load_image
    monkeypatch.setattr(data, "load_image", lambda path, draft=None: (opened.append(Path(path).name), load(path, draft))[1])
    pairs = load_pairs(str(colour_folder), check_images=False)
    assert not opened
    for seed in range(20):  # a seed whose sample draws the broken image
        opened.clear()
        drawn = sample(pairs, 5, seed)
        if "broken.png" in opened:
            break
    assert "broken.png" in opened and len(opened) == 6  # five drawn, one of them replaced
    assert len(drawn) == 5 and "broken.png" not in drawn.keys
    assert any("broken.png" in str(s) for s in drawn.skipped)


def test_the_validation_split_is_taken_from_the_sample(colour_folder):
    _more_images(colour_folder, 16)
    cfg = TrainConfig(data=str(colour_folder), samples=12, val_fraction=0.4, seed=1)
    train, val = load_datasets(cfg)
    chosen = sample(load_pairs(str(colour_folder), check_images=False), 12, seed=1).keys
    assert sorted(train.keys + val.keys) == sorted(chosen)
    assert len(val) and len(train)
    assert load_validation(cfg).keys == val.keys  # what `tmv eval` reads of the run


def test_more_samples_than_images_uses_them_all_with_a_one_line_notice(tiny_model_config, colour_folder, tmp_path):
    flags = ["--image-model", tiny_model_config.image_model, "--text-model", tiny_model_config.text_model,
             "--no-pretrained", "--embed-dim", "16", "--image-size", "32", "--workers", "0", "--epochs", "1",
             "--batch-size", "4", "--val-fraction", "0"]
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(colour_folder), "--samples", "100", "--out-dir", str(out),
                                      *flags])
    assert result.exit_code == 0, result.output
    notices = [line for line in result.output.splitlines() if "--samples" in line]
    assert notices == [f"--samples 100 is more than the 8 images of {colour_folder}: training on all of them"]
    assert "training on 8 images" in result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["samples"] == 100  # the run records it


def _parquet_dataset(folder: Path, shards: int, rows: int) -> Path:
    """A folder of data files, as a large dataset downloaded from the hub is laid out: `shards`
    parquet shards of `rows` rows, each an encoded PNG with its caption."""
    import io

    import datasets
    from PIL import Image

    (folder / "data").mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    for s in range(shards):
        records = []
        for i in range(rows):
            buffer = io.BytesIO()
            Image.new("RGB", (12, 12), (s * 30 % 256, i * 5 % 256, 77)).save(buffer, "PNG")
            records.append({"image": {"bytes": buffer.getvalue(), "path": None}, "caption": f"shard {s} picture {i}"})
        datasets.Dataset.from_list(records, features=features).to_parquet(folder / "data" / f"train-{s:05d}-of-{shards:05d}.parquet")
    return folder


def test_a_sample_of_a_dataset_is_streamed_reading_only_a_part_of_it(tmp_path):
    import datasets

    datasets.disable_progress_bars()
    source = _parquet_dataset(tmp_path / "big", shards=8, rows=40)
    notices: list[str] = []
    cfg = TrainConfig(data=str(source), samples=10, val_fraction=0.3, seed=3)
    train, val = load_datasets(cfg, notices.append)
    assert len(train) + len(val) == 10 and len(set(train.keys + val.keys)) == 10
    assert len(notices) == 1 and notices[0].startswith("--samples 10: drawn from the first ")
    rows_read = int(notices[0].split("the first ")[1].split()[0])
    assert 10 <= rows_read <= 40  # about twice the sample plus the loader's read-ahead, not the 320 rows
    assert train.captions[0][0].startswith("shard ") and train.images.open(0).size == (12, 12)
    again, _ = load_datasets(cfg)
    other, _ = load_datasets(TrainConfig(data=str(source), samples=10, val_fraction=0.3, seed=4))
    assert again.keys == train.keys and other.keys != train.keys
    assert load_validation(cfg).keys == val.keys  # what `tmv eval` reads of the run


def test_a_streamed_sample_larger_than_the_dataset_uses_all_of_it(tmp_path):
    import datasets

    datasets.disable_progress_bars()
    source = _parquet_dataset(tmp_path / "small", shards=2, rows=6)
    notices: list[str] = []
    train, val = load_datasets(TrainConfig(data=str(source), samples=50, val_fraction=0), notices.append)
    assert len(train) == 12 and val is None
    assert notices == [f"--samples 50 is more than the 12 images of {source}: training on all of them"]
