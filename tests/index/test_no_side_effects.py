"""A failing command leaves the disk as it found it: every input is checked before the index folder
or its lock file is created."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner
from tinymvlm.cli.main import cli


def _tree(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files)


@pytest.fixture
def runner(tmp_path, monkeypatch) -> CliRunner:
    """No runs anywhere: ./runs and $TMV_RUNS are empty folders; the default index is under tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMV_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TMV_INDEX", str(tmp_path / "default-index"))
    return CliRunner()


def _fails(runner, *args: str) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 2, result.output
    # the one line naming the model (pinned in tests/cli/test_models.py) may come first; the error is one line
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("model: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("bad", ["missing folder", "missing checkpoint", "garbage checkpoint", "missing captions",
                                 "nothing to index", "missing folder, shard"])
def test_bad_input_leaves_no_index_folder(runner, tmp_path, colour_folder, tiny_checkpoint, bad):
    (tmp_path / "garbage.safetensors").write_bytes(b"\0" * 64)
    checkpoint = {"missing checkpoint": str(tmp_path / "nope.safetensors"),
                  "garbage checkpoint": str(tmp_path / "garbage.safetensors")}.get(bad, str(tiny_checkpoint))
    paths = {"missing folder": [str(tmp_path / "photoz")], "missing folder, shard": [str(tmp_path / "photoz")],
             "nothing to index": []}.get(bad, [str(colour_folder)])
    extra = {"missing captions": ["--captions", str(tmp_path / "caps.txt")],
             "missing folder, shard": ["--shard", "0/2"]}.get(bad, [])
    before = _tree(tmp_path)
    _fails(runner, "index", *paths, "--index", str(tmp_path / "idx"), "--checkpoint", checkpoint, *extra)
    assert _tree(tmp_path) == before
    assert not (tmp_path / "idx").exists()


def test_search_of_a_missing_index_creates_nothing(runner, tmp_path, tiny_checkpoint):
    before = _tree(tmp_path)
    assert "no index at" in _fails(runner, "search", "red", "--checkpoint", str(tiny_checkpoint))
    assert "no index at" in _fails(runner, "search", "red", "--index", str(tmp_path / "idx"))
    assert _tree(tmp_path) == before


def test_a_good_run_after_failures_still_indexes(runner, tmp_path, colour_folder, tiny_checkpoint):
    _fails(runner, "index", str(tmp_path / "photoz"), "--index", str(tmp_path / "idx"), "--checkpoint", str(tiny_checkpoint))
    result = runner.invoke(cli, ["index", str(colour_folder), "--index", str(tmp_path / "idx"), "--checkpoint",
                                 str(tiny_checkpoint), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "idx" / "lock").is_file() and (tmp_path / "idx" / "lock").read_text() == ""
