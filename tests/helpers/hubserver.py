"""A loopback Hugging Face hub for tests: serves model repos from a local folder in the hub's HTTP
layout, so `huggingface_hub` (hf_hub_download, snapshot_download, transformers' from_pretrained,
open_clip's hf-hub: tags) with HF_ENDPOINT=http://127.0.0.1:PORT downloads them. Standard library only.

    root/ORG/NAME/<files>         one repo per folder (revision "main" = whatever is there)

    with HubServer(root) as hub:   # 127.0.0.1, a free port, a daemon thread
        env["HF_ENDPOINT"] = hub.url
        hub.faults["org/name/model.safetensors"] = Fault(cut_after=1000, times=1)

What huggingface_hub 2.x asks (read from file_download.py, _snapshot_download.py, hf_api.py):

  HEAD /{repo}/resolve/{rev}/{file}   get_hf_file_metadata: X-Repo-Commit (required, else the download
                                      is refused), ETag (git blob sha1 of a regular file), for an LFS file
                                      X-Linked-Etag (its sha256) and X-Linked-Size, Content-Length
                                      (size = X-Linked-Size or Content-Length), Accept-Ranges
  GET  /{repo}/resolve/{rev}/{file}   http_get: the body; with "Range: bytes=N-" (a retry after a
                                      dropped connection, in the same call) a 206 from N. huggingface_hub
                                      2.x downloads into a per-process `<etag>.<uuid>.incomplete` that is
                                      deleted on failure: it resumes only within one call (up to 5
                                      retries), never across processes. It checks the size, not the sha256.
  GET  /api/models/{repo}[/revision/{rev}]   repo_info (snapshot_download): {"id", "sha", "siblings"}
  GET  /api/models/{repo}/tree/{rev}[/{path}]?recursive=true   list_repo_tree (snapshot_download):
                                      [{"type", "path", "size", "oid", "lfs": {"oid", "size", "pointerSize"}}]
  errors                              404 + X-Error-Code: RepoNotFound (no such repo),
                                      EntryNotFound (no such file), RevisionNotFound (a revision other
                                      than main or the commit); hf_raise_for_status maps them to
                                      RepositoryNotFoundError / RemoteEntryNotFoundError / RevisionNotFoundError.

No X-Xet-Hash headers are sent, so files come over plain HTTP even with hf_xet installed.

Faults, per "org/name/file" (`HubServer.faults`), each applied to the next `times` GETs of the file:
  cut_after=N   send the full Content-Length, then close the connection after N body bytes (a dropped
                download; huggingface_hub retries it with a Range request in the same call)
  corrupt=True  same size, wrong bytes (every 4096th byte flipped), headers still naming the true sha256
  truncate=N    serve only the first N bytes with headers that agree (a broken mirror or upload: the
                size check cannot see it, only a checksum can)
`hub.requests` records (method, path, range header) of every request; `hub.cut` is a threading.Event
set when a cut happens, `hub.held` when a held download has sent its bytes (the test then kills the
client and sets `hub.release`): tests wait on events, never sleep.
  hold_after=N  send N body bytes, then hold the connection open until `release` is set
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".model", ".onnx", ".msgpack", ".h5")


@dataclass
class Fault:
    cut_after: int | None = None
    corrupt: bool = False
    truncate: int | None = None
    hold_after: int | None = None  # send N body bytes, set `held`, then wait for `release` (a kill point)
    times: int = 1_000_000  # how many GETs it applies to (then the file is served as it is)


@dataclass
class FileInfo:
    path: str
    size: int
    blob_id: str  # git blob sha1: the ETag of a regular file
    sha256: str
    lfs: bool


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, folder: Path, repo_id: str) -> None:
        self.folder, self.repo_id = folder, repo_id
        self.files: dict[str, FileInfo] = {}
        digest = hashlib.sha1(repo_id.encode())
        for p in sorted(q for q in folder.rglob("*") if q.is_file()):
            data = p.read_bytes()
            rel = p.relative_to(folder).as_posix()
            info = FileInfo(rel, len(data), git_blob_sha1(data), hashlib.sha256(data).hexdigest(),
                            p.suffix in LFS_SUFFIXES or len(data) > 10_000_000)
            self.files[rel] = info
            digest.update(f"{rel}:{info.blob_id}".encode())
        self.sha = digest.hexdigest()  # a 40-hex "commit" that changes with the content


class HubServer:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.faults: dict[str, Fault] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.cut = threading.Event()
        self.held = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        self._repos: dict[str, Repo] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def repo(self, repo_id: str) -> Repo | None:
        folder = self.root / repo_id
        if "/" not in repo_id or ".." in repo_id or not folder.is_dir():
            return None
        with self.lock:  # re-read each time: a test may add or change files
            self._repos[repo_id] = Repo(folder, repo_id)
            return self._repos[repo_id]

    def gets(self, suffix: str) -> list[tuple[str, str, str | None]]:
        """The GET requests whose path ends with `suffix`."""
        return [r for r in self.requests if r[0] == "GET" and r[1].endswith(suffix)]

    # ------------------------------------------------------------------------------------- routing

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlparse(h.path)
        path = unquote(url.path)
        with self.lock:
            self.requests.append(("HEAD" if head else "GET", path, h.headers.get("Range")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._api(h, parts[2:], parse_qs(url.query), head)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(h, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), head)
        self._error(h, 404, None, f"no route for {path}")

    def _error(self, h, status: int, code: str | None, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        h.send_response(status)
        if code:
            h.send_header("X-Error-Code", code)
            h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _json(self, h, payload, head: bool) -> None:
        body = json.dumps(payload).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _repo_or_404(self, h, repo_id: str, revision: str | None) -> Repo | None:
        repo = self.repo(repo_id)
        if repo is None:
            self._error(h, 404, "RepoNotFound", "Repository not found")
            return None
        if revision is not None and revision not in ("main", repo.sha):
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo

    def _api(self, h, parts: list[str], query: dict, head: bool) -> None:
        # /api/models/ORG/NAME[/revision/REV | /tree/REV[/PATH]]
        repo_id, rest = "/".join(parts[:2]), parts[2:]
        revision = unquote(rest[1]) if len(rest) >= 2 and rest[0] in ("revision", "tree") else None
        repo = self._repo_or_404(h, repo_id, revision)
        if repo is None:
            return
        if rest and rest[0] == "tree":
            prefix = "/".join(rest[2:])
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            entries = []
            for info in repo.files.values():
                if prefix and not info.path.startswith(prefix + "/"):
                    continue
                if not recursive and "/" in info.path[len(prefix) + 1 if prefix else 0:]:
                    continue
                entry = {"type": "file", "path": info.path, "size": info.size, "oid": info.blob_id}
                if info.lfs:
                    entry["lfs"] = {"oid": info.sha256, "size": info.size, "pointerSize": 134}
                entries.append(entry)
            return self._json(h, entries, head)
        return self._json(h, {"id": repo_id, "modelId": repo_id, "sha": repo.sha, "private": False, "gated": False,
                              "disabled": False, "tags": [], "siblings": [{"rfilename": f} for f in repo.files]}, head)

    def _resolve(self, h, repo_id: str, revision: str, filename: str, head: bool) -> None:
        repo = self._repo_or_404(h, repo_id, revision)
        if repo is None:
            return
        info = repo.files.get(filename)
        if info is None:
            h.send_response(404)
            h.send_header("X-Error-Code", "EntryNotFound")
            h.send_header("X-Error-Message", "Entry not found")
            h.send_header("X-Repo-Commit", repo.sha)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data = (repo.folder / filename).read_bytes()
        key = f"{repo_id}/{filename}"
        with self.lock:  # a HEAD sees the fault (a truncated file's size) without using up one of its `times`
            fault = self.faults.get(key)
            if fault is None or fault.times <= 0:
                fault = None
            elif not head:
                fault.times -= 1
        if fault is not None and fault.corrupt:
            data = bytearray(data)
            for i in range(0, len(data), 4096):
                data[i] ^= 0xFF
            data = bytes(data)
        if fault is not None and fault.truncate is not None:
            data = data[:fault.truncate]
        size = len(data) if (fault and fault.truncate is not None) else info.size
        start = 0
        ranged = h.headers.get("Range")
        if ranged and not head and ranged.startswith("bytes="):
            first, _, last = ranged[len("bytes="):].partition("-")
            start = int(first) if first else max(0, size - int(last))
            if start >= size:
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
        body = data[start:]
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", repo.sha)
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Type", "application/octet-stream")
        if info.lfs:
            h.send_header("ETag", f'"{info.sha256}"')
            h.send_header("X-Linked-Etag", f'"{info.sha256}"')
            h.send_header("X-Linked-Size", str(size))
        else:
            h.send_header("ETag", f'"{info.blob_id}"')
        if start:
            h.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if head:
            return
        if fault is not None and fault.hold_after is not None:
            h.wfile.write(body[:fault.hold_after])
            h.wfile.flush()
            self.held.set()
            self.release.wait()
            h.close_connection = True
            return
        if fault is not None and fault.cut_after is not None:
            h.wfile.write(body[:fault.cut_after])
            h.wfile.flush()
            h.close_connection = True
            try:
                import socket

                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.cut.set()
            return
        h.wfile.write(body)


if __name__ == "__main__":  # serve a folder by hand: python hubserver.py ROOT
    import sys

    with HubServer(sys.argv[1]) as server:
        print(f"HF_ENDPOINT={server.url}", flush=True)
        threading.Event().wait()
