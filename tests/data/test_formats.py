"""Every picture format tmv reads decodes through `load_image` to the picture that was written, upright;
RAW files from their preview or a half-size demosaic; the names that count as pictures come from the
installed decoders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers.formats import NAMES, make_folder, pattern, write_dng
from tinymvlm.data.transform import load_image
from tinymvlm.image_files import FILE_KINDS, file_kind, is_image_name, iter_image_files, picture_extensions

LOSSLESS = {"lossless.png", "scan.tiff", "paint.bmp", "still.gif", "moving.gif", "moving.png", "kookaburras.pnm",
            "parrot-looks-into-the-camera.ppm", "icon.ico", "targa.tga", "pages.tiff"}
GREY = {"parrot-and-flowers.pgm", "deep16.tif"}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("formats"))


@pytest.mark.parametrize("name", NAMES)
def test_each_format_decodes_to_the_picture_written(pictures, name):
    want = np.asarray(pattern(NAMES.index(name)), dtype=np.float64)
    got = np.asarray(load_image(pictures[name]), dtype=np.float64)
    if name == "camera.dng":  # a half-size demosaic of the mosaic: half the size, camera colours
        want = np.asarray(pattern(NAMES.index(name)).resize((32, 24), Image.Resampling.BOX), dtype=np.float64)
    assert got.shape == want.shape
    if name in GREY:
        want = np.asarray(pattern(NAMES.index(name)).convert("L").convert("RGB"), dtype=np.float64)
    if name == "magpie.pbm":  # one bit: black where the grey is dark
        want = np.where(np.asarray(pattern(NAMES.index(name)).convert("1").convert("RGB")) > 0, 255.0, 0.0)
    error = np.abs(got - want).mean()
    limit = 0.5 if name in LOSSLESS | GREY | {"magpie.pbm"} else 40 if name == "camera.dng" else 12
    assert error <= limit, f"{name}: mean error {error:.1f}"
    if name == "camera.dng":  # the colours survive demosaicing: each block's strongest channel is kept
        assert np.mean(got.argmax(axis=2) == want.argmax(axis=2)) > 0.8


def test_names_are_pictures_as_far_as_the_installed_decoders_read():
    for ext in [".jpg", ".jp2", ".pnm", ".pbm", ".pgm", ".ppm", ".ico", ".tga", ".heic", ".heif", ".avif",
                ".dng", ".cr2", ".nef", ".arw", ".psd", ".qoi", ".mpo"]:
        assert ext in picture_extensions(), ext
    for ext in [".pdf", ".eps", ".mpg", ".mpeg", ".fli", ".mp4", ".txt", ".h5", ".grib", ".wmf", ".xmp", ""]:
        assert ext not in picture_extensions(), ext
    assert is_image_name("IMG_0001.HEIC") and is_image_name("DSC_1.NEF") and not is_image_name("notes.txt")


def test_passed_over_files_have_a_kind(tmp_path):
    for name in ["clip.MP4", "holiday.mov", "00001.MTS", "notes.txt", "scan.pdf", "song.mp3", "drawing.svg",
                 "IMG_1.xmp", "photo.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    others: list = []
    found = list(iter_image_files(tmp_path, passed_over=others))
    assert [p.name for p in found] == ["photo.jpg"]
    kinds = {p.name: file_kind(p.name) for p in others}
    assert kinds == {"clip.MP4": "video", "holiday.mov": "video", "00001.MTS": "video", "notes.txt": "document",
                     "scan.pdf": "document", "song.mp3": "audio file", "drawing.svg": "picture of an unread format",
                     "IMG_1.xmp": "other file"}
    assert set(kinds.values()) <= set(FILE_KINDS)
    one: list = []
    assert list(iter_image_files(tmp_path / "notes.txt", passed_over=one)) == [] and one == [tmp_path / "notes.txt"]


def two_halves(size=(96, 64)) -> Image.Image:
    """Left half red, right half blue: which way is up shows after any rotation."""
    image = Image.new("RGB", size, (30, 40, 220))
    image.paste(Image.new("RGB", (size[0] // 2, size[1]), (220, 30, 30)))
    return image


def test_raw_demosaic_applies_the_cameras_orientation(tmp_path):
    write_dng(tmp_path / "sideways.dng", two_halves(), orientation=6)  # "rotate 90° clockwise to display"
    image = np.asarray(load_image(tmp_path / "sideways.dng"), dtype=int)
    assert image.shape == (48, 32, 3)  # half size, upright: the left half is now on top
    top, bottom = image[:20].mean(axis=(0, 1)), image[-20:].mean(axis=(0, 1))
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]


def test_raw_preview_is_used_when_large_enough(tmp_path):
    """The preview (green and white) differs from the raw data (red and blue) here, so the pixels tell
    which one was decoded."""
    preview = Image.new("RGB", (96, 64), (20, 200, 20))
    preview.paste(Image.new("RGB", (48, 64), (250, 250, 250)))
    for jpeg in (True, False):  # cameras embed JPEGs; some DNG writers an uncompressed RGB preview
        path = tmp_path / f"p{jpeg}.dng"
        write_dng(path, two_halves(), orientation=6, preview=preview, preview_jpeg=jpeg)
        for draft in [(32, 32), None]:  # a preview at least the draft size, or what half-size gives
            image = np.asarray(load_image(path, draft), dtype=int)
            assert image.shape[0] > image.shape[1]  # upright
            assert image[:10].mean() > 240 and image[-10:, :, 1].mean() > 190 > image[-10:, :, 0].mean()
        demosaiced = np.asarray(load_image(path, (80, 80)), dtype=int)  # the preview is too small: raw data
        assert demosaiced.shape == (48, 32, 3) and demosaiced[:20, :, 0].mean() > 150


@pytest.mark.parametrize("name", NAMES)
def test_a_corrupt_file_of_each_kind_fails_with_a_reason(pictures, tmp_path, name):
    data = pictures[name].read_bytes()
    broken = tmp_path / name
    broken.write_bytes(data[: max(16, len(data) // 3)])
    with pytest.raises(Exception) as caught:
        load_image(broken)
    assert str(caught.value).strip()
    garbage = tmp_path / f"garbage-{name}"
    garbage.write_bytes(b"this is not a picture\n" * 10)
    with pytest.raises(Exception) as caught:
        load_image(garbage)
    assert str(caught.value).strip()


def test_heic_orientation_is_applied(tmp_path):
    import pillow_heif

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x0112] = 6
    two_halves().save(tmp_path / "sideways.heic", "HEIF", exif=exif.tobytes(), quality=95)
    two_halves().save(tmp_path / "sideways.avif", "AVIF", exif=exif.tobytes(), quality=95)
    for name in ("sideways.heic", "sideways.avif"):
        image = np.asarray(load_image(tmp_path / name), dtype=int)
        assert image.shape == (96, 64, 3), name
        assert image[:30, :, 0].mean() > 150 > image[:30, :, 2].mean(), name


def test_jpeg2000_decodes_at_a_reduced_scale_near_the_draft_size(tmp_path):
    picture = pattern(7, (512, 384)).resize((1024, 768), Image.Resampling.BILINEAR)
    picture.save(tmp_path / "many.jp2")  # OpenJPEG's default: 5 halvings available
    picture.save(tmp_path / "few.j2k", num_resolutions=2)  # one halving only: never asked for more
    assert load_image(tmp_path / "many.jp2", (224, 224)).size == (512, 384)  # a half would be under 224 high
    many, few = load_image(tmp_path / "many.jp2", (100, 100)), load_image(tmp_path / "few.j2k", (100, 100))
    assert many.size == (256, 192) and few.size == (512, 384)
    for reduced in (many, few):  # the same picture (the wavelet's low band softens edges: compared coarse)
        coarse = [np.asarray(i.resize((64, 48), Image.Resampling.BOX), dtype=int) for i in (reduced, picture)]
        assert np.abs(coarse[0] - coarse[1]).mean() < 8  # another picture: about 80
