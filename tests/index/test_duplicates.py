"""`tmv dupes`: near-duplicate groups of real photos (scikit-image's) and their edited copies, the copy to
keep, different photos left alone, the range search exact and sub-quadratic, the CLI's table and JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageEnhance
from tinymvlm.cli.main import cli
from tinymvlm.index import Index
from tinymvlm.index.vectors import RANGE_EXACT_BELOW, range_pairs

from tinymvlm.inference.runtime import Runtime

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image's sample photos (a dev dependency)")


def save_dated(image: Image.Image, path: Path, taken: str) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = taken
    image.save(path, exif=exif, quality=92)


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_checkpoint):
    """Two photos with edited copies, and two other photos. Expected groups by construction."""
    root = tmp_path_factory.mktemp("dupes")
    photos = root / "photos"
    (photos / "edits").mkdir(parents=True)
    astronaut = Image.fromarray(skimage_data.astronaut())  # 512x512
    coffee = Image.fromarray(skimage_data.coffee())  # 600x400
    save_dated(astronaut, photos / "astronaut.jpg", "2015:01:01 10:00:00")
    astronaut.resize((256, 256)).save(photos / "edits" / "astronaut_small.jpg", quality=40)
    stamped = ImageEnhance.Brightness(astronaut).enhance(1.3)
    ImageDraw.Draw(stamped).text((380, 480), "2015-01-01", fill=(255, 140, 0))
    save_dated(stamped, photos / "edits" / "astronaut_bright_stamped.jpg", "2016:01:01 10:00:00")
    save_dated(coffee, photos / "coffee_late.jpg", "2020:05:05 08:00:00")
    save_dated(coffee, photos / "edits" / "coffee_early.jpg", "2019:05:05 08:00:00")  # same pixels, older: kept
    coffee.crop((20, 15, 580, 385)).rotate(3, resample=Image.Resampling.BICUBIC).save(photos / "edits" / "coffee_crop.jpg")
    Image.fromarray(skimage_data.chelsea()).save(photos / "chelsea.jpg")
    Image.fromarray(skimage_data.rocket()).save(photos / "rocket.jpg")
    folder = root / "index"
    with Index(folder, checkpoint=tiny_checkpoint, runtime=Runtime(device="cpu")) as index:
        index.add([photos], runtime=Runtime(workers=0, device="cpu"))
    return folder, photos


def dupes_json(folder: Path, *args: str) -> list[dict]:
    result = CliRunner().invoke(cli, ["dupes", "--index", str(folder), "--json", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_groups_edited_copies_and_keeps_the_best(library):
    folder, photos = library
    # Every pair is a candidate (threshold -1): the untrained test model's embedding says little, so
    # this pins the look check, the grouping and the choice of the copy to keep.
    groups = dupes_json(folder, "--threshold", "-1")
    named = [{"keep": os.path.relpath(g["keep"], photos), "paths": [os.path.relpath(p, photos) for p in g["paths"]]}
             for g in groups]
    assert named == [
        {"keep": "astronaut.jpg",  # the largest; the stamped copy has the same size but is a year younger
         "paths": ["astronaut.jpg", "edits/astronaut_bright_stamped.jpg", "edits/astronaut_small.jpg"]},
        {"keep": "edits/coffee_early.jpg",  # same size as coffee_late.jpg, older; the crop is smaller
         "paths": ["edits/coffee_early.jpg", "coffee_late.jpg", "edits/coffee_crop.jpg"]},
    ]
    assert all(-1 <= g["similarity"] <= 1 for g in groups)
    assert sorted(p.name for p in photos.rglob("*.jpg")) == sorted(  # nothing was deleted or moved
        ["astronaut.jpg", "astronaut_small.jpg", "astronaut_bright_stamped.jpg", "coffee_late.jpg", "coffee_early.jpg",
         "coffee_crop.jpg", "chelsea.jpg", "rocket.jpg"])


def test_a_high_embedding_threshold_leaves_only_identical_pixels(library):
    folder, photos = library
    groups = dupes_json(folder, "--threshold", "0.99999")
    assert [sorted(os.path.basename(p) for p in g["paths"]) for g in groups] == [["coffee_early.jpg", "coffee_late.jpg"]]
    assert groups[0]["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_the_table_marks_the_copy_to_keep(library):
    import re

    folder, photos = library
    result = CliRunner().invoke(cli, ["dupes", "--index", str(folder), "--threshold", "-1"])
    assert result.exit_code == 0, result.output
    squashed = re.sub(r"[\s│─┼━]+", "", result.stdout)  # the narrow test terminal folds long paths
    assert squashed.count("keep") == 2
    assert f"keep{photos / 'astronaut.jpg'}" in squashed and f"keep{photos / 'edits' / 'coffee_early.jpg'}" in squashed
    assert "2 group(s) of near-duplicates, 4 extra copies" in result.stderr


def test_no_index_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["dupes", "--index", str(tmp_path / "none")])
    assert result.exit_code != 0 and "no index at" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("n", [2_000, RANGE_EXACT_BELOW + 5_000])
def test_range_pairs_finds_every_close_pair(n):
    """Against numpy: exactly the pairs at or above the threshold (exact search), or all planted ones
    (IVF, above RANGE_EXACT_BELOW vectors)."""
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, 64), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    originals = rng.choice(n // 2, size=50, replace=False)
    copies = originals + n // 2
    noise = rng.standard_normal((50, 64), dtype=np.float32)
    vecs[copies] = vecs[originals] + 0.15 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    vecs[copies] /= np.linalg.norm(vecs[copies], axis=1, keepdims=True)
    firsts, seconds, sims = range_pairs(vecs, 0.9)
    found = set(zip(firsts.tolist(), seconds.tolist()))
    if n < RANGE_EXACT_BELOW:
        scores = vecs @ vecs.T
        i, j = np.nonzero(np.triu(scores >= 0.9, k=1))
        assert found == set(zip(i.tolist(), j.tolist()))
        assert np.allclose(sims, scores[firsts, seconds], atol=1e-5)
    else:
        assert set(zip(originals.tolist(), copies.tolist())) <= found


def test_one_stray_pair_does_not_chain_two_groups(monkeypatch):
    """Two groups of four (every pair accepted) and one accepted pair between them: two groups, as
    connected components (LINK_SHARE 0) would make one."""
    from tinymvlm.index import duplicates

    pairs = [(a, b) for group in ((0, 1, 2, 3), (10, 11, 12, 13)) for a in group for b in group if a < b] + [(3, 10)]
    firsts, seconds = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    assert sorted(duplicates._link_groups(firsts, seconds)) == [[0, 1, 2, 3], [10, 11, 12, 13]]
    # a copy accepted with half of a group's members still joins it; with fewer, it stays apart
    assert duplicates._link_groups(np.array([0, 0]), np.array([1, 5])) == [[0, 1, 5]]
    triangle_and_pair = np.array([0, 0, 1, 2, 3]), np.array([1, 2, 2, 3, 5])
    assert sorted(duplicates._link_groups(*triangle_and_pair)) == [[0, 1, 2], [3, 5]]


def test_the_help_states_the_defaults_in_use():
    """The CLI does not import the library at start-up (speed), so its help repeats the defaults: kept true here."""
    from tinymvlm.index.duplicates import DEFAULT_THRESHOLD, LOOK_THRESHOLD

    text = " ".join(CliRunner().invoke(cli, ["dupes", "--help"]).output.split())
    assert f"(default {DEFAULT_THRESHOLD:.2f};" in text and f"(default {LOOK_THRESHOLD:.2f})" in text
