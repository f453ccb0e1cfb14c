"""The device-decode indexing path (`gpu_decode`), run whole on the CPU: decode_jpeg takes a list of
JPEGs on the CPU too. Its vectors match the Pillow path's, and every file it cannot decode as Pillow
does (PNG, CMYK, EXIF-rotated, truncated, garbage) goes the CPU way with the CPU path's reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tinymvlm.data.pairs import FileImages
from tinymvlm.data.transform import build_transforms, load_image
from tinymvlm.inference.embed import ImageBatch, draft_size, image_batches
from tinymvlm.inference.gpu_decode import DeviceSteps, device_batches, device_decodable, draft_reduction
from tinymvlm.inference.runtime import Runtime
from tinymvlm.models.checkpoint import load_checkpoint

RT = Runtime("cpu", "fp32", batch_size=4, workers=0)


def photo(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour fields with edges and fine texture: what a photo's spectrum looks like to a resize."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        (fx, fy), phase = rng.uniform(1, 6, 2) / max(width, height), rng.uniform(0, 6)
        pixels[..., c] = 128 + 90 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
    cx, cy, r = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height, 0.2 * min(width, height)
    pixels[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    pixels += rng.normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """JPEGs the device decodes (several sizes, grey, progressive) and files it must leave to Pillow."""
    folder = tmp_path_factory.mktemp("photos")
    out = {}

    def save(name: str, image: Image.Image, **options) -> None:
        out[name] = folder / name
        image.save(out[name], **options)

    save("large.jpg", photo(2000, 1500, 0), quality=90)
    save("portrait.jpg", photo(480, 640, 1), quality=85)
    save("odd.jpg", photo(301, 257, 2), quality=95)
    save("small.jpg", photo(120, 90, 3), quality=90)
    save("grey.jpg", photo(640, 480, 4).convert("L"), quality=90)
    save("progressive.jpg", photo(800, 600, 5), quality=90, progressive=True)
    save("cmyk.jpg", photo(640, 480, 6).convert("CMYK"), quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    save("rotated.jpg", photo(640, 480, 7), quality=90, exif=exif)
    save("picture.png", photo(500, 400, 8))
    whole = (folder / "large.jpg").read_bytes()
    out["truncated.jpg"] = folder / "truncated.jpg"
    out["truncated.jpg"].write_bytes(whole[:len(whole) // 2])
    out["garbage.jpg"] = folder / "garbage.jpg"
    out["garbage.jpg"].write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" * 10 + b"\xff\xd9")
    out["missing.jpg"] = folder / "missing.jpg"
    return out


@pytest.fixture(scope="module")
def builtin_model(builtin_checkpoint):
    model, _, _ = load_checkpoint(builtin_checkpoint)
    return model


def both_paths(model, paths: list[Path], draft: bool, runtime: Runtime = RT):
    cpu = list(image_batches(model, FileImages(paths), len(paths), runtime, draft=draft, keep_going=True))
    dev = [ImageBatch(*b) for b in device_batches(model, FileImages(paths), len(paths), runtime,
                                                  draft_size(model.data_config) if draft else None, True, "cpu")]
    return cpu, dev


def flat(batches):
    positions = [p for b in batches for p in b.positions]
    vectors = np.concatenate([b.vectors for b in batches])
    return positions, vectors, [f for b in batches for f in b.failures]


def test_which_files_the_device_decodes(photos):
    decodable = {name for name, path in photos.items() if path.exists() and device_decodable(path.read_bytes())}
    assert decodable == {"large.jpg", "portrait.jpg", "odd.jpg", "small.jpg", "grey.jpg", "progressive.jpg"}


def test_draft_reduction_is_pillows(photos):
    for name in ("large.jpg", "portrait.jpg", "odd.jpg", "small.jpg"):
        with Image.open(photos[name]) as image:
            full = image.size
            image.draft("RGB", (256, 256))
            scale = full[0] // image.size[0] if image.size[0] < full[0] else 1
            assert image.size == tuple(-(-side // scale) for side in full)
        assert draft_reduction(*full, (256, 256)) == scale, name


@pytest.mark.parametrize("draft", [False, True])
def test_device_pixels_match_pillows(builtin_model, photos, draft):
    """Preprocessed pixels on the device path are the Pillow path's within resampling noise."""
    from torchvision.io import ImageReadMode, decode_jpeg

    transform = build_transforms(builtin_model.data_config, training=False)
    steps = DeviceSteps(transform)
    size = (256, 256) if draft else None
    for name in ("large.jpg", "portrait.jpg", "odd.jpg", "grey.jpg", "progressive.jpg"):
        reference = transform(load_image(photos[name], size))
        image = decode_jpeg(torch.frombuffer(bytearray(photos[name].read_bytes()), dtype=torch.uint8),
                            mode=ImageReadMode.RGB)
        reduction = draft_reduction(image.shape[2], image.shape[1], size) if draft else 1
        pixels = steps.batch(steps.image(image, reduction)[None])[0]
        assert pixels.shape == reference.shape
        diff = (pixels - reference).abs()  # normalised units: 2/255 is one grey level here
        assert diff.mean() < 0.02 and torch.nn.functional.cosine_similarity(
            pixels.flatten(), reference.flatten(), dim=0) > 0.999, name


ALL = ("large.jpg", "portrait.jpg", "odd.jpg", "small.jpg", "grey.jpg", "progressive.jpg", "cmyk.jpg", "rotated.jpg",
       "picture.png")


@pytest.mark.parametrize("draft, names", [(True, ALL), (False, ("large.jpg", "grey.jpg", "cmyk.jpg", "picture.png"))])
def test_device_path_embeds_as_the_cpu_path(builtin_model, photos, draft, names):
    """Indexing decodes in draft mode; evaluation in full (a few files suffice there)."""
    paths = [photos[n] for n in names]
    cpu, dev = both_paths(builtin_model, paths, draft)
    cpu_pos, cpu_vec, _ = flat(cpu)
    dev_pos, dev_vec, dev_fail = flat(dev)
    assert dev_pos == cpu_pos == list(range(len(paths))) and not dev_fail
    assert [b.positions for b in dev] == [b.positions for b in cpu]  # the same batches
    cosine = (cpu_vec * dev_vec).sum(axis=1)
    assert cosine.min() >= 0.999, dict(zip([p.name for p in paths], cosine.round(5)))
    fallbacks = [paths.index(photos[n]) for n in ("cmyk.jpg", "rotated.jpg", "picture.png") if n in names]
    np.testing.assert_allclose(dev_vec[fallbacks], cpu_vec[fallbacks], atol=1e-5)  # decoded by Pillow alike


def test_bad_files_are_skipped_with_the_cpu_paths_reasons(tiny_checkpoint, photos):
    model, _, _ = load_checkpoint(tiny_checkpoint)
    paths = [photos[n] for n in ("small.jpg", "truncated.jpg", "garbage.jpg", "missing.jpg", "odd.jpg")]
    cpu, dev = both_paths(model, paths, draft=True)
    _, _, cpu_fail = flat(cpu)
    dev_pos, _, dev_fail = flat(dev)
    assert dev_fail == cpu_fail and [p for p, _ in dev_fail] == [1, 2, 3]
    assert "truncated" in dict(dev_fail)[1]
    assert dev_pos == [0, 4]


def test_a_jpeg_decode_jpeg_refuses_goes_to_pillow(tiny_checkpoint, photos, monkeypatch):
    """A JPEG that passes the header checks but that decode_jpeg refuses is decoded by Pillow, and its
    batch still decodes on the device."""
    import torchvision.io

    model, _, _ = load_checkpoint(tiny_checkpoint)
    refused = photos["odd.jpg"].read_bytes()
    real = torchvision.io.decode_jpeg

    def picky(data, **kwargs):
        items = data if isinstance(data, list) else [data]
        if any(bytes(d.numpy()) == refused for d in items):
            raise RuntimeError("Unsupported JPEG")
        return real(data, **kwargs)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", picky)
    paths = [photos[n] for n in ("small.jpg", "odd.jpg", "portrait.jpg")]
    cpu, dev = both_paths(model, paths, draft=True)
    assert flat(dev)[0] == [0, 1, 2] and not flat(dev)[2]
    np.testing.assert_allclose(flat(dev)[1][1], flat(cpu)[1][1], atol=1e-5)


def test_the_runtime_chooses_the_path(monkeypatch):
    assert not Runtime("cpu").decodes_on_device  # never on the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert Runtime("cuda", "fp32").decodes_on_device
    assert not Runtime("cuda", "fp32", device_decode=False).decodes_on_device
    monkeypatch.setenv("TMV_DEVICE_DECODE", "0")
    assert not Runtime("cuda", "fp32").decodes_on_device


def test_tmv_index_on_the_device_path_skips_and_embeds_as_on_the_cpu(tiny_checkpoint, photos, tmp_path, monkeypatch):
    """The whole `Index.add` through image_batches' device branch (decoding on the CPU here)."""
    from conftest import catalogue
    from tinymvlm.index import Index

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("small.jpg", "odd.jpg", "truncated.jpg", "garbage.jpg", "picture.png", "grey.jpg"):
        (folder / name).write_bytes(photos[name].read_bytes())
    reports, vectors = [], []
    for device_path in (False, True):
        monkeypatch.setattr(Runtime, "decodes_on_device", property(lambda self: device_path))
        with Index(tmp_path / f"index{device_path}", checkpoint=tiny_checkpoint, runtime=RT) as index:
            reports.append(index.add([folder], runtime=RT))
        vectors.append(catalogue(tmp_path / f"index{device_path}"))
    cpu, dev = reports
    assert sorted(dev.failed) == sorted(cpu.failed) and len(cpu.failed) == 2
    assert dev.embedded == cpu.embedded == 4 and vectors[0].keys() == vectors[1].keys()
    for label in vectors[0]:
        assert float(np.dot(vectors[0][label], vectors[1][label])) > 0.999, label
