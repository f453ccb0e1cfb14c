"""Weighted query expressions, rclip's idea: `cat + in snow - dog`, `beach:2 + sunset`, `photo.jpg + night`.

Terms are separated by `+` or `-` standing alone between spaces (so `t-shirt` stays one term); a term
may end in `:WEIGHT` (a number, default 1); a term naming an existing image file is an image query. The
query vector is the weighted sum of the terms' embeddings, normalised.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Sequence

from tinymvlm.errors import TmvError
from tinymvlm.files import is_image_name

_SPLIT = re.compile(r"(?:^|\s+)([+-])(?:\s+|$)")
_WEIGHT = re.compile(r"^(.*\S):(-?\d+(?:\.\d*)?|-?\.\d+)$")


@dataclass(frozen=True)
class Term:
    weight: float
    text: str | None = None
    image: str | None = None


def _expand(path: str) -> str:
    try:
        return os.path.expanduser(path)
    except ValueError:  # a NUL byte after ~: not a path, whatever it is
        return path


def is_image_query(term: str) -> bool:
    return is_image_name(term) and os.path.isfile(_expand(term))


def parse_query(text: str | None, images: Sequence[str] = ()) -> list[Term]:
    """Terms of a query expression plus `--image` files (weight 1 each)."""
    terms: list[Term] = []
    for image in images:
        if not os.path.isfile(_expand(image)):
            raise TmvError(f"--image {image}: no such file")
        terms.append(Term(1.0, image=_expand(image)))
    if text and text.strip():
        parts = _SPLIT.split(" " + text.strip())
        sign = 1.0
        for n, part in enumerate(parts):
            if n % 2 == 1:
                sign = 1.0 if part == "+" else -1.0
                continue
            part = part.strip().strip("\"'").strip()
            if not part:
                if n == 0:
                    continue
                raise TmvError(f"query {text!r}: a '+' or '-' has nothing after it")
            weight = 1.0
            match = _WEIGHT.match(part)
            if match:
                part, weight = match.group(1).strip(), float(match.group(2))
                if not math.isfinite(weight):
                    raise TmvError(f"query term {part!r}: weight {match.group(2)[:20]}... is too large; use a number like 0.5 or 2")
            if is_image_query(part):
                terms.append(Term(sign * weight, image=_expand(part)))
            else:
                terms.append(Term(sign * weight, text=part))
    if not terms:
        raise TmvError("give a query: text, an image path, or --image FILE")
    return terms
