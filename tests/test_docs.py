"""The README and the reference stay true: the command blocks marked runnable run and succeed, the
Python blocks import names that exist, and the README stays short enough to read in two minutes."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_colour_images

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUNNABLE = re.compile(r"<!-- runnable -->\n```bash\n(.*?)```", re.S)
PYTHON = re.compile(r"```python\n(.*?)```", re.S)
README_MAX_LINES = 220


def _blocks(pattern: re.Pattern) -> list:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in pattern.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(pytest.param(match.group(1), id=f"{page.relative_to(ROOT)}:{line}"))
    return found


def runnable_blocks(text: str) -> list[str]:
    return [m.group(1) for m in RUNNABLE.finditer(text)]


def test_the_marker_finds_blocks_and_only_marked_ones():
    text = "<!-- runnable -->\n```bash\ntmv --help\n```\n\n```bash\nrm -rf /\n```\n"
    assert runnable_blocks(text) == ["tmv --help\n"]
    assert len(_blocks(RUNNABLE)) >= 2  # the README's own


@pytest.mark.parametrize("block", _blocks(RUNNABLE))
def test_runnable_block_succeeds(block, tmp_path, request):
    """In a fresh folder holding ./photos (generated solid-colour images), with no trained run and a
    data folder of its own, so the built-in model answers, as on a new install."""
    if re.search(r"tmv (index|search|score|eval|serve)", block):
        request.getfixturevalue("builtin_checkpoint")  # built once per session, in the session's cache
    make_colour_images(tmp_path / "photos")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "XDG_DATA_HOME": str(tmp_path / "data"), "TMV_RUNS": str(tmp_path / "runs")}
    env.pop("TMV_INDEX", None)
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{block}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.stdout.strip(), f"{block} printed nothing on stdout"
    if "tmv search" in block:  # the hits are the generated images
        hits = result.stdout.split()
        assert hits and all((tmp_path / "photos" / Path(hit).name).is_file() for hit in hits[-3:]), result.stdout


@pytest.mark.parametrize("block", _blocks(PYTHON))
def test_python_block_imports_names_that_exist(block):
    """A reference that names a module or function moved away since is caught here, without running
    the example (which needs a trained run)."""
    tree = ast.parse(block)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tinymvlm":
            module = importlib.import_module(node.module)
            missing = [alias.name for alias in node.names if not hasattr(module, alias.name)]
            assert not missing, f"{node.module} has no {missing}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tinymvlm":
                    importlib.import_module(alias.name)


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_every_docs_page_is_in_the_nav():
    """mkdocs build --strict (CI) says the same; this says it in the test run, in a second."""
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]

    def pages(entries) -> set[str]:
        found = set()
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found |= pages(value) if isinstance(value, list) else {value}
        return found

    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages(nav) == on_disk
