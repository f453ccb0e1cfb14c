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
