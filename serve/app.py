"""The HTTP side of `tmv serve`: a Starlette app with the search page and the JSON API.

    GET  /api/info                       index folder, model, curves, counts, indexed folders, limits
    GET  /api/curves                     the training curves (PNG) of the run whose model the index uses
    GET  /api/search?q=TEXT              text query (weighted syntax); or like=ID ("more like this")
    POST /api/search[?q=TEXT]            body: an image file's bytes (image->image, image->text)
         common parameters: kind=images|captions, k=1..max_k (24), offset=0..max_offset (0),
         after=DATE, before=DATE, folder=SUBPATH (repeatable), min_score=S (see index/filters.py);
         the answer's "cutoff" is the score below which the page folds results (service.RELATIVE_CUTOFF)
    GET  /api/thumb/ID, /api/image/ID    thumbnail / original of image ID (by catalogue id only)
    GET  /api/duplicates                 near-duplicate groups {"groups": [{ids, paths, keep, similarity}]};
                                         search hits carry "similar" (other copies) once they are known

Every error is JSON {"error": "..."} with a 4xx status. Results are the records of `tmv search --json`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import tempfile
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tinymvlm.data.transform import load_image
from tinymvlm.errors import TmvError, first_line
from tinymvlm.index.filters import SearchFilter
from tinymvlm.serve.hostguard import HostGuard
from tinymvlm.serve.service import CURVES_URL, Query, SearchService
from tinymvlm.serve.thumbnails import ThumbnailCache

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# What browsers show as they are; every other indexed format (TIFF, HEIC, JPEG 2000, PNM, RAW ...) is
# sent as a PNG decoded as `tmv index` decodes it.
WEB_FORMATS = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".jpe": "image/jpeg", ".jfif": "image/jpeg",
               ".png": "image/png", ".apng": "image/apng", ".webp": "image/webp", ".gif": "image/gif",
               ".bmp": "image/bmp", ".avif": "image/avif"}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
                                 b"img-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'"),
]


class Json(JSONResponse):
    """JSON with non-ASCII escaped, so a file name that is not UTF-8 (surrogate escapes) still encodes,
    exactly as `tmv search --json` writes it."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True).encode("ascii")


def _error(status: int, message: str) -> Json:
    return Json({"error": message}, status_code=status)


def _number_param(request: Request, name: str, parse: type, default: float | None, low: float, high: float,
                  kind: str, allowed: str) -> float | None:
    """A query parameter as a number in [low, high]; absent or empty gives `default`."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise HTTPException(400, f"{name}={raw[:40]!r} is not {kind}") from None
    if not low <= value <= high:
        raise HTTPException(400, f"{name}={raw[:40]} is out of range: {allowed}")
    return value


def _int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    return _number_param(request, name, int, default, low, high, "a whole number", f"use {low}..{high}")


def _score_param(request: Request, name: str) -> float | None:
    return _number_param(request, name, float, None, -1.0, 1.0, "a number",
                         "scores are cosine similarities, -1..1")


def _query(request: Request, service: SearchService, upload: bool = False) -> Query:
    kind = request.query_params.get("kind", "images")
    if kind not in ("images", "captions"):
        raise HTTPException(400, f"kind={kind[:40]!r}: use images or captions")
    limits = service.limits
    like = _int_param(request, "like", None, 0, 2**62)
    text = request.query_params.get("q")
    if like is not None and (text or upload):
        raise HTTPException(400, "like=ID searches by one image alone; leave out q and the upload")
    params = request.query_params
    where = SearchFilter.parse(params.get("after"), params.get("before"), params.getlist("folder"), prefix="")
    return Query(text=text, like=like, kind=kind, k=_int_param(request, "k", 24, 1, limits.max_k),
                 offset=_int_param(request, "offset", 0, 0, limits.max_offset), where=where,
                 min_score=_score_param(request, "min_score"))


async def _save_upload(request: Request, limit: int, folder: str) -> str:
    """The request body in a temporary file, refused past `limit` bytes before all of it is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the upload is {int(declared):,} bytes, over the {limit:,}-byte limit")
    path = os.path.join(folder, "upload")
    size = 0
    with open(path, "wb") as fh:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"the upload is over the {limit:,}-byte limit")
            fh.write(chunk)
    if size == 0:
        raise HTTPException(400, "POST the image file's bytes as the request body (an empty body was sent)")
    return path


def _check_image(path: str, max_pixels: int) -> None:
    """Refuse what is not a decodable image, or has more pixels than allowed (a decompression bomb),
    before the model sees it."""
    try:
        with Image.open(path) as image:
            pixels = image.width * image.height
            if pixels > max_pixels:
                raise HTTPException(413, f"the image is {image.width}x{image.height} = {pixels:,} pixels, over "
                                         f"the {max_pixels:,}-pixel limit")
            image.load()
    except HTTPException:
        raise
    except UnidentifiedImageError:
        raise HTTPException(415, "the upload is not an image: send a JPEG, PNG, WebP, HEIC, AVIF, GIF, BMP or "
                                 "TIFF file") from None
    except Image.DecompressionBombError as exc:
        raise HTTPException(413, f"the upload is refused as a possible decompression bomb ({first_line(exc)})") from None
    except Exception as exc:  # truncated or corrupt data
        raise HTTPException(415, f"the upload is not a readable image ({first_line(exc)})") from None


def _as_png(path: str) -> bytes:
    """A PNG of a file browsers cannot show (TIFF, HEIC, RAW ...), decoded as `tmv index` decodes it."""
    buffer = io.BytesIO()
    load_image(path).save(buffer, "PNG")
    return buffer.getvalue()


def create_app(service: SearchService, thumbs: ThumbnailCache, allowed_hosts: set[str]) -> HostGuard:
    """The ASGI app: routes, JSON errors, security headers, and the Host guard outside them all."""

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    async def info(request: Request) -> Response:
        return Json(await service.call(service.info))

    async def curves(request: Request) -> Response:
        return FileResponse(await service.call(service.curves), media_type="image/png", headers={"cache-control": "no-cache"})

    async def timed_search(query: Query) -> Response:
        """The search's own time (not HTTP or queueing) goes in a Server-Timing header: browsers'
        developer tools show it, and benchmarks/bench_serve.py reads it."""
        answer = await service.call(service.search, query)
        return Json(answer.body, headers={"server-timing": f"embed;dur={answer.embed_ms:.2f}, "
                                                           f"search;dur={answer.search_ms:.2f}, cpu;dur={answer.cpu_ms:.2f}"})

    async def search(request: Request) -> Response:
        if request.method == "GET":
            return await timed_search(_query(request, service))
        limits = service.limits
        with tempfile.TemporaryDirectory(prefix="tmv-upload-") as folder:
            query = _query(request, service, upload=True)
            path = await _save_upload(request, limits.max_upload_bytes, folder)
            await run_in_threadpool(_check_image, path, limits.max_upload_pixels)  # decoding: off the event loop
            return await timed_search(dataclasses.replace(query, image=path))

    async def duplicates(request: Request) -> Response:
        groups = await run_in_threadpool(service.dupes.groups)  # its own thread and connection: searches go on
        return Json({"groups": [{**g.to_dict(), "ids": g.ids} for g in groups]})

    async def _path(request: Request) -> str:
        path = await service.call(service.image_path, request.path_params["id"])
        if not os.path.isfile(path):
            raise LookupError(f"image {request.path_params['id']} is in the index but its file is gone; run 'tmv index'")
        return path

    async def thumb(request: Request) -> Response:
        path = await _path(request)
        try:
            etag = f'"{thumbs.key(path)[:32]}"'
            if request.headers.get("if-none-match") == etag:  # the browser's copy is this file's
                return Response(status_code=304, headers={"etag": etag, "cache-control": "no-cache"})
            data = await run_in_threadpool(thumbs.get, path)
        except Exception as exc:
            raise HTTPException(415, f"image {request.path_params['id']} cannot be decoded ({first_line(exc)})") from None
        # no-cache: revalidated by ETag each time, since ids start again from 1 after 'tmv index --rebuild'
        return Response(data, media_type="image/jpeg", headers={"cache-control": "no-cache", "etag": etag})

    async def original(request: Request) -> Response:
        path = await _path(request)
        media = WEB_FORMATS.get(os.path.splitext(path)[1].lower())
        if media is not None:
            return FileResponse(path, media_type=media, headers={"cache-control": "no-cache"})
        try:
            data = await run_in_threadpool(_as_png, path)
        except Exception as exc:
            raise HTTPException(415, f"image {request.path_params['id']} cannot be decoded ({first_line(exc)})") from None
        return Response(data, media_type="image/png")

    app = Starlette(
        routes=[Route("/", page), Route("/api/info", info), Route(CURVES_URL, curves),
                Route("/api/search", search, methods=["GET", "POST"]), Route("/api/duplicates", duplicates),
                Route("/api/thumb/{id:int}", thumb), Route("/api/image/{id:int}", original),
                Mount("/static", StaticFiles(directory=STATIC), name="static")],
        exception_handlers={HTTPException: _http_error, TmvError: _bad_query, LookupError: _not_found,
                            Exception: _failed})
    return HostGuard(_with_security_headers(app), allowed_hosts)


def _with_security_headers(app):
    """The app with SECURITY_HEADERS added to every HTTP response."""

    async def wrapped(scope, receive, send) -> None:
        async def send_secure(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await app(scope, receive, send_secure if scope["type"] == "http" else send)

    return wrapped


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return _error(exc.status_code, exc.detail if exc.status_code != 404 or exc.detail != "Not Found"
                  else f"no such page or endpoint: {request.url.path[:200]}")


async def _bad_query(request: Request, exc: TmvError) -> Response:
    return _error(400, str(exc))


async def _not_found(request: Request, exc: LookupError) -> Response:
    return _error(404, str(exc))


async def _failed(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return _error(500, f"internal error: {first_line(exc)}")

