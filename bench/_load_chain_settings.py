"""Settings of bench/load.py's chain server: idp_project's (chain_grant plugged in as the
README says), production-like where it matters for speed, with the bench's fast hasher."""

from idp_project.settings import *  # noqa: F403

# Client secrets hashed with MD5 (the bench's "plain" secret): PBKDF2 would cost ~190 ms a
# request and hide everything else (docs/architecture.md, "Client authentication cost").
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", "django.contrib.auth.hashers.PBKDF2PasswordHasher"]
ALLOWED_HOSTS = [*ALLOWED_HOSTS, "testserver"]  # noqa: F405  (the set-up's in-process client)
# Every request of the driver comes from 127.0.0.1: the anonymous rate limits would answer 429.
CHAIN_GRANT = {**CHAIN_GRANT, "RATE_LIMITS": {}}  # noqa: F405
