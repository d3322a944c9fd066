"""Fixtures shared by every test directory. Keep this generic; area-specific fixtures live in the
``conftest.py`` of their own directory.

``summary`` lets a test record result lines (counts, measured ratios) that pytest prints in a
section of its terminal summary, so they are visible without ``-s``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

_SUMMARY = pytest.StashKey[dict[str, list[str]]]()

Summary = Callable[[str, str], None]


@pytest.fixture(scope="session")
def summary(pytestconfig: pytest.Config) -> Summary:
    """``summary(section, line)`` adds ``line`` under ``section`` in the terminal summary."""
    sections = pytestconfig.stash.setdefault(_SUMMARY, {})

    def add(section: str, line: str) -> None:
        sections.setdefault(section, []).append(line)

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for section, lines in config.stash.get(_SUMMARY, {}).items():
        terminalreporter.section(section)
        for line in lines:
            terminalreporter.write_line(line)
