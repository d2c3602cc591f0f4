"""Reading a step's place in its chain: its ancestors, the RFC 8693 ``act`` claim,
the step a token came from, and one label per actor."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from oauth2_provider.models import get_refresh_token_model

from ..models import ChainedGrant
from .tree import recorded_actor


def ancestors(step: ChainedGrant, *, with_actors: bool = False) -> list[ChainedGrant]:
    """The steps from the root down to ``step`` (inclusive), in one query whatever the
    depth (``path`` lists their ids). ``with_actors`` also loads agents and persons. An
    unsaved root (an ordinary DOT code not yet chained) is alone."""
    if step._state.adding:
        return [step]
    ids = [seg for seg in step.path.split("/") if seg]
    rows = ChainedGrant.objects.filter(pk__in=ids)
    rows = rows.select_related("agent", "user") if with_actors else rows.only("id", "subject", "kind", "depth")
    return sorted(rows, key=lambda s: s.depth)


def actor_claim(step: ChainedGrant) -> dict[str, Any] | None:
    """RFC 8693 §4.1 ``act``: the actors from this step up to (not including) the
    root, outermost = the current actor. The root's actor is the token's subject."""
    act: dict[str, Any] | None = None
    for node in ancestors(step)[1:]:
        act = {"sub": node.subject, **({"act": act} if act else {})}
    return act


def step_for_token(access_token) -> ChainedGrant | None:
    """The step an access token was issued from, directly or through its refresh
    token family (tokens issued by refreshing keep their step). Indexed lookups only:
    a plain DOT token costs two small queries, whatever the table's size."""
    steps = ChainedGrant.objects.only("id", "root_id", "depth", "path", "subject", "revoked_at").order_by()
    step = steps.filter(access_token_id=access_token.pk).first()
    if step is not None:
        return step
    related = Q(access_token_id=access_token.pk)
    if access_token.source_refresh_token_id:
        related |= Q(pk=access_token.source_refresh_token_id)
    families = list(
        get_refresh_token_model()
        .objects.filter(related, token_family__isnull=False)
        .values_list("token_family", flat=True)
    )
    return steps.filter(token_family__in=families).first() if families else None


def chain_claims(access_token) -> dict[str, Any]:
    """``chain_id``, ``chain_depth`` and ``act`` for a token issued from a chain step
    (introspection adds them); empty for a plain DOT token."""
    step = step_for_token(access_token)
    if step is None:
        return {}
    claims: dict[str, Any] = {"chain_id": str(step.root_id), "chain_depth": step.depth}
    act = actor_claim(step)
    if act:
        claims["act"] = act
    return claims


def actor_label(step: ChainedGrant) -> str:
    """Who acted, as the step recorded it: the agent's identifier, the person's username
    or the wallet's DID (never the live row, which can be renamed). A root not yet
    written (an ordinary DOT code a consent page previews) shows what it would record."""
    recorded = step.actor or recorded_actor(step, None)
    return str(recorded.get("identifier") or recorded.get("username") or recorded.get("did") or step.subject)


def step_rows(steps) -> list[dict[str, Any]]:
    """What the consent and wallet pages list for each step so far."""
    return [
        {"kind": step.kind, "actor": actor_label(step), "scope": step.scope.split(), "created": step.created}
        for step in steps
    ]
