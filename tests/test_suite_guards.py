"""The suite's own guards: a hang fails, property tests repeat their examples in CI, kill points fire
exactly where named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest


def test_every_test_has_a_timeout(request):
    assert request.config.pluginmanager.hasplugin("timeout")
    assert float(request.config.getini("timeout")) > 0


def test_property_tests_are_derandomized_unless_exploring():
    from conftest import HYPOTHESIS_PROFILE
    from hypothesis import settings

    if HYPOTHESIS_PROFILE == "ci":
        assert settings.default.derandomize and settings.default.database is None
    assert not settings.get_profile("explore").derandomize


@pytest.mark.parametrize("wanted, dies_at", [("out.txt", 1), ("o*.txt#3", 3), ("other.txt", None)])
def test_a_kill_point_fires_the_nth_time_its_pattern_is_reached(tmp_path, wanted, dies_at):
    script = ("import sys\nfrom tinymvlm.atomic import write_text\n"
              "for i in range(1, 4):\n"
              f"    write_text({str(tmp_path / 'out.txt')!r}, str(i))\n"
              "    print(i, flush=True)\n")
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "TMV_KILL_AT": wanted},
                            capture_output=True, text=True, timeout=60)
    if dies_at is None:
        assert result.returncode == 0 and (tmp_path / "out.txt").read_text() == "3"
        return
    assert result.returncode == -signal.SIGKILL
    assert result.stdout.split() == [str(i) for i in range(1, dies_at)]  # died inside write number dies_at
    assert len(list(tmp_path.glob(".out.txt.*.tmp"))) == 1
    assert (tmp_path / "out.txt").read_text() == str(dies_at - 1) if dies_at > 1 else not (tmp_path / "out.txt").exists()


SKIPPING_TESTS = """
import pytest

def test_needs_a_gpu():
    pytest.skip("needs a CUDA GPU")

def test_needs_a_browser():
    pytest.skip("Chromium is not installed")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False

def test_runs():
    pass
"""


def _pytest_with_the_skip_guard(folder, ci: str, allowed: str) -> subprocess.CompletedProcess:
    from pathlib import Path

    (folder / "allowed.txt").write_text(allowed, encoding="utf-8")
    env = {**os.environ, "CI": ci, "TMV_ALLOWED_SKIPS": str(folder / "allowed.txt"),
           "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "helpers.skip_guard",
                           "--rootdir", str(folder), "-c", os.devnull, str(folder)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


def test_in_ci_a_skip_not_on_the_allow_list_fails_the_run(tmp_path):
    (tmp_path / "test_skipping.py").write_text(SKIPPING_TESTS, encoding="utf-8")
    (tmp_path / "test_no_package.py").write_text("import pytest\npytest.importorskip('no_such_package_xyz')\n",
                                                  encoding="utf-8")
    gpu_only = "test_skipping.py::test_needs_a_gpu | no GPU in CI\n"
    result = _pytest_with_the_skip_guard(tmp_path, "true", gpu_only)
    assert result.returncode == 1, result.stdout
    refused = "SKIPPED, NOT ALLOWED IN CI: test_skipping.py::test_needs_a_browser: Chromium is not installed"
    assert refused in result.stdout
    assert "SKIPPED, NOT ALLOWED IN CI: test_no_package.py:" in result.stdout
    assert "test_needs_a_gpu" not in result.stdout.split("skips CI does not allow")[1]
    everything = gpu_only + "test_skipping.py::test_needs_a_b* | no browser\ntest_no_package.py | optional\n"
    assert _pytest_with_the_skip_guard(tmp_path, "true", everything).returncode == 0  # an xfail is no skip
    assert _pytest_with_the_skip_guard(tmp_path, "", gpu_only).returncode == 0  # outside CI a skip is a skip


def test_every_allowed_skip_names_a_test_that_exists_and_says_why():
    from pathlib import Path

    from helpers.skip_guard import allowed_skips

    root = Path(__file__).resolve().parents[1]
    entries = allowed_skips()
    assert 0 < len(entries) <= 5  # a short list
    for entry in entries:
        file, _, name = entry.pattern.partition("::")
        assert (root / file).is_file(), entry
        assert not name or f"def {name.split('[')[0]}(" in (root / file).read_text(encoding="utf-8"), entry
        assert len(entry.why) > 10, entry


def _calls(text: str, pattern: str):
    """(line number, call text) of each call matching `pattern` (up to its closing parenthesis)."""
    import re

    for match in re.finditer(pattern, text):
        depth, end = 0, match.end() - 1
        for end in range(match.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        line_end = text.find("\n", end)
        yield text.count("\n", 0, match.start()) + 1, text[match.start():end + 1] + text[end + 1:line_end]


def test_every_random_draw_in_the_tests_is_seeded():
    """torch's random tensors take a seeded generator=, numpy's come from default_rng(SEED); a draw
    from torch's global stream says why (`# global-stream`), next to the manual_seed it relies on."""
    from pathlib import Path

    unseeded = []
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        if path == Path(__file__):  # the patterns below
            continue
        text = path.read_text(encoding="utf-8")
        for number, call in _calls(text, r"\btorch\.(randn|rand|randint|randperm|normal|multinomial)\("):
            if "generator=" not in call and "# global-stream" not in call:
                unseeded.append(f"{path.name}:{number}: {call}")
        for number, call in _calls(text, r"\bnp\.random\.(rand|randn|randint|random|normal|uniform|choice|"
                                         r"permutation|shuffle|default_rng)\("):
            if call.startswith("np.random.default_rng(") and not call.startswith("np.random.default_rng()"):
                continue
            unseeded.append(f"{path.name}:{number}: {call}")
    assert not unseeded, "\n".join(unseeded)
