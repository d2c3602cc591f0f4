"""Shared by the bench scripts: a throw-away database, so a benchmark never touches
the one it is pointed at (nor the test databases)."""

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit


def throwaway_database(url: str | None, name: str):
    """(DATABASE_URL to use, cleanup function): a temp SQLite file, or a PostgreSQL
    database ``name`` created (and later dropped) on the server ``url`` points at."""
    if not url or url.startswith("sqlite"):
        fd, path = tempfile.mkstemp(prefix=name + "_", suffix=".sqlite3")
        os.close(fd)
        return f"sqlite:///{path}", lambda: [Path(path + s).unlink(missing_ok=True) for s in ("", "-wal", "-shm")]
    import psycopg

    parts = urlsplit(url)

    def admin(sql):  # on the "postgres" maintenance database, never on the one given
        with psycopg.connect(parts._replace(scheme="postgresql", path="/postgres").geturl(), autocommit=True) as c:
            c.execute(sql)

    drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    admin(drop)
    admin(f"CREATE DATABASE {name}")
    return parts._replace(path="/" + name).geturl(), lambda: admin(drop)


HASHERS = {
    "pbkdf2": "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "md5": "django.contrib.auth.hashers.MD5PasswordHasher",
}


def setup_django(database_url: str | None, name: str, hasher: str | None = None):
    """A throw-away database, then Django with tests.settings (DEBUG off, the test
    client's host allowed, and ``hasher`` for client secrets). Returns the cleanup."""
    os.environ["DATABASE_URL"], cleanup = throwaway_database(database_url, name)  # idp_project.settings reads it
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django
    from django.conf import settings

    if hasher:  # DOT hashes client secrets with the first one; the others still verify (a client
        # whose secret was hashed with PBKDF2 beforehand keeps paying PBKDF2, whatever --hasher says)
        settings.PASSWORD_HASHERS = [HASHERS[hasher], *(h for name, h in HASHERS.items() if name != hasher)]
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    django.setup()
    return cleanup


def database_version() -> str:
    """The server's version, for a benchmark's header line."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version" if connection.vendor == "postgresql" else "SELECT sqlite_version()")
        return cursor.fetchone()[0]


def run(main, cleanup, started: float, what: str) -> None:
    """Run a benchmark's main(), always closing the connection and dropping the database."""
    import time

    from django.db import connection

    try:
        main()
    finally:
        connection.close()
        cleanup()
    print(f"total runtime {time.perf_counter() - started:.1f} s ({what})")
