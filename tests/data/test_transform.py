"""Decoding: transparency on one fixed background, EXIF orientation, odd modes, tower preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tinymvlm.data.transform import BACKGROUND, EvalTransform, build_transforms, load_image


def test_transparent_pixels_become_the_fixed_background_whatever_hides_under_them(tmp_path):
    results = []
    for i, hidden in enumerate([(0, 0, 0, 0), (255, 255, 255, 0), (13, 200, 77, 0)]):
        image = Image.new("RGBA", (8, 8), hidden)
        image.putpixel((0, 0), (255, 0, 0, 255))
        image.save(tmp_path / f"{i}.png")
        results.append(np.asarray(load_image(tmp_path / f"{i}.png")))
    for array in results:
        assert tuple(array[4, 4]) == BACKGROUND
        assert tuple(array[0, 0]) == (255, 0, 0)


def test_palette_with_transparency_and_grey_alpha(tmp_path):
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png", transparency=0)
    assert tuple(np.asarray(load_image(tmp_path / "p.png"))[0, 0]) == BACKGROUND
    Image.new("LA", (4, 4), (0, 0)).save(tmp_path / "la.png")
    assert tuple(np.asarray(load_image(tmp_path / "la.png"))[0, 0]) == BACKGROUND


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (20, 40)


def test_sixteen_bit_greyscale_keeps_its_contrast(tmp_path):
    array = np.array([[0, 65535]], dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "g16.png")
    out = np.asarray(load_image(tmp_path / "g16.png"))
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255


def test_preprocessing_follows_the_towers_data_config():
    config = {"input_size": [3, 24, 24], "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
              "crop_pct": 1.0, "crop_mode": "center"}
    white = build_transforms(config, training=False)(Image.new("RGB", (60, 30), (255, 255, 255)))
    assert white.shape == (3, 24, 24)
    assert float(white.min()) > 0.99  # (1 - 0.5) / 0.5: the tower's statistics, not ImageNet's
    train = build_transforms(config, training=True)(Image.new("RGB", (60, 30), (255, 255, 255)))
    assert train.shape == (3, 24, 24)


PHOTO_CONFIGS = [
    {"input_size": [3, 224, 224], "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 0.875,
     "crop_mode": "center"},
    {"input_size": [3, 64, 64], "interpolation": "bilinear", "mean": [0.485, 0.456, 0.406],
     "std": [0.229, 0.224, 0.225], "crop_pct": 1.0, "crop_mode": "center"},
]


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (2000, 1500), (300, 1000), (256, 256), (224, 224), (9, 7)])
@pytest.mark.parametrize("config", PHOTO_CONFIGS, ids=["bicubic-224", "bilinear-64"])
def test_the_split_eval_transform_gives_timms_pixels_on_photos(size, config):
    from skimage import data

    photo = Image.fromarray(data.chelsea()).resize(size, Image.BICUBIC)
    transform = EvalTransform(config)
    assert transform.split
    per_image = transform(photo)
    assert per_image.dtype == torch.uint8  # what decoding workers hand over: a quarter of the float bytes
    split = transform.normalise(per_image[None])[0]
    whole = transform.timm(photo)
    assert split.shape == whole.shape and split.dtype == whole.dtype
    levels = float((split - whole).abs().max()) * 255 * min(config["std"])
    assert levels <= 2.01, f"{size}: {levels:.2f} levels away from timm's pixels"


def test_an_eval_transform_of_another_shape_runs_whole_as_timm_built_it():
    config = dict(PHOTO_CONFIGS[0], crop_pct=1.25)  # the centre crop pads: not the resize-then-crop shape
    transform = EvalTransform(config)
    photo = Image.new("RGB", (50, 40), (10, 200, 30))
    assert not transform.split
    out = transform.normalise(transform(photo)[None])[0]
    assert torch.equal(out, transform.timm(photo))
