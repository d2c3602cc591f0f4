"""Housekeeping as plain functions: mark expired steps and purge old chains.

Both are batched (memory bounded whatever the table size), idempotent, safe to run
concurrently with live traffic and with each other, and return counts. The Celery
tasks (``chain_grant.housekeeping.tasks``) and the commands ``chain_grant_expire`` /
``chain_grant_purge`` only call these.

Expiry is *enforced* at use time from ``expires``; marking is for state (the admin,
retention) and storage (DOT's grant rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from oauth2_provider.models import get_grant_model, get_refresh_token_model

from .. import signals
from ..models import ChainedGrant, ChainHead, ChainJoin, DPoPBinding, StepEvent, WalletRequest
from ..settings import chain_grant_settings
from .replay import purge_used


@dataclass
class ExpireResult:
    steps: int = 0  # steps newly marked expired
    grants: int = 0  # DOT grant rows deleted
    batches: int = 0
    wallet_requests: int = 0  # ended wallet requests deleted
    used_jtis: int = 0  # used-jti rows of expired client assertions and DPoP proofs deleted
    dpop_bindings: int = 0  # DPoP bindings of expired tokens and codes deleted


# Wallet requests are kept this long after they expire (for support questions), then deleted.
WALLET_REQUEST_KEEP = timedelta(days=1)


def purge_wallet_requests(*, now: datetime | None = None) -> int:
    """Delete wallet requests (pending or ended) that expired over a day ago; their
    outcome, if any, is the wallet step itself."""
    cutoff = (now or timezone.now()) - WALLET_REQUEST_KEEP
    return WalletRequest.objects.filter(expires__lt=cutoff).delete()[0]


@dataclass
class PurgeResult:
    chains: int = 0
    steps: int = 0
    batches: int = 0


def _lock_batch(qs):
    """Lock the selected rows where the database can, skipping ones another worker holds."""
    if connection.features.has_select_for_update_skip_locked:
        return qs.select_for_update(skip_locked=True)
    return qs


def expire_steps(*, batch_size: int | None = None, dry_run: bool = False, now: datetime | None = None) -> ExpireResult:
    """Mark steps whose code passed ``expires`` (and that did not end otherwise) as
    ended -- ``expired_at`` too for those never used (no children; one with children
    was handed off) -- and delete their DOT ``Grant`` rows. One transaction per batch, so a
    worker killed mid-batch leaves that batch for the next run."""
    batch_size = batch_size or chain_grant_settings.EXPIRE_BATCH_SIZE
    now = now or timezone.now()
    due = ChainedGrant.objects.due_to_end(now)
    if dry_run:
        return ExpireResult(
            steps=due.count(),
            grants=get_grant_model().objects.filter(pk__in=due.values("grant_id")).count(),
        )
    result = ExpireResult()
    result.wallet_requests = purge_wallet_requests(now=now)
    result.used_jtis = purge_used(now)
    result.dpop_bindings = DPoPBinding.objects.filter(expires__lt=now).delete()[0]
    while True:
        with transaction.atomic():
            # (ended_at, expires) is index chain_grant_ended_expires's order, so the scan
            # starts at the due steps; by expires alone PostgreSQL walks chain_grant_expires
            # past every step already marked (quadratic over a run).
            batch = list(_lock_batch(due.order_by("ended_at", "expires")).values_list("pk", "grant_id")[:batch_size])
            if not batch:
                break
            ids = [pk for pk, _ in batch]
            marked = ChainedGrant.objects.filter(pk__in=ids, ended_at__isnull=True).update(ended_at=now)
            # Only an unused step expired; one with children was handed off (its state).
            ChainedGrant.objects.filter(pk__in=ids, ended_at=now, children_count=0).update(expired_at=now)
            grant_ids = [grant_id for _, grant_id in batch if grant_id]
            deleted = get_grant_model().objects.filter(pk__in=grant_ids).delete()[0] if grant_ids else 0
        result.steps += marked
        result.grants += deleted
        result.batches += 1
        if marked:
            signals.steps_expired.send(sender=ChainedGrant, count=marked)
        if len(batch) < batch_size:
            break
    return result


def _blocking_roots(root_ids, cutoff):
    """Roots (among ``root_ids``) with a step still live, ended after ``cutoff``, or
    whose refresh token family still lives: a step ends when its code is exchanged, but
    a refresh token (DOT's have no expiry by default) keeps acting, and a purged record
    would leave its refreshed tokens without ``act`` and out of ``revoke_subtree``'s reach."""
    live_families = (
        get_refresh_token_model()
        .objects.filter(revoked__isnull=True, token_family__isnull=False)
        .values("token_family")
    )
    return (
        ChainedGrant.objects.filter(root_id__in=root_ids)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gte=cutoff) | Q(token_family__in=live_families))
        .values("root_id")
    )


def purge_chains(
    *,
    retention_days: int | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PurgeResult:
    """Delete whole chains in which every step ended more than ``retention_days`` ago.

    A chain with a live step, or a live refresh token family, is never touched. A chain
    is deleted in one statement
    (no orphans) that re-checks the condition, so a step that is still live at that
    moment keeps its chain.
    """
    retention_days = chain_grant_settings.RETENTION_DAYS if retention_days is None else retention_days
    batch_size = batch_size or chain_grant_settings.PURGE_BATCH_SIZE
    cutoff = (now or timezone.now()) - timedelta(days=retention_days)
    candidates = ChainedGrant.objects.filter(depth=0, ended_at__lt=cutoff).order_by("pk")
    result = PurgeResult()
    last = None
    while True:
        page = candidates.filter(pk__gt=last) if last else candidates
        root_ids = list(page.values_list("pk", flat=True)[:batch_size])
        if not root_ids:
            break
        last = root_ids[-1]
        purgeable = ChainedGrant.objects.filter(root_id__in=root_ids).exclude(
            root_id__in=_blocking_roots(root_ids, cutoff)
        )
        if dry_run:
            result.chains += purgeable.filter(depth=0).count()
            result.steps += purgeable.count()
        else:
            with transaction.atomic():
                chain_ids = list(purgeable.filter(depth=0).order_by().values_list("pk", flat=True))
                # Wallet requests point at steps (foreign keys the raw delete would break).
                WalletRequest.objects.filter(Q(parent__in=purgeable) | Q(step__in=purgeable)).delete()
                # A raw delete: the rows of a chain reference each other (PROTECT), and the
                # ORM's collector would load them all; one SQL DELETE removes a whole chain.
                steps = 0
                if chain_ids:
                    for model in (ChainJoin, StepEvent, ChainHead):  # they point at the steps
                        rows = model.objects.filter(root_id__in=chain_ids)
                        rows._raw_delete(rows.db)
                    steps = purgeable._raw_delete(purgeable.db)
            result.chains += len(chain_ids)
            result.steps += steps
            for chain_id in chain_ids:
                signals.chain_purged.send(sender=ChainedGrant, chain_id=chain_id)
        result.batches += 1
        if len(root_ids) < batch_size:
            break
    return result
