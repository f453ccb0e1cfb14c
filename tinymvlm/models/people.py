"""Is there a person in this photo? OpenCV's face detectors, read as the label prior's "person" mass.

ImageNet-1k has almost no class for people, so an ImageNet classifier reads a portrait as its
clothes, its background or a football player. OpenCV's wheel ships Viola-Jones face cascades
(`cv2.data.haarcascades`): no network, no weights to fetch, no randomness. A face found on the very
crop the image tower sees (so the signal is a function of the model's input, and caches, checkpoints
and every embedding path carry it unchanged) gives the label prior's "a photo of a person." row
`FACE_MASS` of the probability mass (see `label_prior`).

A face counts when the frontal-face cascade finds a box at least MIN_FACE of the crop's side that is
at least MIN_SKIN skin-coloured: the skin test removes the faces the cascade "finds" in a fire
engine, coins, moon craters, fur and stonework, and with them the faces in greyscale photos. Measured
on 143 real photos (benchmarks/bench_everyday.py, docs/builtin-model.md): it finds the faces of 3 of
the 7 people photos and no false face, for about 14 ms of CPU a photo. The profile-face cascade (both
ways round) found no face more there at 4.5 times the cost, and OpenCV's HOG and Haar body detectors
found no true body but several false ones, so none of them is used. Changing any constant changes
every embedding: bump the built-in model's version.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import torch

from tinymvlm.errors import TmvError

FACE_MASS = 0.6  # measured: 0.3 ... 0.8 rank the same; the class reading keeps the rest
MIN_FACE = 0.06  # smallest face side, as a fraction of the crop's shorter side
NEIGHBOURS = 6  # cascade minNeighbors: fewer finds more faces and more false ones (cat faces, fur)
CASCADE_STEP = 1.2  # cascade scaleFactor: 1.1 (OpenCV's usual) costs 1.7x as much and found a false face more
MIN_SKIN = 0.25  # a face box must be at least this fraction skin-coloured (YCrCb)
SETTINGS = {"detector": "opencv-haar-frontalface-default", "face_mass": FACE_MASS, "min_face": MIN_FACE,
            "neighbours": NEIGHBOURS, "step": CASCADE_STEP, "min_skin": MIN_SKIN}


_local = threading.local()  # a CascadeClassifier is not safe to share between threads: one per thread
_importing = threading.Lock()  # cv2's first import re-imports itself: threads must not see it half done


@cache
def _opencv():
    with _importing:
        try:
            import cv2
        except ImportError as exc:
            raise TmvError("this model finds people with OpenCV's face detectors: "
                           "pip install 'opencv-python-headless<5'") from exc
        return cv2


def _cascades():
    """(cv2, this thread's frontal-face cascade)."""
    cv2 = _opencv()
    if getattr(_local, "frontal", None) is None:
        root = getattr(getattr(cv2, "data", None), "haarcascades", "")
        frontal = cv2.CascadeClassifier(root + "haarcascade_frontalface_default.xml")
        if frontal.empty():
            raise TmvError(f"OpenCV {cv2.__version__} has no face cascade (cv2.data, dropped from 5.x wheels); "
                           "pip install 'opencv-python-headless<5'")
        _local.frontal = frontal
    return cv2, _local.frontal


def skin_fraction(rgb: np.ndarray) -> float:
    """Fraction of pixels in the usual YCrCb skin range (Cr 133-173, Cb 77-127), any skin tone; grey
    pixels (a coin, the moon, a black-and-white photo) never count."""
    cv2 = _opencv()
    if rgb.size == 0:
        return 0.0
    ycrcb = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YCrCb)
    cr, cb = ycrcb[..., 1], ycrcb[..., 2]
    return float(((cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127)).mean())


def faces(rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Face boxes (x, y, w, h) in an RGB uint8 image that pass the skin test."""
    cv2, frontal = _cascades()
    grey = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))
    side = max(12, int(MIN_FACE * min(grey.shape)))
    found = frontal.detectMultiScale(grey, CASCADE_STEP, NEIGHBOURS, minSize=(side, side))
    boxes = [tuple(int(v) for v in box) for box in found]
    return [(x, y, w, h) for x, y, w, h in boxes if skin_fraction(rgb[y:y + h, x:x + w]) >= MIN_SKIN]


def to_rgb8(pixels: torch.Tensor, data_config: dict) -> np.ndarray:
    """A normalised batch (n, 3, H, W), as the image tower gets it, back to RGB uint8 (n, H, W, 3)."""
    mean = torch.tensor(data_config["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(data_config["std"], dtype=torch.float32).view(1, 3, 1, 1)
    rgb = (pixels.detach().float().cpu() * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    return rgb.permute(0, 2, 3, 1).contiguous().numpy()


@cache
def _pool(pid: int) -> ThreadPoolExecutor:
    """This process's searching threads, kept so that each loads its cascade once (15 ms); by PID, because
    a forked child has none of its parent's threads."""
    return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="tmv-faces")


def person_mass(pixels: torch.Tensor, data_config: dict) -> torch.Tensor:
    """(n, 1) float: FACE_MASS for each image of the batch in which a face is found, else 0. The images
    are searched in parallel threads (OpenCV releases the GIL), which a GPU's batches need."""
    images = to_rgb8(pixels, data_config)
    _opencv()  # imported here, before the threads use it
    found = [bool(boxes) for boxes in _pool(os.getpid()).map(faces, images)]
    return torch.tensor([[FACE_MASS if f else 0.0] for f in found], dtype=torch.float32).reshape(-1, 1)
