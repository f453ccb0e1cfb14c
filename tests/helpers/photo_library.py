"""A small photo library with EXIF dates, cameras and folders, and the reference answers of its filters."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# (relative path, EXIF DateTimeOriginal or None, camera): the file time of those without EXIF is 2023-06-01
PHOTOS = [
    ("trips/2019/beach.jpg", "2019:07:14 09:30:00", "Canon EOS 5D"),
    ("trips/2019/hill.jpg", "2019:08:01 18:00:00", "Canon EOS 5D"),
    ("trips/2022/lake.jpg", "2022:05:02 11:00:00", "Pixel 6"),
    ("trips/2022/road.jpg", "2022:05:03 08:15:00", "Pixel 6"),
    ("home/cat.jpg", "2020:12:31 23:59:59", None),
    ("home/dog.jpg", "2021:01:01 00:00:00", None),
    ("home/sofa.jpg", "2021:03:09 12:00:00", None),
    ("home/scan.png", None, None),
    ("home/old.png", None, None),
]
FILE_TIME = 1_685_620_800  # 2023-06-01T12:00:00 UTC: mid-day, the same date in any time zone


def write_photos(root: Path) -> None:
    rng = np.random.default_rng(0)
    for rel, taken, camera in PHOTOS:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
        if taken is None:
            image.save(path)
            os.utime(path, (FILE_TIME, FILE_TIME))
            continue
        exif = Image.Exif()
        if camera:
            exif[272] = camera
        exif.get_ifd(0x8769)[36867] = taken
        image.save(path, exif=exif)


def taken_after(date: str) -> set[str]:
    """The reference: names whose written date (EXIF, else the file time) is on or after `date`."""
    out = set()
    for rel, taken, _ in PHOTOS:
        day = taken[:10].replace(":", "-") if taken else "2023-06-01"
        if day >= date:
            out.add(os.path.basename(rel))
    return out
