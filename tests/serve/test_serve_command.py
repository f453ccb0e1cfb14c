"""`tmv serve` as users start it: the real command in its own process, on a loopback port, asked over
HTTP. Its defences are checked here through the command, not on the app object: a foreign Host, a
foreign Origin on an upload, `--allow-host`, `--max-upload-mb`."""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from helpers.serving import ServerProcess, build_index


def _png(size: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("serve-command")
    folder, _ = build_index(root, tiny_checkpoint, captions=False)
    process = ServerProcess("--index", str(folder), "--thumbs", str(root / "thumbs"), "--device", "cpu",
                            "--allow-host", "Photos.LAN", "--max-upload-mb", "0.02")
    try:
        yield process
    finally:
        process.stop()


def _get(server, host: str) -> httpx.Response:
    return httpx.get(server.url + "api/info", headers={"host": host}, timeout=60)


def test_a_foreign_host_is_refused_and_the_allowed_names_answer(server):
    port = urlsplit(server.url).port
    refused = _get(server, f"evil.example:{port}")
    assert refused.status_code == 403
    assert refused.json()["error"].startswith("refused: Host 'evil.example' is not this server's name")
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"photos.lan:{port}", "PHOTOS.LAN"):
        answered = _get(server, host)
        assert answered.status_code == 200, (host, answered.text)
        assert answered.json()["counts"]["images"] == 9


def test_an_upload_from_a_foreign_page_is_refused_and_one_from_the_servers_own_page_is_searched(server):
    port = urlsplit(server.url).port
    image = _png(16, seed=0)
    search = server.url + "api/search?k=3"
    refused = httpx.post(search, content=image, headers={"origin": "http://evil.example"}, timeout=60)
    assert refused.status_code == 403
    assert refused.json()["error"] == ("refused: a request from the page at 'http://evil.example', "
                                       "which is not this server's")
    for origin in (f"http://127.0.0.1:{port}", f"http://photos.lan:{port}"):
        answered = httpx.post(search, content=image, headers={"origin": origin}, timeout=60)
        assert answered.status_code == 200, answered.text
        assert len(answered.json()["results"]) == 3


def test_max_upload_mb_bounds_the_upload(server):
    limit = int(0.02 * 1024 * 1024)  # 20,971 bytes
    small, large = _png(32, seed=1), _png(96, seed=2)
    assert len(small) < limit < len(large)
    assert httpx.post(server.url + "api/search", content=small, timeout=60).status_code == 200
    refused = httpx.post(server.url + "api/search", content=large, timeout=60)
    assert refused.status_code == 413
    assert f"over the {limit:,}-byte limit" in refused.json()["error"]
