"""Searching leaves no trace: no file or folder of the index changes, nothing is created, and a
read-only copy of an index (here: no write permission for the searching user) searches as well."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from tinymvlm.cli.main import cli
from tinymvlm.index import Index
from tinymvlm.index.catalog import Catalog

# Root reads and writes past permission bits; without its capabilities it is held to them as the
# files' owner, like any user, and still reads this checkout and its environment wherever they live.
NO_CAPABILITIES = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]


def _tree(folder: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime) of the folder, every subfolder and every file."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in [".", *files]:
            path = Path(dirpath) / name
            st = path.stat()
            out[str(path.relative_to(folder))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def built(tmp_path, colour_folder, tiny_checkpoint) -> Path:
    result = CliRunner().invoke(cli, ["index", str(colour_folder), "--index", str(tmp_path / "idx"), "--checkpoint",
                                      str(tiny_checkpoint), "--workers", "0", "--captions", str(colour_folder / "red.txt")])
    assert result.exit_code == 0, result.output
    return tmp_path / "idx"


def test_a_search_changes_nothing_on_disk(built):
    before = _tree(built)
    for args in (["a red square"], ["a red square", "--texts"], ["--image", str(built.parent / "images" / "red.png")]):
        result = CliRunner().invoke(cli, ["search", *args, "--index", str(built), "--json"])
        assert result.exit_code == 0, result.output
        assert _tree(built) == before, args
    with Index(built) as index:
        for _ in range(3):
            assert index.search("a blue square", k=2)
    assert _tree(built) == before
    assert not [p for p in before if p.endswith(("-wal", "-shm"))]


SEARCH_AS_USER = """
import json, sys
from click.testing import CliRunner
from tinymvlm.cli.main import cli
for index in sys.argv[2:]:
    result = CliRunner().invoke(cli, ["search", "a red square", "--index", index, "--checkpoint", sys.argv[1], "--json", "-k", "3"])
    print(json.dumps([result.exit_code, result.stdout, result.stderr]))
"""


def test_a_read_only_copy_is_searched(built, tiny_checkpoint):
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("root ignores permissions, and setpriv (util-linux) is missing to drop its capabilities")
    root = Path(tempfile.mkdtemp(prefix="tmv-readonly-"))
    try:
        root.chmod(0o755)
        shutil.copytree(built, root / "idx")
        shutil.copytree(built, root / "private")
        shutil.copy(tiny_checkpoint, root / "model.safetensors")
        for path in [root / "idx", *(root / "idx").iterdir(), root / "private", *(root / "private").iterdir(),
                     root / "model.safetensors"]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        (root / "private" / "catalog.sqlite").chmod(0)  # not this user's to read
        before = _tree(root)
        command = [sys.executable, "-c", SEARCH_AS_USER, str(root / "model.safetensors"), str(root / "idx"),
                   str(root / "private")]
        env = {**os.environ, "HOME": str(root), "HF_HUB_OFFLINE": "1"}
        done = subprocess.run((NO_CAPABILITIES if os.geteuid() == 0 else []) + command, capture_output=True, text=True,
                              env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        (code, out, err), (private_code, _, private_err) = [json.loads(line) for line in done.stdout.splitlines()]
        assert code == 0 and len([json.loads(line) for line in out.splitlines()]) == 3, err
        assert _tree(root) == before
        message = private_err.strip()  # a one-line error, and no advice to rebuild what is only unreadable
        assert private_code == 2 and message.startswith("error: ") and "\n" not in message, private_err
        assert "cannot be opened for reading" in message and "rebuild" not in message
    finally:
        for dirpath, _, _ in os.walk(root):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(root)


def test_a_writer_connected_while_reading_is_joined_not_bypassed(built):
    """While a writer holds the catalogue open (its -wal exists), a reader sees its commits."""
    writer = Catalog(built / "catalog.sqlite")
    reader = Catalog(built / "catalog.sqlite", readonly=True)
    try:
        with reader.snapshot():
            count = reader.count("images")
        with writer.transaction():
            writer.delete_images(writer.ids("images")[:1].tolist())
        with reader.snapshot():
            assert reader.count("images") == count - 1
    finally:
        reader.close()
        writer.close()
    reader = Catalog(built / "catalog.sqlite", readonly=True)  # no writer now: the file as it is
    try:
        with reader.snapshot():
            assert reader.count("images") == count - 1
    finally:
        reader.close()


def test_a_corrupt_catalogue_is_told_to_rebuild(built):
    from tinymvlm.errors import TmvError

    (built / "catalog.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(TmvError, match="is unreadable .*rebuild it"):
        Catalog(built / "catalog.sqlite", readonly=True)


def test_a_checkpoint_under_an_immutable_read_is_caught_and_read_again(built):
    from tinymvlm.index.catalog import CatalogChanged

    reader = Catalog(built / "catalog.sqlite", readonly=True)  # no writer connected: immutable
    try:
        with pytest.raises(CatalogChanged):
            with reader.snapshot():
                count = reader.count("images")
                writer = Catalog(built / "catalog.sqlite")
                with writer.transaction():
                    writer.delete_images(writer.ids("images")[:1].tolist())
                writer.close()  # the last connection checkpoints into the main file
        with reader.snapshot():
            assert reader.count("images") == count - 1
    finally:
        reader.close()
