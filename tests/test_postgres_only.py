"""The ``postgres`` marker's hooks (tests/postgres_only.py), run in a pytest of their own
(pytester): on SQLite a marked test is skipped and the summary says, loudly, how many
were; tests skipped for other reasons are not counted; on PostgreSQL nothing is skipped
and nothing is said."""

import pytest

from tests import postgres_only

pytest_plugins = ["pytester"]

CONFTEST = "from tests.postgres_only import pytest_collection_modifyitems, pytest_terminal_summary  # noqa: F401\n"
INI = "[pytest]\nmarkers =\n    postgres: needs PostgreSQL\n"
TESTS = """
import pytest

@pytest.mark.postgres
def test_locks():
    pass

@pytest.mark.postgres
@pytest.mark.parametrize("n", [1, 2])
def test_races(n):
    pass

@pytest.mark.skip(reason="another reason")
def test_skipped_otherwise():
    pass

def test_plain():
    pass
"""


@pytest.fixture
def suite(pytester):
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=TESTS)
    return pytester


def banner(result) -> list[str]:
    return [line for line in result.outlines if "PostgreSQL-only" in line]


def test_on_sqlite_the_summary_counts_the_skipped_postgres_tests(suite, monkeypatch):
    monkeypatch.setattr(postgres_only, "on_postgres", lambda: False)
    result = suite.runpytest("-p", "no:django", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=4)
    assert banner(result) == [
        "============================ PostgreSQL-only tests =============================",
        f"==> 3 PostgreSQL-only tests were SKIPPED (set DATABASE_URL={postgres_only.POSTGRES_URL} to run them)",
    ]


def test_one_skipped_test_is_said_in_the_singular(suite, monkeypatch):
    monkeypatch.setattr(postgres_only, "on_postgres", lambda: False)
    result = suite.runpytest("-p", "no:django", "-p", "no:cacheprovider", "-k", "locks")
    result.assert_outcomes(skipped=1)
    assert banner(result)[-1].startswith("==> 1 PostgreSQL-only test was SKIPPED (set DATABASE_URL=")


def test_without_postgres_tests_nothing_is_said(suite, monkeypatch):
    monkeypatch.setattr(postgres_only, "on_postgres", lambda: False)
    result = suite.runpytest("-p", "no:django", "-p", "no:cacheprovider", "-k", "plain or otherwise")
    result.assert_outcomes(passed=1, skipped=1)
    assert banner(result) == []


def test_on_postgres_nothing_is_skipped_or_said(suite, monkeypatch):
    monkeypatch.setattr(postgres_only, "on_postgres", lambda: True)
    result = suite.runpytest("-p", "no:django", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, skipped=1)
    assert banner(result) == []
