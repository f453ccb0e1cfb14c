"""Search queries: plain text by default, weighted expressions when asked for (rclip's idea).

The grammar, designed so that ordinary text is never eaten:

    query   := term (OP term)*
    OP      := "+" or "-" standing alone between spaces      ("t-shirt", "-5 degrees" stay text)
    term    := '"' PHRASE '"' [":" WEIGHT]                    a quoted phrase: its words, exactly
             | IMAGE [":" WEIGHT]                             an existing image file
             | TEXT [":" WEIGHT]
    WEIGHT  := a plain decimal number (2, 0.5, -1, .5), default 1

* A query of one term is always its text (or image): a colon in it is text ("a clock showing 10:30",
  "score:10"). Weights exist only in expressions of two or more terms, and only after a character
  that is not a digit ("dog:0.5", never "10:30").
* Double quotes around a whole term make it literal: no operators, no weight, no image lookup inside
  ('"cat + dog"', '"10:30"', '"photo.png"'); the quotes themselves are not searched. Any other
  quote (an apostrophe, a lone '"') is text. `literal=True` (`tmv search --literal`) takes the whole
  query as one phrase.
* A term that looks like an image file (an image extension, and a path separator or no spaces) but
  names no existing file is an error, so a mistyped path is never searched as words; so is a term that
  names an existing file which is no picture ('./notes.txt'): quoted, either is searched as words.

The query vector is the weighted sum of the terms' embeddings, normalised (search.combine).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Sequence

from tinymvlm.errors import TmvError
from tinymvlm.image_files import is_image_name

_TOKENS = re.compile(r'(?P<phrase>"[^"]*")|(?P<op>(?<!\S)[+-](?!\S))|(?P<text>[^"+-]+|[-+"])')
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"  # a plain decimal: no exponent, no inf or nan
_QUOTED = re.compile(r'^"([^"]*)"(?::(.*))?$')
_WEIGHTED = re.compile(rf"^(.*[^\s\d:]):({_NUMBER})$")


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


def _is_file(path: str) -> bool:
    try:
        return os.path.isfile(_expand(path))
    except ValueError:  # a NUL byte: no such file
        return False


def looks_like_image_path(term: str) -> bool:
    """An image file name with a folder in it, or one word: 'photos/flyy.png', 'IMG_1.JPG'."""
    return is_image_name(term) and _looks_like_path(term)


def _looks_like_path(term: str) -> bool:
    """A folder in it, or one word with an extension: 'docs/notes', 'notes.txt'."""
    one_word = os.path.splitext(term)[1] != "" and not any(c.isspace() for c in term)
    return os.sep in term or "/" in term or one_word


def _not_a_picture(term: str, what: str, words: bool = True) -> TmvError:
    ext = os.path.splitext(term)[1]
    hint = f", or to search the words, quote them: '\"{term}\"'" if words else ""
    return TmvError(f"{what} names a file that is not a picture tmv reads ({ext or 'no extension'}); "
                    f"give an image file{hint}")


def _split(text: str) -> list[str]:
    """Terms with the lone operators between them: [term, op, term, ...]; a quoted phrase is never split."""
    parts = [""]
    for token in _TOKENS.finditer(text):
        if token.lastgroup == "op":
            parts += [token.group(), ""]
        else:
            parts[-1] += token.group()
    return parts


def _weight(value: str, term: str) -> float:
    weight = float(value)
    if not math.isfinite(weight):
        raise TmvError(f"query term {term!r}: weight {value[:20]}... is too large; use a number like 0.5 or 2")
    return weight


def _term(part: str, sign: float, expression: bool) -> Term:
    quoted = _QUOTED.match(part)
    if quoted:
        phrase, weight = quoted.group(1).strip(), quoted.group(2)
        if not phrase:
            raise TmvError(f"query term {part!r}: the quotes hold no words")
        if weight is not None and not re.fullmatch(_NUMBER, weight):
            raise TmvError(f"query term {part!r}: after the closing quote, ':' takes a weight like 0.5 or 2")
        return Term(sign * (_weight(weight, phrase) if weight is not None else 1.0), text=phrase)
    weight = 1.0
    match = _WEIGHTED.match(part) if expression else None
    if match:
        part, weight = match.group(1).strip(), _weight(match.group(2), match.group(1))
    if is_image_name(part) and _is_file(part):
        return Term(sign * weight, image=_expand(part))
    if _looks_like_path(part) and _is_file(part):
        raise _not_a_picture(part, f"query term {part!r}")
    if looks_like_image_path(part):
        raise TmvError(f"query term {part!r} looks like an image file, but there is no such file; "
                       f"to search the words, quote them: '\"{part}\"'")
    return Term(sign * weight, text=part)


def parse_query(text: str | None, images: Sequence[str] = (), literal: bool = False) -> list[Term]:
    """Terms of a query (the grammar above) plus `--image` files (weight 1 each)."""
    terms: list[Term] = []
    for image in images:
        if not _is_file(image):
            raise TmvError(f"--image {image}: no such file")
        if not is_image_name(image):
            raise _not_a_picture(image, f"--image {image}", words=False)
        terms.append(Term(1.0, image=_expand(image)))
    if literal and text and text.strip():
        terms.append(Term(1.0, text=text.strip()))
    elif text and text.strip():
        parts = _split(text.strip())
        expression = len(parts) > 1
        sign = 1.0
        for n, part in enumerate(parts):
            if n % 2 == 1:
                sign = 1.0 if part == "+" else -1.0
                continue
            part = part.strip()
            if not part:
                if n == 0:
                    continue
                raise TmvError(f"query {text!r}: a '+' or '-' has nothing after it")
            terms.append(_term(part, sign, expression))
    if not terms:
        raise TmvError("give a query: text, an image path, or --image FILE")
    return terms
