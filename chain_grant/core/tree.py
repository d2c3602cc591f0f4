"""Writing the tree: a step row under its (locked) parent, with its link hash and
the parent's fan-out count. Used by every kind of step and by the exchange of a
tracked plain code."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.db.models import F
from django.utils import timezone

from ..client.jose import sha256_hex
from ..models import ChainedGrant, ChainJoin, DPoPBinding
from . import record
from .integrity import LINK_HASH_VERSION, compute_link_hash


def append(step: ChainedGrant, parent: ChainedGrant | None, joined: Sequence[ChainedGrant] = ()) -> ChainedGrant:
    """Insert ``step`` under ``parent`` and, for a join, the ``joined`` parents too (all
    locked by the caller); hash and sign it, count it against each parent's fan-out and
    move the chain's head on. A join sits in ``path`` under its primary parent; its
    depth is one more than its deepest parent's."""
    step.parent = parent
    step.root_id = parent.root_id if parent else step.id
    parents = [parent, *joined] if parent else []
    step.depth = max(p.depth for p in parents) + 1 if parents else 0
    step.path = (parent.path if parent else "") + step.id.hex + "/"
    step.created = timezone.now()
    step.actor = {**recorded_actor(step, parent), **step.actor}
    step.joined = [{"step": str(p.pk), "link_hash": p.link_hash} for p in joined]
    step.hash_version = LINK_HASH_VERSION
    step.link_hash = compute_link_hash(step, parent.link_hash if parent else "")
    head = record.sign_step(step, parents)
    step.save(force_insert=True)
    if joined:
        ChainJoin.objects.bulk_create(
            ChainJoin(root_id=step.root_id, step=step, parent=p, position=i) for i, p in enumerate(joined, 1)
        )
    if parents:
        ChainedGrant.objects.filter(pk__in=[p.pk for p in parents]).update(children_count=F("children_count") + 1)
        for p in parents:  # the caller's rows stay true (the head counts leaves from them)
            p.children_count += 1
    record.save_head(head)
    return step


def grant_digest(grant) -> str:
    """What a step records of its code's DOT ``Grant`` beyond scope and redirect URI:
    the PKCE challenge and the RFC 8707 resource (compared again at exchange)."""
    fields = {
        "code_challenge": grant.code_challenge or "",
        "code_challenge_method": grant.code_challenge_method or "",
        "resource": sorted(getattr(grant, "resource", None) or []),
    }
    return sha256_hex(json.dumps(fields, sort_keys=True, separators=(",", ":")))


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
    """The (unsaved) root step describing an ordinary DOT code's grant, bound to the DPoP
    key its authorize request named (``dpop_jkt``), if any."""
    bound = DPoPBinding.objects.filter(kind=DPoPBinding.Kind.CODE, token_checksum=grant.code)
    return ChainedGrant(
        dpop_jkt=bound.values_list("jkt", flat=True).first() or "",
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
        grant_digest=grant_digest(grant),
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
        grant_digest=grant_digest(grant),
        **fields,
    )
