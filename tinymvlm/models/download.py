"""Fetching a hub model's files for its one-time import (`hf:ORG/NAME`, and the weights file of an
`open_clip:ARCH/TAG` kept on the hub): resumable, verified, visible.

huggingface_hub (2.x) downloads into a per-process `.incomplete` file that it deletes on failure, so an
interrupted 600 MB download starts again from zero; and it checks a file's size, not its content, so
wrong bytes of the right size are cached and imported. Its API still names what to fetch; the bytes
are fetched here:

  1. `repo_info` for the revision's commit, `list_repo_tree` for each file's size and hash (an LFS
     file's sha256, a small file's git blob sha1); a missing repo or revision, or an unreachable hub,
     is a one-line TmvError;
  2. only what an import reads (`wanted`): configs, tokenizer files, the safetensors weights (pickled
     .bin weights only when there are none);
  3. each file into user_cache("downloads", ORG--NAME, COMMIT)/PATH.part, resumed with a Range request
     where an earlier try stopped (this process's, or one that was killed), retried a few times;
  4. its hash checked before it is renamed into place: a mismatch removes the part file and is a
     one-line TmvError naming the file;
  5. progress reported to the `Reporter` the CLI registered (`set_reporter`); library callers see none.

Once the import has written its tmv checkpoint, the folder is removed (`discard`): the checkpoint is
all that is read afterwards. The endpoint is $HF_ENDPOINT; a token is the one huggingface_hub has.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from tinymvlm import killpoint
from tinymvlm.errors import TmvError, first_line
from tinymvlm.user_cache import user_cache

log = logging.getLogger(__name__)

RETRIES = 5
CHUNK = 1 << 20
HF_FILES = re.compile(r"(config\.json|preprocessor_config\.json|processor_config\.json|tokenizer.*\.json|"
                      r"special_tokens_map\.json|added_tokens\.json|vocab\.(json|txt)|merges\.txt|.*\.model|"
                      r"model(-\d+-of-\d+)?\.safetensors(\.index\.json)?)")


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files
    blob_id: str  # git blob sha1 (of the pointer, for an LFS file)


class Reporter(Protocol):
    """What the CLI shows of a download: one `start`, `advance` per block, one `finish`."""

    def start(self, ref: str, total_bytes: int) -> None: ...
    def advance(self, n_bytes: int) -> None: ...
    def finish(self) -> None: ...


class _Silent:
    def start(self, ref: str, total_bytes: int) -> None:
        pass

    def advance(self, n_bytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


_reporter: Reporter = _Silent()


def set_reporter(reporter: Reporter | None) -> None:
    """Where download progress goes (the CLI's progress bar); None: nowhere."""
    global _reporter
    _reporter = reporter or _Silent()


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _headers() -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    return {**build_hf_headers(library_name="tinymvlm"), "Accept-Encoding": "identity"}


def _hub_error(exc: BaseException, ref: str) -> TmvError:
    """huggingface_hub's and urllib's errors as one line that says what to do."""
    response = getattr(exc, "response", None)
    headers = exc.headers if isinstance(exc, urllib.error.HTTPError) else getattr(response, "headers", None) or {}
    code, name = headers.get("X-Error-Code"), type(exc).__name__
    if code == "RepoNotFound" or name == "RepositoryNotFoundError":
        return TmvError(f"model '{ref}' was not found on the Hugging Face hub ({endpoint()}): check the name "
                        "('tmv models' lists recommended ones); a private or gated model needs `hf auth login`")
    if code == "RevisionNotFound" or name == "RevisionNotFoundError":
        return TmvError(f"model '{ref}': no such revision on the Hugging Face hub")
    if code == "GatedRepo" or name == "GatedRepoError":
        return TmvError(f"model '{ref}' is gated: accept its terms on the hub, then log in with `hf auth login`")
    return TmvError(f"cannot fetch '{ref}' from the Hugging Face hub ({endpoint()}): {first_line(exc)}")


def listing(repo_id: str, ref: str, revision: str = "main") -> tuple[str, list[RemoteFile]]:
    """(commit, files) of a hub model repo."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint())
    try:
        commit = api.repo_info(repo_id, revision=revision).sha
        tree = api.list_repo_tree(repo_id, recursive=True, revision=commit)
        files = [RemoteFile(f.path, f.size, f.lfs.sha256 if f.lfs else None, f.blob_id)
                 for f in tree if isinstance(f, RepoFile)]
    except Exception as exc:  # every hub or network error of the listing: one line
        raise _hub_error(exc, ref) from exc
    return commit, files


def wanted(files: list[RemoteFile]) -> list[RemoteFile]:
    """What an import of a Hugging Face CLIP/SigLIP folder reads: safetensors weights, pickled ones only
    when there are none (transformers then loads them with weights_only)."""
    chosen = [f for f in files if "/" not in f.path and HF_FILES.fullmatch(f.path)]
    if not any(f.path.endswith(".safetensors") for f in chosen):
        chosen += [f for f in files if re.fullmatch(r"pytorch_model(-\d+-of-\d+)?\.bin(\.index\.json)?", f.path)]
    return chosen


def _digest(path: Path, remote: RemoteFile) -> tuple[str, str]:
    """(found, expected) hash of a downloaded file: sha256 for LFS, git blob sha1 otherwise."""
    if remote.sha256:
        digest, expected = hashlib.sha256(), remote.sha256
    else:
        digest, expected = hashlib.sha1(b"blob %d\0" % path.stat().st_size), remote.blob_id
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest(), expected


def _get(url: str, part: Path, name: str) -> None:
    """Append the rest of `url` to `part` (a Range request from its size; anew if the server ignores it)."""
    have = part.stat().st_size if part.exists() else 0
    headers = _headers() | ({"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:
        resumed = bool(have) and response.status == 206
        if have and not resumed:
            _reporter.advance(-have)
        with open(part, "ab" if resumed else "wb") as out:
            for block in iter(lambda: response.read1(CHUNK), b""):  # what has arrived, on disk at once:
                out.write(block)  # a killed process leaves every byte it received for the next one
                out.flush()
                _reporter.advance(len(block))
                killpoint.reached(f"download {name}")


def _drop(part: Path) -> None:
    if part.exists():
        _reporter.advance(-part.stat().st_size)
        part.unlink()


def download(url: str, target: Path, remote: RemoteFile, ref: str) -> Path:
    """`target`, fetched into `target.part` (resumed from its size) and checked against `remote`'s hash."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    failure: BaseException = OSError("no attempt")
    for _ in range(RETRIES):
        if part.exists() and part.stat().st_size > remote.size:
            part.unlink()  # a stale part file of another version (not counted as done by `fetch`)
        if not part.exists() or part.stat().st_size < remote.size:
            try:
                _get(url, part, remote.path)
            except urllib.error.HTTPError as exc:
                if exc.code != 416:
                    raise _hub_error(exc, ref) from exc
                failure = exc  # asked past the end: the part file is stale
                _drop(part)
                continue
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:  # dropped: resume
                log.info("download of %s interrupted (%s); resuming", remote.path, first_line(exc))
                failure = exc
                continue
        size = part.stat().st_size
        if size != remote.size:
            failure = OSError(f"{size} of {remote.size} bytes")
            continue
        found, expected = _digest(part, remote)
        if found != expected:
            _drop(part)
            raise TmvError(f"the download of '{ref}' is corrupt: {remote.path} has checksum {found[:12]}..., the hub "
                           f"names {expected[:12]}... (removed; run the command again, or check HF_ENDPOINT or a proxy)")
        part.replace(target)
        return target
    raise TmvError(f"the download of '{ref}' is incomplete ({remote.path}: {first_line(failure)}); "
                   "run the command again to resume it")


def fetch(repo_id: str, ref: str, files: Callable[[list[RemoteFile]], list[RemoteFile]] = wanted) -> Path:
    """The folder holding the files `files` picks of a hub model, downloaded (or resumed) and verified."""
    commit, remote = listing(repo_id, ref)
    chosen = files(remote)
    if not chosen:
        raise TmvError(f"model '{ref}' on the Hugging Face hub has none of the files an import needs")
    folder = _folder(repo_id) / commit
    log.info("downloading %s: %d files, %.1f MB, into %s", ref, len(chosen), sum(f.size for f in chosen) / 1e6, folder)
    missing = [f for f in chosen if not (folder / f.path).is_file()]
    _reporter.start(ref, sum(f.size for f in missing))
    try:
        for f in missing:
            part = folder / (f.path + ".part")
            done = part.stat().st_size if part.exists() else 0
            _reporter.advance(done if done <= f.size else 0)
            url = f"{endpoint()}/{repo_id}/resolve/{commit}/{urllib.parse.quote(f.path)}"
            download(url, folder / f.path, f, ref)
    finally:
        _reporter.finish()
    return folder


def _folder(repo_id: str) -> Path:
    return user_cache("downloads", repo_id.replace("/", "--"))


def discard(repo_id: str) -> None:
    """Remove a model's fetched files once its import is saved (the tmv checkpoint is all that is read later)."""
    shutil.rmtree(_folder(repo_id), ignore_errors=True)
