"""Row locks, always taken in one order (see docs/architecture.md, "Lock order").

1. the chain's root row (:func:`lock_chain`);
2. the step being extended or exchanged;
3. DOT's rows (``Grant``, then tokens).

Hops, joins of a browser step, revocations and replays take the root first, so a
revocation never misses a child committed while it runs (READ COMMITTED snapshots).
"""

from __future__ import annotations

from django.db.models import Subquery

from ..models import ChainedGrant


def lock_chain(root_id) -> None:
    """Lock a chain's root row (``SELECT … FOR UPDATE``; a no-op outside a transaction
    on SQLite, whose writers are serialised anyway)."""
    list(ChainedGrant.objects.select_for_update().filter(pk=root_id).values_list("pk", flat=True))


def lock_chain_of(code_digest: str):
    """Lock the chain of the step whose code has this digest, as :func:`lock_chain`, in
    the same statement that finds it; its root's id, or None if no step has that code."""
    root = ChainedGrant.objects.filter(code_digest=code_digest).values("root_id")[:1]
    return ChainedGrant.objects.select_for_update().filter(pk=Subquery(root)).values_list("pk", flat=True).first()


def lock_steps(pks) -> None:
    """Lock steps of one chain (after :func:`lock_chain`), in primary-key order."""
    list(ChainedGrant.objects.select_for_update().filter(pk__in=pks).order_by("pk").values_list("pk", flat=True))
