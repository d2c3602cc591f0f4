"""Single use of a JWT's ``jti`` across every process and replica: one row per use in
the database (a unique digest), so a replay fails on any web server, and a database
error fails the request (closed), never lets it through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, connections, router, transaction
from django.utils import timezone

from ..client.jose import sha256_hex
from ..models import UsedJti
from .errors import ChainError


def use_once(kind: str, issuer: str, jti: str, exp: float, skew: int = 0) -> None:
    """Record ``jti`` of ``issuer`` (namespaced by ``kind``) until ``exp`` (+ ``skew``);
    ChainError if it was already used.

    One statement, no savepoint, on SQLite and PostgreSQL: ``INSERT … ON CONFLICT DO
    NOTHING`` says by its row count whether the jti was new, and never aborts an
    enclosing transaction (the token endpoint records a jti in the transaction that
    writes the code or token). Other databases: the ORM's insert in a savepoint."""
    digest = sha256_hex(f"{kind}\x00{issuer}\x00{jti}")
    expires = datetime.fromtimestamp(exp, tz=UTC) + timedelta(seconds=skew)
    connection = connections[router.db_for_write(UsedJti)]
    if connection.vendor in ("sqlite", "postgresql"):
        quote = connection.ops.quote_name
        digest_column, expires_column = quote(UsedJti.digest.field.column), quote(UsedJti.expires.field.column)
        sql = (
            f"INSERT INTO {quote(UsedJti._meta.db_table)} ({digest_column}, {expires_column}) VALUES (%s, %s) "
            f"ON CONFLICT ({digest_column}) DO NOTHING"
        )
        value = connection.ops.adapt_datetimefield_value(expires)
        with connection.cursor() as cursor:
            cursor.execute(sql, [digest, value])
            new = cursor.rowcount == 1
    else:
        try:
            with transaction.atomic(using=connection.alias):
                UsedJti.objects.using(connection.alias).create(digest=digest, expires=expires)
            new = True
        except IntegrityError:
            new = False
    if not new:
        raise ChainError("The jti was already used.", "invalid_client")


def purge_used(now=None) -> int:
    """Delete the rows of JWTs that expired (their jti can no longer be replayed)."""
    return UsedJti.objects.filter(expires__lt=now or timezone.now()).delete()[0]
