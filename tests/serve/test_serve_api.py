"""`tmv serve`'s JSON API: every endpoint, every bad input, the Host guard, thumbnails, live index updates."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from helpers.serving import HOSTILE_CAPTION, HOSTILE_NAME, build_index, make_service
from starlette.testclient import TestClient
from tinymvlm.cli.main import cli
from tinymvlm.index import Index, Progress
from tinymvlm.index.query_syntax import Term
from tinymvlm.serve import thumbnails as thumbs
from tinymvlm.serve.app import STATIC, create_app
from tinymvlm.serve.service import Limits
from tinymvlm.serve.thumbnails import ThumbnailCache

from tinymvlm.inference.runtime import Runtime

HOSTS = {"testserver", "127.0.0.1", "localhost"}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("served")
    folder, images = build_index(root, tiny_checkpoint)
    service = make_service(folder)
    client = TestClient(create_app(service, ThumbnailCache(root / "thumbs"), HOSTS))
    yield client, folder, images, service
    service.close()


def png_bytes(size=(48, 48), colour=(220, 30, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 0).save(buffer, "PNG")
    return buffer.getvalue()


def cli_json(folder: Path, *args: str) -> list[dict]:
    result = CliRunner().invoke(cli, ["search", "--index", str(folder), "--json", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_same_records(api: list[dict], cli_rows: list[dict]) -> None:
    """Equal records; scores to float tolerance (the two processes may sum in another order)."""
    assert [{k: v for k, v in r.items() if k != "score"} for r in api] == \
           [{k: v for k, v in r.items() if k != "score"} for r in cli_rows]
    assert [r["score"] for r in api] == pytest.approx([r["score"] for r in cli_rows], abs=1e-4)


def test_info(served):
    client, folder, images, _ = served
    info = client.get("/api/info").json()
    assert info["folder"] == str(folder) and info["folders"] == [str(images)]
    assert info["counts"] == {"images": 9, "captions": 3, "skipped": 0}
    assert info["model"]["image_arch"] == "test_vit" and len(info["model"]["fingerprint"]) > 8
    assert info["limits"]["max_k"] == Limits().max_k


def test_text_image_and_caption_queries_agree_with_the_cli(served):
    client, folder, images, _ = served
    query = "red + blue - green:0.5"
    api = client.get("/api/search", params={"q": query, "k": 5})
    assert api.status_code == 200 and api.headers["content-type"].startswith("application/json")
    assert re.fullmatch(r"embed;dur=\d+\.\d\d, search;dur=\d+\.\d\d, cpu;dur=\d+\.\d\d", api.headers["server-timing"])
    assert_same_records(api.json()["results"], cli_json(folder, "-k", "5", query))

    texts = client.get("/api/search", params={"q": "a plain blue square", "kind": "captions"}).json()
    assert_same_records(texts["results"], cli_json(folder, "--texts", "a plain blue square"))
    assert texts["results"][0]["caption"] == "a plain blue square"

    red = images / "red.png"
    upload = client.post("/api/search", params={"k": 4}, content=red.read_bytes()).json()
    assert_same_records(upload["results"], cli_json(folder, "-k", "4", "--image", str(red)))
    assert upload["results"][0]["path"] == str(red) and upload["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)

    image_to_text = client.post("/api/search", params={"kind": "captions"}, content=red.read_bytes()).json()
    assert_same_records(image_to_text["results"], cli_json(folder, "--texts", "--image", str(red)))

    mixed = client.post("/api/search", params={"q": "night:0.5", "k": 3}, content=red.read_bytes()).json()
    assert_same_records(mixed["results"], cli_json(folder, "-k", "3", "--image", str(red), "night:0.5"))


def test_more_like_this_by_id(served):
    client, _, images, _ = served
    red = client.post("/api/search", params={"k": 1}, content=(images / "red.png").read_bytes()).json()["results"][0]
    like = client.get("/api/search", params={"like": red["id"], "k": 3}).json()["results"]
    assert like[0]["id"] == red["id"] and like[0]["score"] == pytest.approx(1.0, abs=1e-5)
    upload = client.post("/api/search", params={"k": 3}, content=(images / "red.png").read_bytes()).json()["results"]
    assert [r["id"] for r in like] == [r["id"] for r in upload]
    texts = client.get("/api/search", params={"like": red["id"], "kind": "captions"}).json()["results"]
    assert len(texts) == 3 and {"caption", "id", "rank", "score"} == set(texts[0])


def test_paging(served):
    client, *_ = served
    whole = client.get("/api/search", params={"q": "square", "k": 9}).json()
    assert len(whole["results"]) == 9 and whole["more"] is False
    pages, offset = [], 0
    while True:
        page = client.get("/api/search", params={"q": "square", "k": 4, "offset": offset}).json()
        pages += page["results"]
        offset += 4
        if not page["more"]:
            break
    assert [r["id"] for r in pages] == [r["id"] for r in whole["results"]]
    assert [r["rank"] for r in pages] == list(range(1, 10))
    assert client.get("/api/search", params={"q": "square", "offset": 50}).json()["results"] == []


@pytest.mark.parametrize("params, status, message", [
    ({}, 400, "give a query"),
    ({"q": "   "}, 400, "give a query"),
    ({"q": "cat", "k": "0"}, 400, "k=0 is out of range: use 1..100"),
    ({"q": "cat", "k": "101"}, 400, "k=101 is out of range"),
    ({"q": "cat", "k": "ten"}, 400, "k='ten' is not a whole number"),
    ({"q": "cat", "offset": "-1"}, 400, "offset=-1 is out of range"),
    ({"q": "cat", "offset": "1001"}, 400, "offset=1001 is out of range"),
    ({"q": "cat", "kind": "videos"}, 400, "kind='videos': use images or captions"),
    ({"q": "cat", "like": "1"}, 400, "like=ID searches by one image alone"),
    ({"like": "999999"}, 404, "no image with id 999999"),
    ({"like": "-3"}, 400, "like=-3 is out of range"),
    ({"q": "cat + dog - cat - dog"}, 400, "cancel out"),
])
def test_bad_queries_get_a_json_error(served, params, status, message):
    client, *_ = served
    response = client.get("/api/search", params=params)
    assert response.status_code == status and message in response.json()["error"]


def test_bad_uploads(served):
    client, *_ = served
    cases = [
        (b"", 400, "an empty body was sent"),
        (b"this is not an image at all", 415, "not an image"),
        (png_bytes()[:60], 415, "not a readable image"),  # truncated
        (png_bytes((7000, 7000), mode="L"), 413, "7000x7000 = 49,000,000 pixels, over the 40,000,000-pixel limit"),
    ]
    for body, status, message in cases:
        response = client.post("/api/search", content=body)
        assert response.status_code == status and message in response.json()["error"], response.text


def test_upload_size_limit(served, tmp_path):
    _, folder, *_ = served
    service = make_service(folder, Limits(max_upload_bytes=4096))
    try:
        client = TestClient(create_app(service, ThumbnailCache(None), HOSTS))
        big = png_bytes((300, 300)) + os.urandom(5000)
        response = client.post("/api/search", content=big)
        assert response.status_code == 413 and "over the 4,096-byte limit" in response.json()["error"]

        def chunks():  # no Content-Length: the limit is enforced while reading
            yield big[:3000]
            yield big[3000:]

        response = client.post("/api/search", content=chunks())
        assert response.status_code == 413 and "over the 4,096-byte limit" in response.json()["error"]
        assert client.post("/api/search", content=png_bytes()).status_code == 200
    finally:
        service.close()


def test_thumbnails_and_originals_by_id_only(served):
    client, _, images, _ = served
    hit = client.post("/api/search", params={"k": 1}, content=(images / "red.png").read_bytes()).json()["results"][0]
    thumb = client.get(f"/api/thumb/{hit['id']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (48, 48)  # small images are not enlarged
    again = client.get(f"/api/thumb/{hit['id']}", headers={"if-none-match": thumb.headers["etag"]})
    assert again.status_code == 304 and not again.content
    original = client.get(f"/api/image/{hit['id']}")
    assert original.status_code == 200 and original.content == (images / "red.png").read_bytes()
    assert original.headers["content-type"] == "image/png" and original.headers["x-content-type-options"] == "nosniff"
    for path in ("/api/image/999999", "/api/thumb/999999"):
        response = client.get(path)
        assert response.status_code == 404 and "no image with id 999999" in response.json()["error"]


@pytest.mark.parametrize("path", [
    "/api/image/..%2f..%2f..%2fetc%2fpasswd", "/api/image/%2Fetc%2Fpasswd", "/api/thumb/1%2f..%2f2",
    "/static/..%2fapp.py", "/static/%2e%2e/app.py", "/static/%2e%2e%2fservice.py", "/static//etc/passwd",
    "/api/image?path=/etc/passwd", "/api/image/-1",
])
def test_traversal_attempts_are_refused(served, path):
    client, *_ = served
    response = client.get(path)
    assert response.status_code == 404 and "error" in response.json()
    assert b"root:" not in response.content and b"import" not in response.content


def test_a_query_term_naming_a_server_file_stays_text(served):
    client, folder, images, service = served
    red = str(images / "red.png")
    hits = client.get("/api/search", params={"q": red, "k": 9}).json()["results"]
    as_text = service.call_sync(lambda: service.index.search_vector(
        service.index.embed_query([Term(1.0, text=red)]), k=9))
    assert [h["id"] for h in hits] == [h.id for h in as_text]
    assert hits[0]["score"] < 0.99  # an image query for red.png would find itself at 1.0


def test_foreign_host_and_origin_are_refused(served):
    client, *_ = served
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.", ""):
        response = client.get("/api/info", headers={"host": host})
        if host == "localhost.":  # the same name, fully qualified
            assert response.status_code == 200
            continue
        assert response.status_code == 403 and "is not this server's name" in response.json()["error"]
    assert client.get("/api/info", headers={"host": "127.0.0.1:8123"}).status_code == 200
    assert client.get("/", headers={"host": "evil.example"}).status_code == 403
    response = client.post("/api/search", content=png_bytes(), headers={"origin": "http://evil.example"})
    assert response.status_code == 403 and "evil.example" in response.json()["error"]
    response = client.post("/api/search", content=png_bytes(), headers={"origin": "null"})
    assert response.status_code == 403
    assert client.post("/api/search", content=png_bytes(), headers={"origin": "http://127.0.0.1:8123"}).status_code == 200


def test_page_and_assets_are_local_and_escape_by_construction(served):
    client, *_ = served
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for asset in ("app.js", "app.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    text = page.text + "".join(p.read_text() for p in STATIC.iterdir())
    assert "http://" not in text and "https://" not in text  # no CDN: works offline
    script = (STATIC / "app.js").read_text()  # server text goes in through textContent, never parsed as HTML
    assert not re.search(r"\.(inner|outer)HTML|insertAdjacentHTML|document\.write", script)


def test_hostile_names_come_back_as_data(served):
    client, *_ = served
    hits = client.get("/api/search", params={"q": "x", "k": 20}).json()["results"]
    assert any(h["path"].endswith(HOSTILE_NAME) for h in hits)
    captions = client.get("/api/search", params={"q": "x", "kind": "captions"}).json()["results"]
    assert HOSTILE_CAPTION in [c["caption"] for c in captions]


def test_thumbnails_are_made_once_and_cached_across_restarts(served, tmp_path, monkeypatch):
    _, folder, _, service = served

    made = []
    real = thumbs.make_thumbnail
    monkeypatch.setattr(thumbs, "make_thumbnail", lambda *a: made.append(a) or real(*a))
    for _ in range(2):  # a server restart: a new cache object on the same folder
        client = TestClient(create_app(service, ThumbnailCache(tmp_path / "cache"), HOSTS))
        for _ in range(3):
            assert client.get("/api/thumb/2").status_code == 200
    assert len(made) == 1 and len(list((tmp_path / "cache").rglob("*.jpg"))) == 1
    index_files = {p.name for p in folder.iterdir()} - {"catalog.sqlite-wal", "catalog.sqlite-shm"}
    assert index_files == {"manifest.json", "catalog.sqlite", "lock", "images.9.faiss", "captions.3.faiss"}

    unwritable = tmp_path / "file-not-folder"
    unwritable.write_text("x")
    client = TestClient(create_app(service, ThumbnailCache(unwritable / "cache"), HOSTS))
    assert client.get("/api/thumb/2").status_code == 200  # no cache: made per request, still served


class PauseAfterFirstBatch(Progress):
    """Holds a writer after its first committed batch until the test lets it go."""

    def __init__(self) -> None:
        self.committed, self.resume = threading.Event(), threading.Event()

    def advanced(self, done: int, failed: int) -> None:
        if not self.committed.is_set():
            self.committed.set()
            assert self.resume.wait(120)


def test_serves_each_committed_generation_of_a_growing_index(tmp_path, tiny_checkpoint):
    folder, images = build_index(tmp_path, tiny_checkpoint, captions=False)
    service = make_service(folder)
    client = TestClient(create_app(service, ThumbnailCache(None), HOSTS))
    try:
        assert client.get("/api/info").json()["counts"]["images"] == 9
        more = tmp_path / "more"
        more.mkdir()
        for n in range(6):
            Image.new("RGB", (40, 40), (n * 40, 255 - n * 40, 90)).save(more / f"new{n}.{'tif' if n == 5 else 'png'}")
        pause = PauseAfterFirstBatch()
        failure = []

        def write() -> None:
            try:
                with Index(folder, runtime=Runtime(device="cpu")) as writer:
                    writer.add([more], runtime=Runtime(batch_size=2, workers=0, device="cpu"), progress=pause)
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                failure.append(exc)
                pause.committed.set()

        thread = threading.Thread(target=write)
        thread.start()
        try:
            assert pause.committed.wait(120) and not failure
            # Mid-run: the first batch (2 files) is committed, the rest is not; FAISS files are the old ones.
            hits = client.get("/api/search", params={"q": "square", "k": 100}).json()["results"]
            new = [h for h in hits if "/more/" in h["path"]]
            assert len(hits) == 11 and len(new) == 2
            for hit in new:
                assert client.get(f"/api/thumb/{hit['id']}").status_code == 200
                assert client.get("/api/search", params={"like": hit["id"], "k": 1}).json()["results"][0]["id"] == hit["id"]
        finally:
            pause.resume.set()
            thread.join(120)
        assert not failure
        assert client.get("/api/info").json()["counts"]["images"] == 15
        hits = client.get("/api/search", params={"q": "square", "k": 100}).json()["results"]
        assert len(hits) == 15
        tiff = client.get(f"/api/image/{next(h['id'] for h in hits if h['path'].endswith('.tif'))}")
        assert tiff.headers["content-type"] == "image/png"  # browsers cannot show TIFF: sent as PNG
        assert Image.open(io.BytesIO(tiff.content)).getpixel((0, 0)) == (200, 55, 90)

        with Index(folder, runtime=Runtime(device="cpu")) as writer:  # a rebuild replaces the catalogue: new ids
            writer.add([images], rebuild=True, runtime=Runtime(workers=0, device="cpu"))
        hits = client.get("/api/search", params={"q": "square", "k": 100}).json()["results"]
        assert len(hits) == 9 and not any("/more/" in h["path"] for h in hits)
        assert all(client.get(f"/api/thumb/{h['id']}").status_code == 200 for h in hits)
    finally:
        service.close()


READ_ONLY_SCRIPT = """
import json, sys
from starlette.testclient import TestClient
sys.path.insert(0, sys.argv[3])
from helpers.serving import make_service
from tinymvlm.serve.thumbnails import ThumbnailCache
from tinymvlm.serve.app import create_app
service = make_service(sys.argv[1])
client = TestClient(create_app(service, ThumbnailCache(None), {"testserver"}))
hits = client.get("/api/search", params={"q": "red", "k": 3}).json()["results"]
assert client.get(f"/api/thumb/{hits[0]['id']}").status_code == 200
print(json.dumps(hits))
service.close()
"""


def test_a_read_only_index_serves(tmp_path, tiny_checkpoint):
    """On a real read-only file system (a read-only bind mount in a private mount namespace), of an
    index no process has open, so SQLite finds no -wal/-shm files it could use. Root makes the
    namespace itself; another user makes it inside a user namespace of its own (`unshare -r`)."""
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
    if shutil.which("unshare") is None or subprocess.run([*unshare, "true"], capture_output=True).returncode != 0:
        pytest.skip(f"needs '{' '.join(unshare)}' for a read-only mount (root, or unprivileged user namespaces); "
                    "CI runs as root")
    folder, _ = build_index(tmp_path, tiny_checkpoint, captions=False)
    assert sorted(p.name for p in folder.iterdir() if "sqlite" in p.name) == ["catalog.sqlite"]
    mount = tmp_path / "mnt"
    mount.mkdir()
    (tmp_path / "serve_ro.py").write_text(READ_ONLY_SCRIPT)
    shell = (f'mount --bind "{folder}" "{mount}" && mount -o remount,bind,ro "{mount}" && '
             f'exec "{sys.executable}" "{tmp_path / "serve_ro.py"}" "{mount}" - "{Path(__file__).parents[1]}"')
    result = subprocess.run([*unshare, "sh", "-c", shell], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(json.loads(result.stdout.splitlines()[-1])) == 3


def test_host_names_and_the_exposure_warning():
    import socket

    from tinymvlm.cli.serve_cmd import exposure_warning
    from tinymvlm.serve.hostguard import host_name, server_names

    assert [host_name(h) for h in ("A.Example:80", "[::1]:8000", "::1", "localhost.", "[::1", "")] == \
           ["a.example", "::1", "::1", "localhost", "", ""]
    local = server_names("127.0.0.1")
    assert local == {"localhost", "127.0.0.1", "::1"}
    assert socket.gethostname().lower() in server_names("0.0.0.0") and "127.0.0.1" in server_names("0.0.0.0")
    assert "photos.lan" in server_names("127.0.0.1", ["Photos.LAN:8080"])
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert exposure_warning(host, local) is None
    warning = exposure_warning("0.0.0.0", {"localhost", "box"})
    assert warning.startswith("listening on 0.0.0.0: anyone who can reach this machine") and "box, localhost" in warning


def test_cli_errors_before_loading_anything(tmp_path, served):
    import socket

    result = CliRunner().invoke(cli, ["serve", "--index", str(tmp_path / "none")])
    assert result.exit_code == 2 and "error: no index at" in result.output
    _, folder, *_ = served
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        result = CliRunner().invoke(cli, ["serve", "--index", str(folder), "--port", str(busy.getsockname()[1])])
    assert result.exit_code == 2 and "cannot listen on 127.0.0.1:" in result.output and "choose another --port" in result.output


def test_a_text_query_is_embedded_once_for_its_pages_and_kinds(served, monkeypatch):
    client, _, images, service = served
    calls = []
    real = service.index.embed_query
    monkeypatch.setattr(service.index, "embed_query", lambda terms: calls.append(terms) or real(terms))
    query = "a cached query + night:0.5"
    first = client.get("/api/search", params={"q": query, "k": 3}).json()
    again = [client.get("/api/search", params={"q": query, "k": 3, "offset": 3}),
             client.get("/api/search", params={"q": query, "kind": "captions"}),
             client.get("/api/search", params={"q": query, "k": 3})]
    assert len(calls) == 1 and again[2].json() == first
    for _ in range(2):  # uploads are not cached: each may be another image
        client.post("/api/search", content=(images / "red.png").read_bytes())
    assert len(calls) == 3
