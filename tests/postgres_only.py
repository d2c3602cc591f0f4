"""The ``postgres`` marker's hooks (tests/conftest.py imports them; no Django here, so
tests/test_postgres_only.py can run them in a pytest of their own): on SQLite, tests
marked ``postgres`` are skipped, and the terminal summary says loudly how many were,
so a SQLite run never passes for the whole suite."""

from __future__ import annotations

import os

import pytest

POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/test"  # what .ci/run uses
SKIP_REASON = "needs PostgreSQL: set DATABASE_URL (CI runs it)"


def on_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres", "pgsql"))


def pytest_collection_modifyitems(config, items):
    if on_postgres():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def skipped_for_postgres(terminalreporter) -> list:
    """The reports of the tests skipped because they are marked ``postgres``."""
    return [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if "postgres" in report.keywords and SKIP_REASON in str(report.longrepr)
    ]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """On SQLite: "==> N PostgreSQL-only tests were SKIPPED (set DATABASE_URL=... to run them)"."""
    if on_postgres():
        return
    skipped = len(skipped_for_postgres(terminalreporter))
    if skipped:
        were = "tests were" if skipped != 1 else "test was"
        terminalreporter.write_sep("=", "PostgreSQL-only tests", yellow=True, bold=True)
        terminalreporter.write_line(
            f"==> {skipped} PostgreSQL-only {were} SKIPPED (set DATABASE_URL={POSTGRES_URL} to run them)",
            yellow=True,
            bold=True,
        )
