"""A self-contained HTML contact sheet of search hits: thumbnails embedded as data URIs, so the one file
can be opened, mailed or moved without the photos. Every path, caption and query is HTML-escaped, and
file links are percent-encoded URIs, so a hostile file name cannot inject markup.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

from tinymvlm.index.searcher import Hit
from tinymvlm.serve.thumbnails import make_thumbnail

from tinymvlm.image_files import printable

THUMB = 256

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.2em;font-weight:600} .grid{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;width:%(t)dpx;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}
figure img{width:%(t)dpx;height:%(t)dpx;object-fit:contain;background:#eee;display:block}
figcaption{font-size:.8em;word-break:break-all;margin-top:4px} .score{color:#666}
.missing{width:%(t)dpx;height:%(t)dpx;display:flex;align-items:center;justify-content:center;background:#eee;color:#900}
table{border-collapse:collapse} td{padding:4px 10px;border-bottom:1px solid #ddd}
""" % {"t": THUMB}


def _text(value: str) -> str:
    """Escaped for HTML text and attributes; bytes of a file name that are not UTF-8 shown as U+FFFD."""
    return html.escape(printable(value), quote=True)


def thumbnail_uri(path: str, size: int = THUMB) -> str | None:
    """A JPEG data URI of the image shrunk to fit `size`, or None when it cannot be decoded."""
    try:
        jpeg = make_thumbnail(path, size)
    except Exception:  # a hit whose file has gone or broken still gets its card
        return None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def contact_sheet(hits: Sequence[Hit], query: str) -> str:
    """The HTML page for `hits` of `query` (images as a grid, captions as a table)."""
    title = f"tinymvlm search: {query}"
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{_text(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{_text(title)}</h1>"]
    captions = [h for h in hits if h.kind == "captions"]
    images = [h for h in hits if h.kind == "images"]
    if images:
        parts.append('<div class="grid">')
        for hit in images:
            uri = thumbnail_uri(hit.label)
            link = html.escape(Path(hit.label).absolute().as_uri(), quote=True)
            picture = (f'<img src="{uri}" alt="{_text(Path(hit.label).name)}" loading="lazy">'
                       if uri else '<div class="missing">cannot display</div>')
            parts.append(f'<figure><a href="{link}">{picture}</a><figcaption><span class="score">#{hit.rank} '
                         f'{hit.score:.3f}</span><br>{_text(hit.label)}</figcaption></figure>')
        parts.append("</div>")
    if captions:
        parts.append("<table><tr><th>rank</th><th>score</th><th>caption</th></tr>")
        for hit in captions:
            parts.append(f"<tr><td>{hit.rank}</td><td>{hit.score:.3f}</td><td>{_text(hit.label)}</td></tr>")
        parts.append("</table>")
    if not hits:
        parts.append("<p>No results.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
