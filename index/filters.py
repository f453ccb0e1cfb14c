"""Which images a search may return: taken after or before a date, under some folders.

Dates are ISO (`2021-01-01`, or `2021-01-01T18:30`) and compare with the taken-at wall-clock time
(photo_meta.py): `after` keeps what was taken at or after it, `before` what was taken strictly before, so
`--after 2019-01-01 --before 2020-01-01` is the year 2019. A folder is absolute (or ~), or relative to
each indexed folder: `--folder trips` on an index of ~/Photos means ~/Photos/trips and everything below.
The catalogue turns a filter into the set of allowed ids, and FAISS searches only those (searcher.py).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Sequence

from tinymvlm.index.photo_meta import iso_time

from tinymvlm.errors import TmvError


def parse_date(text: str | None, name: str) -> str | None:
    """An ISO date or date-time as the catalogue's naive ISO text; a clear error for anything else."""
    if text is None or not str(text).strip():
        return None
    try:
        return iso_time(dt.datetime.fromisoformat(str(text).strip()))
    except ValueError:
        raise TmvError(f"{name} {str(text)[:40]!r} is not a date: use YYYY-MM-DD, e.g. 2021-01-01 "
                       "(or YYYY-MM-DDTHH:MM)") from None


@dataclass(frozen=True)
class SearchFilter:
    after: str | None = None  # naive ISO text, see parse_date
    before: str | None = None
    folders: tuple[str, ...] = ()

    @classmethod
    def parse(cls, after: str | None = None, before: str | None = None, folders: Sequence[str] = (),
              prefix: str = "--") -> "SearchFilter":
        """From user text (`prefix`: how the names are spelled in errors: "--" for the CLI, "" for the API)."""
        folders = tuple(f.strip() for f in folders if f and f.strip())
        for folder in folders:
            if "\x00" in folder:
                raise TmvError(f"{prefix}folder {folder[:40]!r} holds a NUL character")
        made = cls(parse_date(after, f"{prefix}after"), parse_date(before, f"{prefix}before"), folders)
        if made.after and made.before and made.after >= made.before:
            raise TmvError(f"{prefix}after {after} is not before {prefix}before {before}: nothing can match")
        return made

    @property
    def active(self) -> bool:
        return bool(self.after or self.before or self.folders)

    def folder_paths(self, roots: Sequence[str]) -> list[str]:
        """Absolute folders: each relative one joined to every indexed folder."""
        out: list[str] = []
        for folder in self.folders:
            expanded = os.path.expanduser(folder)
            if os.path.isabs(expanded):
                out.append(os.path.normpath(expanded))
            else:
                out += [os.path.normpath(os.path.join(root, expanded)) for root in roots]
        return out
