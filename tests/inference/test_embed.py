"""Embedding image files: the uint8 crops and the batch normalisation give the same vectors as the
tower's own timm transform on each decoded file; on a CPU, decoding threads and the model take turns."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from tinymvlm.data.pairs import FileImages
from tinymvlm.data.transform import build_transforms, load_image
from tinymvlm.inference import runtime as runtime_module
from tinymvlm.inference.embed import draft_size, image_batches
from tinymvlm.inference.runtime import Runtime
from tinymvlm.models.checkpoint import load_checkpoint


@pytest.mark.parametrize("workers", [0, 1])
def test_embedded_files_match_the_model_on_timms_transform(tiny_checkpoint, tmp_path, workers):
    from skimage import data

    model, _, _ = load_checkpoint(tiny_checkpoint)
    model.eval()
    photo = Image.fromarray(data.chelsea())
    paths = []
    for i, size in enumerate([(451, 300), (300, 451), (120, 120), (2000, 1500), (33, 90)]):
        paths.append(tmp_path / f"photo{i}.jpg")
        photo.resize(size, Image.BICUBIC).save(paths[-1], quality=92)
    runtime = Runtime("cpu", "fp32", batch_size=2, workers=workers)
    got = np.concatenate([b.vectors for b in image_batches(model, FileImages(paths), len(paths), runtime, draft=True)])
    timm = build_transforms(model.data_config, training=False)
    draft = draft_size(model.data_config)
    with torch.inference_mode():
        want = model.encode_image(torch.stack([timm(load_image(p, draft)) for p in paths])).numpy()
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.999, cosine


def test_on_a_cpu_decoding_threads_and_the_model_take_turns(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime_module.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    model, _, _ = load_checkpoint(tiny_checkpoint)
    forward = threading.Event()
    encode = model.encode_image

    def watched_encode(pixels):
        forward.set()
        try:
            return encode(pixels)
        finally:
            forward.clear()

    monkeypatch.setattr(model, "encode_image", watched_encode)
    opened: list[tuple[int, bool]] = []  # (thread, the model running meanwhile)

    class Watched(FileImages):
        def open(self, i, draft_size=None):
            opened.append((threading.get_ident(), forward.is_set()))
            return super().open(i, draft_size)

    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (40, 30), (50 * i, 20, 200)).save(paths[-1])
    batches = list(image_batches(model, Watched(paths), len(paths), Runtime("cpu", "fp32", batch_size=2)))
    assert [p for b in batches for p in b.positions] == [0, 1, 2, 3, 4]
    assert len(opened) == 5  # decoded in this process (not in DataLoader workers)
    assert all(thread != threading.get_ident() for thread, _ in opened)  # by the decoding threads
    assert not any(during for _, during in opened)  # never while the model runs
