"""In CI (CI=true), a skipped test fails the run unless tests/allowed_skips.txt lists it with the reason
CI may skip it: a missing package, browser or dataset must not turn dozens of tests into a green run.

A pytest plugin: tests/conftest.py takes its hooks; `pytest -p helpers.skip_guard` loads it alone.
TMV_ALLOWED_SKIPS names another allow-list file (the guard's own test uses one).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

ALLOWED_SKIPS = Path(__file__).resolve().parents[1] / "allowed_skips.txt"
_unexpected: list[tuple[str, str]] = []


@dataclass(frozen=True)
class AllowedSkip:
    pattern: str  # a node id, or a glob over node ids
    why: str


def strict() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def allowed_skips(path: Path | None = None) -> list[AllowedSkip]:
    """The allow-list: one `NODE-ID-GLOB | why CI may skip it` a line; # comments and blank lines."""
    path = path or Path(os.environ.get("TMV_ALLOWED_SKIPS", ALLOWED_SKIPS))
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, sep, why = (part.strip() for part in line.partition("|"))
        if not sep or not pattern or not why:
            raise pytest.UsageError(f"{path}:{number}: write 'NODE-ID-GLOB | why CI may skip it'")
        entries.append(AllowedSkip(pattern, why))
    return entries


def is_allowed(nodeid: str, entries: list[AllowedSkip]) -> bool:
    return any(fnmatch.fnmatchcase(nodeid, e.pattern) for e in entries)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _record(report) -> None:
    unexpected = report.skipped and not hasattr(report, "wasxfail")  # an xfail is reported as skipped too
    if strict() and unexpected and not is_allowed(report.nodeid, allowed_skips()):
        _unexpected.append((report.nodeid, _skip_reason(report)))


def pytest_runtest_logreport(report) -> None:
    _record(report)


def pytest_collectreport(report) -> None:
    _record(report)  # a module-level importorskip skips a whole file at collection


def pytest_sessionfinish(session, exitstatus) -> None:
    if _unexpected and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    if _unexpected:
        terminalreporter.section("skips CI does not allow (tests/allowed_skips.txt)", red=True)
        for nodeid, reason in _unexpected:
            terminalreporter.line(f"SKIPPED, NOT ALLOWED IN CI: {nodeid}: {reason}", red=True)
