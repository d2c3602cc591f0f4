"""Writing the tree: a step row under its (locked) parent, with its link hash and
the parent's fan-out count. Used by every kind of step and by the exchange of a
tracked plain code."""

from __future__ import annotations

from typing import Any

from django.db.models import F
from django.utils import timezone

from ..models import ChainedGrant
from .integrity import LINK_HASH_VERSION, compute_link_hash


def append(step: ChainedGrant, parent: ChainedGrant | None) -> ChainedGrant:
    """Insert ``step`` under ``parent`` (locked by the caller), hash it, and count it
    against the parent's fan-out."""
    step.parent = parent
    step.root_id = parent.root_id if parent else step.id
    step.depth = parent.depth + 1 if parent else 0
    step.path = (parent.path if parent else "") + step.id.hex + "/"
    step.created = timezone.now()
    step.actor = {**recorded_actor(step, parent), **step.actor}
    step.hash_version = LINK_HASH_VERSION
    step.link_hash = compute_link_hash(step, parent.link_hash if parent else "")
    step.save(force_insert=True)
    if parent is not None:
        ChainedGrant.objects.filter(pk=parent.pk).update(children_count=F("children_count") + 1)
    return step


def recorded_actor(step: ChainedGrant, parent: ChainedGrant | None) -> dict[str, Any]:
    """Who acts at ``step``, as they are now (the step keeps it; link_hash covers it):
    an agent's identifier, display name and key thumbprint; a person's username, ``sub``,
    the time Django last authenticated them (``auth_time``) and the scopes new, kept and
    dropped against the previous step; a wallet's DID. Django records no authentication
    method, so there is no ``amr`` unless the caller supplies one in ``step.actor``."""
    if step.kind == ChainedGrant.Kind.AGENT:
        agent = step.agent
        return {
            "identifier": agent.identifier if agent is not None else step.subject,
            "name": agent.name if agent is not None else "",
            "key_thumbprint": step.agent_key_thumbprint,
        }
    if step.kind == ChainedGrant.Kind.USER:
        user = step.user
        actor: dict[str, Any] = {"username": user.get_username() if user is not None else "", "sub": step.subject}
        if user is not None and user.last_login is not None:
            actor["auth_time"] = int(user.last_login.timestamp())
        before, now = (parent.scope.split() if parent else []), step.scope.split()
        actor["scopes"] = {
            "new": [s for s in now if s not in before],
            "kept": [s for s in now if s in before],
            "dropped": [s for s in before if s not in now],
        }
        return actor
    return {"did": step.subject}


def root_step(grant, application) -> ChainedGrant:
    """The (unsaved) root step describing an ordinary DOT code's grant."""
    return ChainedGrant(
        kind=ChainedGrant.Kind.USER,
        code_digest=grant.code,  # DOT keeps the digest (oauth.digest_codes)
        expires=grant.expires,
        redirect_uri=grant.redirect_uri,
        application=application,
        user_id=grant.user_id,
        subject=str(grant.user_id),
        scope=grant.scope,
        requested_scope=grant.scope,
        grant_id=grant.pk,
    )


def step_for_grant(kind: str, application, grant, **fields) -> ChainedGrant:
    return ChainedGrant(
        kind=kind,
        code_digest=grant.code,  # DOT keeps the digest (oauth.digest_codes)
        expires=grant.expires,
        redirect_uri=grant.redirect_uri,
        application=application,
        user_id=grant.user_id,
        scope=grant.scope,
        grant_id=grant.pk,
        **fields,
    )
