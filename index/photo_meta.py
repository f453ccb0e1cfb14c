"""What a photo library filters on, read from a file's header at index time: when it was taken, by which
camera, its pixel size.

The taken-at time is EXIF DateTimeOriginal (the shutter's wall-clock time, which carries no time zone),
else the file's modification time in the machine's local time: both are stored as naive ISO text
("2019-07-14T09:30:00"), so they sort and compare as text and `--after 2019-07-01` means the wall-clock
date a user sees on the photo. Only the header is read (Pillow opens lazily), never the pixels.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from PIL import Image
from PIL.ExifTags import IFD, Base

_EXIF_TIME = "%Y:%m:%d %H:%M:%S"


@dataclass(frozen=True)
class PhotoMeta:
    taken_at: str  # naive ISO wall-clock time, seconds precision
    camera: str | None
    width: int | None  # None: the header could not be read
    height: int | None


def iso_time(moment: dt.datetime) -> str:
    return moment.replace(tzinfo=None, microsecond=0).isoformat()


def mtime_time(mtime_ns: int) -> str:
    return iso_time(dt.datetime.fromtimestamp(mtime_ns / 1e9))


def _exif_time(text) -> str | None:
    """An EXIF date ("2019:07:14 09:30:00", sometimes with trailing NULs or spaces) as ISO text."""
    if not isinstance(text, str):
        return None
    try:
        return iso_time(dt.datetime.strptime(text.strip("\x00 ")[:19], _EXIF_TIME))
    except ValueError:  # "0000:00:00 00:00:00", blanks, garbage: no date
        return None


def read_photo_meta(path: str, mtime_ns: int) -> PhotoMeta:
    """The file's metadata; a header that cannot be read still gives its mtime as the taken-at time."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            exif = image.getexif()
            # the standard place is the Exif IFD; some writers put it in the first IFD
            original = Base.DateTimeOriginal
            taken = _exif_time(exif.get_ifd(IFD.Exif).get(original)) or _exif_time(exif.get(original))
            camera = exif.get(Base.Model)
    except Exception:  # any undecodable header: Pillow raises many kinds; the embedding run reports the file
        return PhotoMeta(mtime_time(mtime_ns), None, None, None)
    camera = camera.strip("\x00 ") or None if isinstance(camera, str) else None
    return PhotoMeta(taken or mtime_time(mtime_ns), camera, width, height)
