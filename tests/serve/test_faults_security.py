"""Fault suite, security: no one else's code runs. A pickle posing as a checkpoint or weights file is refused
by every command without being unpickled; captions and paths stay text in `--html` pages; the source starts no
shell (no shell keyword, os.system or popen), imports no pickle and has no unguarded torch.load.

`tinymvlm.load` on a pickle is tests/models/test_checkpoint.py::test_a_pickle_posing_as_a_checkpoint_is_refused_without_running_it;
the contact sheet on its own is tests/cli/test_search.py::test_contact_sheet_escapes_paths_and_captions.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from tinymvlm.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil(tmp_path):
    """(pickle file named like a checkpoint, one named like .pth weights, marker that must never appear)."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"state_dict": _Payload(str(marker))})
    checkpoint = tmp_path / "run" / "latest.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(payload)
    weights = tmp_path / "weights.pth"
    weights.write_bytes(payload)
    return checkpoint, weights, marker


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's weights-only unpickler, refusing it
def test_a_pickle_posing_as_a_checkpoint_is_refused_by_every_command(evil, tmp_path, colour_folder, tiny_model_config,
                                                                       tiny_checkpoint):
    from tinymvlm.index import Index

    from tinymvlm.inference.runtime import Runtime

    checkpoint, weights, marker = evil
    Index(tmp_path / "built", checkpoint=tiny_checkpoint).add([colour_folder], runtime=Runtime(workers=0))
    runner = CliRunner()
    commands = {
        "index": ["index", str(colour_folder), "--index", str(tmp_path / "idx"), "--checkpoint", str(checkpoint)],
        "search": ["search", "cat", "--index", str(tmp_path / "built"), "--checkpoint", str(checkpoint)],
        "eval": ["eval", "--checkpoint", str(checkpoint), "--data", str(colour_folder)],
        "train --resume": ["train", "--resume", str(checkpoint), "--data", str(colour_folder), "--workers", "0"],
        "train --image-weights": ["train", "--data", str(colour_folder), "--image-model", tiny_model_config.image_model,
                                  "--image-weights", str(weights), "--text-model", tiny_model_config.text_model,
                                  "--no-pretrained", "--image-size", "32", "--epochs", "1", "--workers", "0",
                                  "--out-dir", str(tmp_path / "out")],
    }
    for name, args in commands.items():
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (name, result.output)
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("error: ") and ("not a tinymvlm checkpoint" in last
                                               or "could not read image weights" in last), (name, last)
        assert "Traceback" not in result.output
        assert not marker.exists(), f"{name} ran the pickle's code"


def test_html_contact_sheet_keeps_hostile_captions_and_names_as_text(tmp_path, tiny_checkpoint):
    photos = tmp_path / "photos"
    photos.mkdir()
    hostile_name = photos / '"><script>alert(1)<img src=x onerror=alert(2)>.png'
    Image.new("RGB", (16, 16), (200, 10, 10)).save(hostile_name)
    captions = tmp_path / "captions.txt"
    captions.write_text("<script>alert('caption')</script> a red square\n<b onmouseover=alert(3)>bold</b>\n",
                        encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(cli, ["index", str(photos), "--index", str(tmp_path / "idx"), "--checkpoint",
                                 str(tiny_checkpoint), "--captions", str(captions), "--workers", "0"])
    assert result.exit_code == 0, result.output
    for args in (["--texts", "a red square"], ["--image", str(hostile_name)]):
        page_file = tmp_path / "sheet.html"
        result = runner.invoke(cli, ["search", "--index", str(tmp_path / "idx"), "--html", str(page_file), *args])
        assert result.exit_code == 0, result.output
        page = page_file.read_text(encoding="utf-8")
        assert "<script" not in page and "<b " not in page and "&lt;script&gt;" in page
        tags = page.split("<img")[1:]  # the only <img> tags are the thumbnails themselves
        assert all(t.startswith(' src="data:image/jpeg;base64,') for t in tags)
        if "--image" in args:  # the name is shown, escaped: title, heading (the query), alt text, caption
            assert page.count("&quot;&gt;&lt;script&gt;alert(1)&lt;img src=x onerror=alert(2)&gt;.png") == 4


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield node, owner, name


def test_no_shell_no_pickle_no_unguarded_torch_load_in_the_source():
    sources = [p for folder in ("tinymvlm", "index", "serve", "cli", "examples", "benchmarks") for p in (ROOT / folder).rglob("*.py")]
    assert len(sources) > 20
    problems = []
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "shelve") for n in names):
                    problems.append(f"{path}:{node.lineno}: imports a pickle-like module")
        for node, owner, name in _calls(tree):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            keywords = {k.arg: k.value for k in node.keywords}
            shell = keywords.get("shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                problems.append(f"{where}: shell=")
            if (owner, name) in (("os", "system"), ("os", "popen")) or isinstance(node.func, ast.Name) and name in (
                    "eval", "exec"):
                problems.append(f"{where}: {owner + '.' if owner else ''}{name}()")
            if owner == "torch" and name == "load":
                guard = keywords.get("weights_only")
                if not (isinstance(guard, ast.Constant) and guard.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
    assert problems == []
