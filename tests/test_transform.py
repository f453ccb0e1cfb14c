"""Decoding: transparency on one fixed background, EXIF orientation, odd modes, tower preprocessing."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tinymvlm.transform import BACKGROUND, build_transforms, load_image


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
