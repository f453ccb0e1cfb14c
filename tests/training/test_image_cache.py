"""--image-cache: training images decoded once into a pre-resized cache in the run folder; the epochs
after read only the cache, crops are the uncached run's (resampled from the smaller copy), a resume
reuses the cache, a changed file rebuilds it, and a bad image is skipped as without it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tinymvlm.data.pairs import FileImages, load_image_folder
from tinymvlm.data.transform import build_transforms
from tinymvlm.models.factory import create_model
from tinymvlm.training import image_cache
from tinymvlm.training.batches import PairDataset, train_data_config
from tinymvlm.training.config import TrainConfig
from tinymvlm.training.trainer import Reporter, train

SIZES = [(200, 150), (90, 120), (64, 64), (300, 97), (150, 260), (48, 48)]  # crops of 32 px: cached at 64


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k, (w, h) in enumerate(SIZES):
        yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
        base = rng.uniform(40, 215, 3) + 40 * np.sin(2 * np.pi * (rng.uniform(1, 4) * xx + rng.uniform(1, 4) * yy))[..., None]
        pixels = np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"p{k}.jpg", quality=92)
        (folder / f"p{k}.txt").write_text(f"photo number {k}\n", encoding="utf-8")
    return folder


def _config(tiny_model_config, data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(data), val_fraction=0.0, model=tiny_model_config, epochs=3, batch_size=3, lr=5e-3,
                    tower_lr=1e-3, warmup_steps=0, workers=0, out_dir=str(out), lock_image=False, image_cache=True,
                    wise_alpha=1.0)
    settings.update(overrides)
    return TrainConfig(**settings)


def _losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["type"] == "step"]


class _CountOpens:
    """Counts full decodes of original files (draft checks at load time are not decodes for training)."""

    def __init__(self, monkeypatch) -> None:
        self.full = 0
        real = FileImages.open

        def counted(images, i, draft_size=None):
            self.full += draft_size is None
            return real(images, i, draft_size)

        monkeypatch.setattr(FileImages, "open", counted)


def test_cached_crops_are_the_uncached_crops(tiny_model_config, photo_folder, tmp_path):
    model, _ = create_model(tiny_model_config)
    pairs = load_image_folder(photo_folder)
    transform = build_transforms(train_data_config(model, None), training=True)
    cache = image_cache.for_run(pairs, 32, tmp_path, 0, True)
    plain = PairDataset(pairs, transform, [[[1]]] * len(pairs))
    cached = PairDataset(pairs, image_cache.CachedCrop(transform), [[[1]]] * len(pairs), cache)
    for epoch in range(3):
        plain.set_epoch(7, epoch)
        cached.set_epoch(7, epoch)
        for i, (w, h) in enumerate(SIZES):
            a, b = plain[i][0], cached[i][0]
            if min(w, h) <= 64:  # not shrunk: the very same pixels
                assert torch.equal(a, b), (epoch, i)
            else:  # the same box, resampled from the smaller copy
                cosine = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
                assert cosine > 0.995 and (a - b).abs().mean() < 0.03, (epoch, i, float(cosine))


def test_later_epochs_read_no_original_file(tiny_model_config, photo_folder, tmp_path, monkeypatch):
    """The originals vanish during the first epoch, after the cache is built: the run goes on."""
    moved = tmp_path / "moved"

    class MoveOriginals(Reporter):
        def step(self, step, epoch, loss, lr, pairs_per_s) -> None:
            if step == 1:
                shutil.move(photo_folder, moved)

    opens = _CountOpens(monkeypatch)
    run = train(_config(tiny_model_config, photo_folder, tmp_path / "run"), MoveOriginals())
    assert opens.full == len(SIZES)  # each image decoded in full once, into the cache
    assert len(_losses(run)) == 6 and (run / image_cache.DATA).is_file()
    cache = json.loads((run / image_cache.INDEX).read_text())
    assert cache["side"] == 64 and [tuple(r[3:]) for r in cache["layout"]] == SIZES
    assert [min(r[1:3]) for r in cache["layout"]] == [min(64, min(s)) for s in SIZES]


def test_a_cached_run_trains_as_an_uncached_one(tiny_model_config, photo_folder, tmp_path):
    cached = _losses(train(_config(tiny_model_config, photo_folder, tmp_path / "cached")))
    plain = _losses(train(_config(tiny_model_config, photo_folder, tmp_path / "plain", image_cache=False)))
    assert cached[0] == pytest.approx(plain[0], rel=1e-3)  # untrained model, near-identical pixels
    assert cached == pytest.approx(plain, rel=0.05)  # steps apart from the first drift apart a little


def test_a_resume_reuses_the_cache_and_a_changed_file_rebuilds_it(tiny_model_config, photo_folder, tmp_path,
                                                                  monkeypatch):
    full = _losses(train(_config(tiny_model_config, photo_folder, tmp_path / "full")))

    class StopAt(Reporter):
        def step(self, step, epoch, loss, lr, pairs_per_s) -> None:
            if step == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_config(tiny_model_config, photo_folder, tmp_path / "cut"), StopAt())
    opens = _CountOpens(monkeypatch)
    notices = []

    class Notices(Reporter):
        def notice(self, message: str) -> None:
            notices.append(message)

    train(_config(tiny_model_config, photo_folder, tmp_path / "cut", resume="latest"), Notices())
    assert opens.full == 0 and any("reusing" in n for n in notices)
    assert _losses(tmp_path / "cut") == pytest.approx(full, rel=1e-5, abs=1e-6)

    Image.new("RGB", (80, 80), (10, 200, 30)).save(photo_folder / "p1.jpg")  # another picture under that name
    pairs = load_image_folder(photo_folder)
    assert image_cache.ImageCache.load(tmp_path / "cut", image_cache.fingerprint(pairs, 64)) is None
    rebuilt = image_cache.for_run(pairs, 32, tmp_path / "cut", 0, True)
    assert rebuilt.open(1)[1] == (80, 80)


def test_a_bad_image_is_skipped_as_without_the_cache(tiny_model_config, photo_folder, tmp_path):
    (photo_folder / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    (photo_folder / "bad.txt").write_text("a broken photo\n", encoding="utf-8")
    skipped = []

    class Skips(Reporter):
        def skipped(self, pairs) -> None:
            skipped.extend(pairs.skipped)

    run = train(_config(tiny_model_config, photo_folder, tmp_path / "run", epochs=1), Skips())
    assert [s.where for s in skipped] == ["bad.jpg"] and "cannot read image" in skipped[0].reason
    assert len(json.loads((run / image_cache.INDEX).read_text())["layout"]) == len(SIZES)


def test_a_cache_that_cannot_be_written_is_a_one_line_error(photo_folder, tmp_path, monkeypatch):
    import contextlib
    import errno

    from tinymvlm.errors import TmvError

    @contextlib.contextmanager
    def full_disk(path):
        raise OSError(errno.ENOSPC, "No space left on device")
        yield

    monkeypatch.setattr(image_cache, "atomic_path", full_disk)
    with pytest.raises(TmvError, match="cannot write the image cache .*No space left on device.*without --image-cache"):
        image_cache.for_run(load_image_folder(photo_folder), 32, tmp_path, 0, True)


def test_an_image_gone_bad_since_the_check_is_named(photo_folder, tmp_path):
    from tinymvlm.errors import TmvError

    pairs = load_image_folder(photo_folder)
    (photo_folder / "p3.jpg").write_bytes(b"broken")
    with pytest.raises(TmvError, match="cannot read image .*p3.jpg for the image cache: cannot identify"):
        image_cache.for_run(pairs, 32, tmp_path, 0, True)
