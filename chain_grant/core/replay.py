"""Single use of a JWT's ``jti`` across every process and replica: one row per use in
the database (a unique digest), so a replay fails on any web server, and a database
error fails the request (closed), never lets it through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..client.jose import sha256_hex
from ..models import UsedJti
from .errors import ChainError


def use_once(kind: str, issuer: str, jti: str, exp: float, skew: int = 0) -> None:
    """Record ``jti`` of ``issuer`` (namespaced by ``kind``) until ``exp`` (+ ``skew``);
    ChainError if it was already used."""
    digest = sha256_hex(f"{kind}\x00{issuer}\x00{jti}")
    expires = datetime.fromtimestamp(exp, tz=UTC) + timedelta(seconds=skew)
    try:
        with transaction.atomic():
            UsedJti.objects.create(digest=digest, expires=expires)
    except IntegrityError:
        raise ChainError("The jti was already used.", "invalid_client") from None


def purge_used(now=None) -> int:
    """Delete the rows of JWTs that expired (their jti can no longer be replayed)."""
    return UsedJti.objects.filter(expires__lt=now or timezone.now()).delete()[0]
