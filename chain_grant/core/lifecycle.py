"""A step's life after it is written: exchange (once), replay, revocation.

Replay of an exchanged code revokes what it issued (RFC 6749 §4.1.2, RFC 9700
§4.2.4). DOT alone cannot, because it deletes its ``Grant`` row on exchange; the
step's code digest makes it possible.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from django.db import OperationalError, router, transaction
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from jwcrypto import jwk
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

from .. import signals
from ..client.jose import sha256_hex
from ..models import ChainedGrant, ChainJoin, StepEvent
from ..settings import chain_grant_settings
from . import record, tree
from .codes import code_digest, plausible_code
from .errors import ChainError
from .locks import lock_chain, lock_steps

T = TypeVar("T")
log = logging.getLogger("chain_grant")


class CodeReused(ChainError):
    """An exchanged code was presented as a parent: a replay (handled after rollback)."""

    def __init__(self, step: ChainedGrant):
        super().__init__("The authorization code was already exchanged.")
        self.step = step


class CodeLost(ChainError):
    """This exchange lost the code: consumed, revoked or exchanged by another request."""

    def __init__(self) -> None:
        super().__init__("The authorization code is invalid, expired or revoked.")


def find_step(code: str, *, with_actors: bool = False) -> ChainedGrant | None:
    if not plausible_code(code):
        return None
    steps = ChainedGrant.objects.select_related("agent", "user") if with_actors else ChainedGrant.objects
    return steps.filter(code_digest=code_digest(code)).first()


@contextmanager
def replay_revokes() -> Iterator[None]:
    """Around a transaction that adds a step: if it found its parent's code already
    exchanged (:class:`CodeReused`), revoke that step's subtree once the transaction
    has rolled back, then re-raise. Use as ``with replay_revokes(), transaction.atomic():``."""
    try:
        yield
    except CodeReused as exc:
        handle_replay(exc.step)
        raise


def revoke_if_replayed(code: str, application=None) -> bool:
    """A code that failed to exchange: if its step was already exchanged (by the same
    client, when ``application`` is given), it is a replay and its subtree is revoked."""
    step = find_step(code)
    if step is None or not step.exchanged_at:
        return False
    if application is not None and step.application_id != application.pk:
        return False
    handle_replay(step)
    return True


def step_for_exchange(code: str, application) -> ChainedGrant | None:
    """The step of a code about to be exchanged (None for an ordinary DOT code).
    Refuses (ChainError) a replayed code, after revoking its subtree, and a revoked,
    expired or another client's one."""
    step = find_step(code, with_actors=True)
    if step is None:
        return None
    if step.exchanged_at and step.application_id == application.pk:
        handle_replay(step)
        raise ChainError("The authorization code was already exchanged.")
    check_exchangeable(step, application)
    return step


def check_exchangeable(step: ChainedGrant, application) -> None:
    """Refuse exchanging a chained code that is revoked, expired or another client's.
    (An exchanged code is a replay: see :func:`handle_replay`.)"""
    if step.application_id != application.pk or step.revoked_at or step.expires <= timezone.now():
        raise ChainError("The authorization code is invalid, expired or revoked.")
    if chain_grant_settings.ON_DISABLE == "revoke":  # even if no signal told us (a queryset update)
        if step.agent is not None and not step.agent.is_active:
            raise ChainError("The agent this code was handed to is disabled.")
        if step.user is not None and not step.user.is_active:
            raise ChainError("The person this chain acts for is disabled.")


class RecordMismatch(CodeLost):
    """DOT's ``Grant`` row no longer says what the step's signed record says (scope,
    redirect URI, PKCE challenge or resource): it was edited, so nothing is issued."""


def check_grant_matches(step: ChainedGrant, grant) -> None:
    if step.hash_version < 3:
        return  # recorded before the grant digest existed
    if (grant.scope, grant.redirect_uri, tree.grant_digest(grant)) != (
        step.scope,
        step.redirect_uri,
        step.grant_digest,
    ):
        log.warning("chain_grant: DOT grant %s differs from step %s's record; exchange refused", grant.pk, step.pk)
        raise RecordMismatch


def record_exchange(step: ChainedGrant, access_token: str, dpop_jkt: str = "") -> bool:
    """Mark a step exchanged, link the token and append the signed ``exchanged`` event
    (with the token's checksum); False if it already was (a replay) or was revoked
    meanwhile. One conditional UPDATE, so exactly one exchange wins. Call with the
    chain and the step locked: the time is taken after the lock."""
    checksum = sha256_hex(access_token)
    token_id, family = (
        get_access_token_model()
        .objects.filter(token_checksum=checksum)
        .values_list("pk", "refresh_token__token_family")
        .first()
    ) or (None, None)
    now = timezone.now()
    won = ChainedGrant.objects.filter(
        pk=step.pk, exchanged_at__isnull=True, revoked_at__isnull=True, expires__gt=now
    ).update(exchanged_at=now, ended_at=now, access_token_id=token_id, token_family=family)
    if won:
        data = {"access_token_id": token_id, "token_checksum": checksum, "token_family": family and str(family)}
        if dpop_jkt:
            data["dpop_jkt"] = dpop_jkt  # the key the token is bound to, signed with the event
        record.append_event(step, StepEvent.Kind.EXCHANGED, data, at=now)
    return bool(won)


class _BecameChained(Exception):
    """A plain code became a chain root after it was validated: start again with its step."""

    def __init__(self, step: ChainedGrant):
        self.step = step


def exchange(
    application,
    code: str,
    step: ChainedGrant | None,
    save_token: Callable[[], T],
    access_token: str,
    dpop_jkt: str = "",
) -> T:
    """Exchange a code (chained or not) for the token ``save_token()`` writes: one
    token per code.

    Locks in the one order (``core.locks``): the chain root and the step, then DOT's
    ``Grant``, which is consumed in the token's own transaction, so no hop can chain
    the code in between and no revocation or expiry can deadlock with it. Raises
    :class:`CodeLost` (after revoking, if it was a replay) when another request got
    there first."""
    Grant = get_grant_model()
    for _ in range(2):  # at most once more: a plain code that became a root meanwhile
        try:
            with transaction.atomic(using=router.db_for_write(ChainedGrant)):
                if step is not None:
                    lock_chain(step.root_id)
                    lock_steps([step.pk])
                grant = (
                    Grant.objects.select_for_update().filter(code=code_digest(code), application=application).first()
                )
                if grant is None:
                    raise CodeLost
                if step is None:
                    became = find_step(code)
                    if became is not None:
                        raise _BecameChained(became)
                    if chain_grant_settings.TRACK_PLAIN_CODES:  # keep its digest: a replay is then detected
                        step = tree.append(tree.root_step(grant, application), None)
                if step is not None:
                    check_grant_matches(step, grant)
                result = save_token()
                if step is not None and not record_exchange(step, access_token, dpop_jkt):
                    raise CodeLost
                Grant.objects.filter(pk=grant.pk).delete()
            return result
        except _BecameChained as restart:
            step = restart.step
        except CodeLost:
            revoke_if_replayed(code)
            raise
    raise CodeLost  # pragma: no cover  (a root is created once)


def handle_replay(step: ChainedGrant) -> int:
    """An exchanged code came back: revoke the step's subtree and every token issued
    from it (RFC 6749 §4.1.2, RFC 9700 §4.2.4), retried on a deadlock or
    serialization failure (:func:`revoke_subtree`) so a replay never leaves a token alive."""
    count = revoke_subtree(step, reason="authorization code replay")
    signals.replay_detected.send(sender=ChainedGrant, step=step)
    return count


def with_retries(work: Callable[[], T], attempts: int = 5) -> T:
    """Run ``work`` (its own transaction), again after a deadlock or serialization
    failure (PostgreSQL picks a victim; the work is idempotent). Inside a caller's
    transaction there is nothing to retry: that transaction is already aborted."""
    for attempt in range(attempts):
        try:
            return work()
        except OperationalError:
            if attempt == attempts - 1 or transaction.get_connection().in_atomic_block:
                raise
            time.sleep(0.01 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def reach(step: ChainedGrant) -> Q:
    """The step, its descendants and every join (with its own descendants) that took
    one of them as a parent: what revoking the step revokes. One query for the
    chain's joins (usually none), whatever the subtree's size."""
    paths = [step.path]
    joins = list(ChainJoin.objects.filter(root_id=step.root_id).values_list("parent__path", "step__path"))
    grown = True
    while grown:
        grown = False
        for parent_path, join_path in joins:
            inside = any(parent_path.startswith(p) for p in paths)
            if inside and not any(join_path.startswith(p) for p in paths):
                paths.append(join_path)
                grown = True
    query = Q()
    for path in paths:
        query |= Q(path__startswith=path)
    return Q(root_id=step.root_id) & query


def revoke_subtree(step: ChainedGrant, reason: str = "revoked") -> int:
    """Revoke a step and all its descendants: the steps, their DOT grants and every
    access/refresh token issued from them, in a constant number of queries whatever
    the subtree's size, retried on a deadlock or serialization failure. Returns how
    many steps were newly revoked."""
    count = with_retries(lambda: _revoke_subtree(step, reason))
    if count:
        signals.chain_revoked.send(sender=ChainedGrant, step=step, count=count, reason=reason)
    return count


def _revoke_subtree(step: ChainedGrant, reason: str) -> int:
    AccessToken = get_access_token_model()
    RefreshToken = get_refresh_token_model()
    now = timezone.now()
    with transaction.atomic():
        lock_chain(step.root_id)
        subtree = ChainedGrant.objects.filter(reach(step))
        count = subtree.filter(revoked_at__isnull=True).update(
            revoked_at=now, revoked_reason=reason[:255], ended_at=Coalesce("ended_at", Value(now))
        )
        if count:
            record.append_event(step, StepEvent.Kind.REVOKED, {"reason": reason[:255], "count": count}, at=now)
        get_grant_model().objects.filter(pk__in=subtree.filter(grant_id__isnull=False).values("grant_id")).delete()
        families = subtree.filter(token_family__isnull=False).values("token_family")
        issued = subtree.filter(access_token__isnull=False).values("access_token_id")
        # The refresh tokens of the steps' families, and any that belongs to a token a
        # step issued (whatever family the step says: its column may have been edited).
        refresh = RefreshToken.objects.filter(Q(token_family__in=families) | Q(access_token_id__in=issued))
        RefreshToken.objects.filter(pk__in=refresh.values("pk"), revoked__isnull=True).update(revoked=now, updated=now)
        # One DELETE, not the ORM collector (which loads every token and deletes in
        # batches of 100): DOT's revoke is a delete, and the only reference to these
        # tokens, RefreshToken.access_token, is cleared next (constraints are deferred;
        # every refresh token pointing at one of them is in ``refresh``).
        doomed = AccessToken.objects.filter(Q(pk__in=issued) | Q(pk__in=refresh.values("access_token_id")))
        doomed._raw_delete(doomed.db)
        RefreshToken.objects.filter(pk__in=refresh.values("pk"), access_token__isnull=False).update(access_token=None)
    return count


# --- disabling an actor ---------------------------------------------------------------


def revoke_steps(steps, reason: str) -> int:
    """Revoke ``steps`` (a queryset) and their subtrees, unless ON_DISABLE is
    "refuse". Only the topmost of them are walked: a subtree covers the rest."""
    if chain_grant_settings.ON_DISABLE != "revoke":
        return 0
    tops = steps.filter(revoked_at__isnull=True).exclude(parent__in=steps).order_by("depth")
    count = 0
    for step in tops.only("pk", "root_id", "path").iterator(chunk_size=200):
        count += revoke_subtree(step, reason)
    return count


def revoke_for_disabled_agent(agent) -> int:
    return revoke_steps(ChainedGrant.objects.filter(agent=agent), f"agent {agent.identifier[:64]} disabled")


def revoke_for_disabled_key(key) -> int:
    thumbprint = jwk.JWK(**key.jwk).thumbprint()
    steps = ChainedGrant.objects.filter(agent_id=key.agent_id, agent_key_thumbprint=thumbprint)
    return revoke_steps(steps, f"agent key {key.kid[:64]} disabled")


def revoke_for_disabled_person(user) -> int:
    return revoke_steps(ChainedGrant.objects.filter(user=user), "the person's account was disabled")


def revoke_for_disabled_client(application) -> int:
    return revoke_steps(ChainedGrant.objects.filter(application=application), "client disabled for chains")
