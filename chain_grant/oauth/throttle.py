"""Rate limits for the chain's anonymous browser entry points, per client and IP,
through Django's cache: a wallet request page writes a row and draws a QR code,
and anyone may ask for one. DOT's own authorize endpoint is not touched.

    CHAIN_GRANT["RATE_LIMITS"] = {"wallet_request": [300, 60], "chain_authorize": [600, 60]}
    # [requests, seconds] per client and IP; None (or a missing key) = no limit
"""

from __future__ import annotations

import time

from django.core.cache import caches

from ..client.jose import sha256_hex
from ..settings import chain_grant_settings


def retry_after(kind: str, request, client_id: str) -> int | None:
    """None if this request is within the limit (and count it); else the seconds
    until the window ends, for ``Retry-After``. A cache that fails lets it through:
    the limit protects capacity, it is not an authorization rule."""
    limit = (chain_grant_settings.RATE_LIMITS or {}).get(kind)
    if not limit or getattr(request, "user", None) is not None and request.user.is_authenticated:
        return None
    count, window = int(limit[0]), int(limit[1])
    now = int(time.time())
    bucket = now // window
    ip = request.META.get("REMOTE_ADDR", "")
    key = f"chain_grant:rate:{kind}:{sha256_hex(client_id + '|' + ip)[:32]}:{bucket}"
    cache = caches[chain_grant_settings.RATE_LIMIT_CACHE]
    try:
        if cache.add(key, 1, window + 1):
            return None
        seen = cache.incr(key)
    except Exception:  # noqa: BLE001  (a cache outage must not take the login page down)
        return None
    return None if seen <= count else (bucket + 1) * window - now or 1
