"""Test settings: idp_project's, with fast password hashing. PostgreSQL when
DATABASE_URL is set (idp_project reads it), SQLite otherwise."""

import os
import tempfile

from idp_project.settings import *  # noqa: F403

# Client secrets are hashed with the first hasher; PBKDF2 would make every token
# request cost ~190 ms (see bench/) and say nothing more about correctness.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

OAUTH2_PROVIDER = {**OAUTH2_PROVIDER, "ALWAYS_RELOAD_OAUTHLIB_CORE": True}  # noqa: F405
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A file, not shared-cache memory: threads (live server, Celery worker) then get
    # SQLite's busy timeout instead of "database table is locked" errors.
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.gettempdir(), f"chain_grant_test_{os.getpid()}.sqlite3")
    }

# The chain's anonymous rate limits (CHAIN_GRANT["RATE_LIMITS"]) would count every
# test's requests from 127.0.0.1 in one window; tests/test_rate_limits.py turns them on.
CHAIN_GRANT = {**CHAIN_GRANT, "RATE_LIMITS": {}}  # noqa: F405
