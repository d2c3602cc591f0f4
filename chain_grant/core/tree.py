"""Writing the tree: a step row under its (locked) parent, with its link hash and
the parent's fan-out count. Used by every kind of step and by the exchange of a
tracked plain code."""

from __future__ import annotations

from django.db.models import F
from django.utils import timezone

from ..models import ChainedGrant
from .integrity import compute_link_hash


def append(step: ChainedGrant, parent: ChainedGrant | None) -> ChainedGrant:
    """Insert ``step`` under ``parent`` (locked by the caller), hash it, and count it
    against the parent's fan-out."""
    step.parent = parent
    step.root_id = parent.root_id if parent else step.id
    step.depth = parent.depth + 1 if parent else 0
    step.path = (parent.path if parent else "") + step.id.hex + "/"
    step.created = timezone.now()
    step.link_hash = compute_link_hash(step, parent.link_hash if parent else "")
    step.save(force_insert=True)
    if parent is not None:
        ChainedGrant.objects.filter(pk=parent.pk).update(children_count=F("children_count") + 1)
    return step


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
