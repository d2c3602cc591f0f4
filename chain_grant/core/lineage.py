"""Reading a step's place in its chain: its ancestors, the RFC 8693 ``act`` claim,
the step a token came from, and one label per actor."""

from __future__ import annotations

from typing import Any

from django.db import connections, router
from django.db.models import BooleanField, Exists, ExpressionWrapper, OuterRef, Q, Subquery
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from ..models import ChainedGrant, DPoPBinding
from . import handoff, record
from .codes import sha256_hex
from .tree import recorded_actor


def ancestors(step: ChainedGrant, *, with_actors: bool = False) -> list[ChainedGrant]:
    """The steps from the root down to ``step`` (inclusive), in one query whatever the
    depth (``path`` lists their ids). ``with_actors`` also loads agents and persons. An
    unsaved root (an ordinary DOT code not yet chained) is alone."""
    if step._state.adding:
        return [step]
    ids = [seg for seg in step.path.split("/") if seg]
    rows = ChainedGrant.objects.filter(pk__in=ids)
    rows = (
        rows.select_related("agent", "user") if with_actors else rows.only("id", "subject", "kind", "depth", "joined")
    )
    return sorted(rows, key=lambda s: s.depth)


def actor_claim(step: ChainedGrant, line: list[ChainedGrant] | None = None) -> dict[str, Any] | None:
    """RFC 8693 §4.1 ``act``: the actors from this step up to (not including) the
    root, outermost = the current actor (along primary parents: ``act`` is a nest, not a
    DAG). The root's actor is the token's subject. ``line``: ``ancestors(step)`` if known."""
    return _act_of((line if line is not None else ancestors(step))[1:]).get("act")


class UnverifiedLink(Exception):
    """A token's link to its step does not match the step's signed exchange event
    (the link was edited in the database): treat the token as inactive."""


_PROBE = "0" * 64  # the checksum a statement is compiled with, replaced when it runs
_TOKEN_FIELDS = ("id", "token_checksum", "application_id", "source_refresh_token_id")
_compiled: dict[str, tuple[str, tuple]] = {}  # per database alias: the statement, its parameters


def _marked_token_query(checksum: str):
    stepped_family = ChainedGrant.objects.filter(token_family=OuterRef("token_family"))
    family = get_refresh_token_model().objects.filter(
        Q(access_token_id=OuterRef("pk")) | Q(pk=OuterRef("source_refresh_token_id")), Exists(stepped_family)
    )
    binding = DPoPBinding.objects.filter(token_checksum=checksum, kind=DPoPBinding.Kind.ACCESS)
    in_chain = Q(Exists(ChainedGrant.objects.filter(access_token_id=OuterRef("pk")))) | Q(Exists(family))
    return (
        get_access_token_model()
        .objects.annotate(
            bound_jkt=Subquery(binding.values("jkt")[:1]),
            in_chain=ExpressionWrapper(in_chain, output_field=BooleanField()),
        )
        .filter(token_checksum=checksum)
        .order_by()  # no ORDER BY id: SQLite would then walk the primary key instead of the checksum index
        .values_list(*_TOKEN_FIELDS, "bound_jkt", "in_chain")[:1]
    )


def introspected_token(token_value: str):
    """The access token ``token_value`` names (its id, checksum, client and source refresh
    token only), or None, marked in the same indexed statement with what introspection
    adds to DOT's answer: ``bound_jkt``, the DPoP key it is bound to (None for a bearer
    token), and ``in_chain``, whether a step names it, directly or through its refresh
    token family (exactly when :func:`step_for_token` can find one). A plain bearer token
    then costs one query, whatever the size of the steps table. The statement is built by
    the ORM once per database (building it is most of its cost) and reused."""
    Token = get_access_token_model()
    alias = router.db_for_read(Token)
    if alias not in _compiled:
        _compiled[alias] = _marked_token_query(_PROBE).query.sql_with_params()
    sql, params = _compiled[alias]
    checksum = sha256_hex(token_value)
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, [checksum if p == _PROBE else p for p in params])
        row = cursor.fetchone()
    if row is None:
        return None
    values = dict(zip(_TOKEN_FIELDS, row, strict=False))
    names = [f.attname for f in Token._meta.concrete_fields if f.attname in values]  # from_db's order
    token = Token.from_db(alias, names, [values[name] for name in names])
    token.bound_jkt, token.in_chain = row[-2], bool(row[-1])
    return token


def step_for_token(access_token) -> ChainedGrant | None:
    """The step an access token was issued from, directly or through its refresh
    token family (tokens issued by refreshing keep their step), once the link is
    checked against the step's signed exchange event (:class:`UnverifiedLink` if it
    does not match). Indexed lookups only: a plain DOT token costs two small
    queries, whatever the table's size."""
    steps = ChainedGrant.objects.only(
        "id", "root_id", "depth", "path", "subject", "revoked_at", "hash_version", "joined", "token_family"
    ).order_by()
    step = steps.filter(access_token_id=access_token.pk).first()
    if step is not None:
        if not record.exchange_link_verifies(step, access_token):
            raise UnverifiedLink
        return step
    related = Q(access_token_id=access_token.pk)
    if access_token.source_refresh_token_id:
        related |= Q(pk=access_token.source_refresh_token_id)
    families = list(
        get_refresh_token_model()
        .objects.filter(related, token_family__isnull=False)
        .values_list("token_family", flat=True)
    )
    step = steps.filter(token_family__in=families).first() if families else None
    if step is not None and not record.exchange_link_verifies(step, access_token, family=step.token_family):
        raise UnverifiedLink
    return step


def chain_joins(step: ChainedGrant, line: list[ChainedGrant] | None = None) -> list[dict[str, Any]]:
    """For a token from below a join: each join on its ``act`` line (the primary
    parents) with the steps it joined, each with its own ``act`` line, so a resource
    server sees every input. Empty when there is no join (the usual case: no query)."""
    joins = [node for node in (line if line is not None else ancestors(step)) if node.joined]
    if not joins:
        return []
    joined_ids = [j["step"] for node in joins for j in node.joined]
    joined = {str(s.pk): s for s in ChainedGrant.objects.filter(pk__in=joined_ids).only("id", "path", "subject")}
    on_paths = {seg for s in joined.values() for seg in s.path.split("/") if seg}
    by_hex = {s.pk.hex: s for s in ChainedGrant.objects.filter(pk__in=on_paths).only("id", "subject", "depth")}
    result = []
    for node in joins:
        inputs = []
        for entry in node.joined:
            other = joined.get(entry["step"])
            if other is None:
                continue
            line_of = sorted((by_hex[h] for h in other.path.split("/") if h in by_hex), key=lambda s: s.depth)
            inputs.append({"sub": other.subject, **_act_of(line_of[1:-1])})  # its own act line, root excluded
        result.append({"sub": node.subject, "joined": inputs})
    return result


def _act_of(nodes) -> dict[str, Any]:
    """``{"act": …}`` for the actors before a step (root excluded), innermost first."""
    act: dict[str, Any] | None = None
    for node in nodes:
        act = {"sub": node.subject, **({"act": act} if act else {})}
    return {"act": act} if act else {}


def chain_claims(access_token) -> dict[str, Any]:
    """``chain_id``, ``chain_depth``, ``act``, ``chain_actors`` (root → current, each
    ``{"sub", "kind"}``: what a resource server needs to tell a person's step from an
    agent's), below a join ``chain_joins``, and under a hand-off policy that restricts
    who acts next ``may_act``/``chain_may_act``, for a token issued from a chain step
    (introspection adds them); empty for a plain DOT token. Raises
    :class:`UnverifiedLink` for a token whose link was tampered with."""
    step = step_for_token(access_token)
    if step is None:
        return {}
    claims: dict[str, Any] = {"chain_id": str(step.root_id), "chain_depth": step.depth}
    line = ancestors(step)
    act = actor_claim(step, line)
    if act:
        claims["act"] = act
    claims["chain_actors"] = [{"sub": node.subject, "kind": node.kind} for node in line]
    joins = chain_joins(step, line)
    if joins:
        claims["chain_joins"] = joins
    claims.update(handoff.may_act_claims(step))
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
