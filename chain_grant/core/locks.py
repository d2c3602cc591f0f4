"""Row locks, always taken in one order (see docs/architecture.md, "Lock order").

1. the chain's root row (:func:`lock_chain`);
2. the step being extended or exchanged;
3. DOT's rows (``Grant``, then tokens).

Hops, joins of a browser step, revocations and replays take the root first, so a
revocation never misses a child committed while it runs (READ COMMITTED snapshots).
"""

from __future__ import annotations

from ..models import ChainedGrant


def lock_chain(root_id) -> None:
    """Lock a chain's root row (``SELECT … FOR UPDATE``; a no-op outside a transaction
    on SQLite, whose writers are serialised anyway)."""
    list(ChainedGrant.objects.select_for_update().filter(pk=root_id).values_list("pk", flat=True))


def lock_steps(pks) -> None:
    """Lock steps of one chain (after :func:`lock_chain`), in primary-key order."""
    list(ChainedGrant.objects.select_for_update().filter(pk__in=pks).order_by("pk").values_list("pk", flat=True))
