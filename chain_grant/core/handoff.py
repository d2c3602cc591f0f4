"""The hand-off policy: data (``HandoffPolicy`` rows, per client with a global default)
that says who may hand a chain to whom, which scopes need a person's fresh consent, and
how deep and wide a chain may grow. No policy at all: everything is allowed, as before.

Actors in an edge (``"from -> to"``):

* an agent's identifier, ``group:<name>`` (agents whose ``groups`` name it), or ``*``;
* on the *from* side also ``person`` (a user step: a consent, or the root from DOT's
  authorize) and ``wallet`` (a wallet step): the actor of the step handed off from.

Edges restrict who receives a chain (agent hops, each parent of a join, token exchange);
a person's consent and a wallet's presentation are never refused by an edge (a person
may always take a chain back), but the depth and fan-out limits apply to every step.

The rules are plain functions; :func:`check` is what every agent-like step calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from oauth2_provider.models import get_application_model
from oauth2_provider.scopes import get_scopes_backend

from ..models import Agent, ChainedGrant, HandoffPolicy
from ..settings import chain_grant_settings
from .errors import ChainError

NOT_ALLOWED = "hand-off not allowed by policy"
PERSON, WALLET, ANY, GROUP = "person", "wallet", "*", "group:"
DEFAULT = "default"
EXPORT_VERSION = 1
_KEYS = ("edges", "fresh_consent", "max_depth", "max_children")
_ACTOR_FIELDS = ("id", "kind", "actor", "subject", "application")
LARGEST = 2**31 - 1  # PositiveIntegerField's column on every database; minutes a timedelta holds


class PolicyError(ValueError):
    """A policy document is not valid; ``field`` names the part at fault."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Policy:
    """One policy as the rules read it: ``name`` is the client_id, or ``default``."""

    name: str
    edges: tuple[tuple[str, str], ...] = ()
    fresh_consent: tuple[tuple[str, dict[str, int]], ...] = ()
    max_depth: int | None = None
    max_children: int | None = None


@dataclass(frozen=True)
class Limits:
    max_depth: int
    max_children: int
    source: str = ""  # "" = the settings; else the policy's name


# --- reading the policy -----------------------------------------------------------------


def policy_for(application) -> Policy | None:
    """The client's policy, else the default one, else None (one query)."""
    rows = {
        row.application_id: row
        for row in HandoffPolicy.objects.filter(Q(application_id=application.pk) | Q(application__isnull=True))
    }
    row = rows.get(application.pk) or rows.get(None)
    if row is None:
        return None
    name = application.client_id if row.application_id else DEFAULT
    try:  # the shapes the rules rely on (a row edited past the validation fails closed, never a 500)
        edges = tuple(parse_edge(e) for e in _list(row.edges))
        fresh_consent = tuple(sorted(validate_fresh_consent(row.fresh_consent or {}).items()))
    except PolicyError as exc:
        raise ChainError(f"{NOT_ALLOWED} (the policy {name} is malformed: {exc})") from None
    return Policy(name, edges, fresh_consent, row.max_depth, row.max_children)


def _list(value: Any) -> list:
    if not isinstance(value, list):
        raise PolicyError("edges must be a list of 'from -> to' strings.", "edges")
    return value


class _Unread:
    """A policy not read yet (``None`` means the client has none)."""


UNREAD = _Unread()


def limits(application, policy: Policy | None | _Unread = UNREAD) -> Limits:
    """MAX_DEPTH and MAX_CHILDREN for this client: its policy's where it sets them.
    ``policy``: the client's, if the caller read it already (:func:`policy_for`)."""
    if isinstance(policy, _Unread):
        policy = policy_for(application)
    depth, children = chain_grant_settings.MAX_DEPTH, chain_grant_settings.MAX_CHILDREN
    if policy is None or (policy.max_depth is None and policy.max_children is None):
        return Limits(depth, children)
    return Limits(
        depth if policy.max_depth is None else policy.max_depth,
        children if policy.max_children is None else policy.max_children,
        policy.name,
    )


def parse_edge(edge: str) -> tuple[str, str]:
    parts = [p.strip() for p in edge.split("->")] if isinstance(edge, str) else []
    if len(parts) != 2 or not all(parts) or any(" " in p for p in parts):
        raise PolicyError(f"An edge is written 'from -> to': {edge!r}.", "edges")
    return parts[0], parts[1]


def actor_of(step: ChainedGrant) -> str:
    """The actor a step hands off from: its agent's identifier as recorded, ``person``
    for a user step, ``wallet`` for a wallet step."""
    if step.kind == ChainedGrant.Kind.AGENT:
        return str((step.actor or {}).get("identifier") or step.subject)
    return PERSON if step.kind == ChainedGrant.Kind.USER else WALLET


def _matches(pattern: str, actor: str, groups: set[str], agent: bool = True) -> bool:
    """``agent``: whether ``actor`` is an agent's identifier (else ``person``/``wallet``):
    a keyword (person, wallet, group:…) never matches an agent merely spelled like it."""
    if pattern == ANY:
        return True
    if not agent:
        return pattern == actor
    if pattern.startswith(GROUP):
        return pattern[len(GROUP) :] in groups
    return pattern == actor and pattern not in (PERSON, WALLET)


def _groups_of(identifiers) -> dict[str, set[str]]:
    rows = Agent.objects.filter(identifier__in=list(identifiers)).values_list("identifier", "groups")
    return {identifier: set(groups or ()) for identifier, groups in rows}


# --- the rules ------------------------------------------------------------------------


def check(
    application,
    parent: ChainedGrant,
    actor_identifier: str,
    scope: str,
    joined=(),
    policy: Policy | None | _Unread = UNREAD,
) -> dict[str, Any]:
    """Whether ``actor_identifier`` (an agent) may take the chain from ``parent`` (and,
    for a join, from each of ``joined``) with ``scope``, under ``application``'s policy.

    Returns the decision to record on the new step (``{}`` when no policy applies).
    Raises ChainError: ``invalid_grant`` "hand-off not allowed by policy" for a
    forbidden edge; ``invalid_scope`` when a scope needs a person's fresher consent.
    The depth and fan-out limits are checked with the parent (:func:`limits`).
    ``policy``: the client's, if the caller read it already (one read per hop)."""
    if isinstance(policy, _Unread):
        policy = policy_for(application)
    if policy is None:
        return {}
    decision = _decision(policy)
    parents = [parent, *joined]
    if policy.edges:
        froms = [actor_of(p) for p in parents]
        groups = _groups_of({actor_identifier, *froms})
        edges = [
            _allowing_edge(policy, f, actor_identifier, groups, p.kind == ChainedGrant.Kind.AGENT)
            for f, p in zip(froms, parents, strict=True)
        ]
        decision["from"], decision["edge"] = froms[0], edges[0]
        if joined:
            decision["joined"] = [{"from": f, "edge": e} for f, e in zip(froms[1:], edges[1:], strict=True)]
    fresh = _check_fresh_consent(policy, parents, scope.split())
    if fresh:
        decision["fresh_consent"] = fresh
    return decision


def person_decision(application) -> dict[str, Any]:
    """What a person's or wallet's step records: the policy whose limits it was
    admitted under (edges and fresh consent never refuse a person), or ``{}``."""
    policy = policy_for(application)
    return _decision(policy) if policy is not None else {}


def _decision(policy: Policy) -> dict[str, Any]:
    decision: dict[str, Any] = {"policy": policy.name}
    if policy.max_depth is not None or policy.max_children is not None:
        decision["limits"] = {"max_depth": policy.max_depth, "max_children": policy.max_children}
    return decision


def _allowing_edge(policy: Policy, source: str, target: str, groups: dict[str, set[str]], by_agent: bool) -> str:
    source_groups = groups.get(source, set()) if by_agent else set()
    for f, t in policy.edges:
        if _matches(f, source, source_groups, by_agent) and _matches(t, target, groups.get(target, set())):
            return f"{f} -> {t}"
    raise ChainError(NOT_ALLOWED)


def _check_fresh_consent(policy: Policy, parents: list[ChainedGrant], scopes: list[str]) -> dict[str, Any]:
    """For each scope with a rule: the nearest person's step (kind user, the root from
    DOT's authorize included) on each parent's line that granted it must be within
    ``hops`` hops of the new step and ``minutes`` old (both, when both are given)."""
    rules = {s: rule for s, rule in policy.fresh_consent if s in scopes}
    if not rules:
        return {}
    now = timezone.now()
    recorded: dict[str, Any] = {}
    for i, parent in enumerate(parents):
        ids = [seg for seg in parent.path.split("/") if seg]
        people = ChainedGrant.objects.filter(pk__in=ids, kind=ChainedGrant.Kind.USER)
        consents = sorted(people.only("id", "depth", "scope", "created"), key=lambda s: -s.depth)
        for scope, rule in rules.items():
            consent = next((c for c in consents if scope in c.scope.split()), None)
            if consent is None:
                raise ChainError(_stale_description(scope, rule), "invalid_scope")
            hops = parent.depth + 1 - consent.depth
            too_far = "hops" in rule and hops > rule["hops"]
            too_old = "minutes" in rule and now - consent.created > timedelta(minutes=rule["minutes"])
            if too_far or too_old:
                raise ChainError(_stale_description(scope, rule), "invalid_scope")
            if i == 0:
                recorded[scope] = {
                    "step": str(consent.pk),
                    "hops": hops,
                    "consented_at": consent.created.isoformat(timespec="seconds"),
                    "rule": dict(rule),
                }
    return recorded


def _stale_description(scope: str, rule: dict[str, int]) -> str:
    within = " and ".join(
        f"{rule[k]} {unit}" for k, unit in (("hops", "hop(s)"), ("minutes", "minute(s)")) if k in rule
    )
    return (
        f"The scope {scope} needs a person's consent within the last {within} (hand-off policy): ask the person "
        f"with a consent step (authorize with code=<previous>), or request the scope without {scope}."
    )


def next_actors(step: ChainedGrant) -> list[str] | None:
    """Who the policy lets act after ``step`` (agent identifiers, sorted), or None when
    it does not restrict (no policy, no edges, or ``*`` reachable)."""
    policy = policy_for(step.application)
    if policy is None or not policy.edges:
        return None
    source = actor_of(step)
    by_agent = step.kind == ChainedGrant.Kind.AGENT
    source_groups = _groups_of([source]).get(source, set()) if by_agent else set()
    targets = [t for f, t in policy.edges if _matches(f, source, source_groups, by_agent)]
    if ANY in targets:
        return None
    named = {t for t in targets if not t.startswith(GROUP) and t not in (PERSON, WALLET)}
    wanted = {t[len(GROUP) :] for t in targets if t.startswith(GROUP)}
    if not (named or wanted):
        return []
    # Only who can take this client's chain: its active agents (a default policy may name
    # another client's agent, which this client must not learn of).
    agents = step.application.chain_agents.filter(is_active=True).values_list("identifier", "groups")
    return sorted(identifier for identifier, groups in agents if identifier in named or wanted & set(groups or ()))


def may_act_claims(step: ChainedGrant) -> dict[str, Any]:
    """Introspection's view of :func:`next_actors`: RFC 8693 §4.4 ``may_act`` names one
    party (``{"sub": …}``), so it is given when exactly one actor may act next; the
    extension claim ``chain_may_act`` lists every one (``[{"sub": …}, …]``, possibly
    empty). Neither when the policy does not restrict."""
    # The token's step is read with few fields (lineage.step_for_token): load what this reads.
    step = ChainedGrant.objects.select_related("application").only(*_ACTOR_FIELDS).get(pk=step.pk)
    try:
        actors = next_actors(step)
    except ChainError:  # a malformed policy: no one may act next (fails closed)
        actors = []
    if actors is None:
        return {}
    claims: dict[str, Any] = {"chain_may_act": [{"sub": a} for a in actors]}
    if len(actors) == 1:
        claims["may_act"] = {"sub": actors[0]}
    return claims


# --- validation, import and export ------------------------------------------------------


def validate(document: dict[str, Any]) -> dict[str, Any]:
    """A policy document (``edges``, ``fresh_consent``, ``max_depth``, ``max_children``;
    each optional), normalised, or PolicyError naming what is wrong."""
    if not isinstance(document, dict):
        raise PolicyError("A policy is a JSON object.")
    unknown = sorted(set(document) - set(_KEYS))
    if unknown:
        raise PolicyError(f"unknown key(s) in a policy: {', '.join(unknown)}.")
    return {
        "edges": validate_edges(document.get("edges") or []),
        "fresh_consent": validate_fresh_consent(document.get("fresh_consent") or {}),
        "max_depth": validate_limit("max_depth", document.get("max_depth"), minimum=0),
        "max_children": validate_limit("max_children", document.get("max_children"), minimum=1),
    }


def validate_edges(edges: Any) -> list[str]:
    parsed = [parse_edge(e) for e in _list(edges)]
    known_agents = set(Agent.objects.values_list("identifier", flat=True))
    known_groups = {g for groups in Agent.objects.values_list("groups", flat=True) for g in groups or ()}
    for source, target in parsed:
        for side, actor in (("from", source), ("to", target)):
            if actor == ANY or (side == "from" and actor in (PERSON, WALLET)):
                continue
            if actor.startswith(GROUP):
                if actor[len(GROUP) :] not in known_groups:
                    raise PolicyError(f"unknown agent group in an edge: {actor!r}.", "edges")
            elif actor not in known_agents:
                raise PolicyError(f"unknown agent in an edge: {actor!r} (only agents receive a chain).", "edges")
    return [f"{s} -> {t}" for s, t in parsed]


def validate_fresh_consent(rules: Any) -> dict[str, dict[str, int]]:
    if not isinstance(rules, dict):
        raise PolicyError('fresh_consent must be an object: {"scope": {"hops": N, "minutes": M}}.', "fresh_consent")
    known = set(get_scopes_backend().get_all_scopes())
    result = {}
    for scope, rule in rules.items():
        if scope not in known:
            raise PolicyError(f"unknown scope in fresh_consent: {scope!r}.", "fresh_consent")
        if not isinstance(rule, dict) or not rule or set(rule) - {"hops", "minutes"}:
            raise PolicyError(f"fresh_consent[{scope!r}] takes hops or minutes (or both).", "fresh_consent")
        for key, value in rule.items():
            least = 1 if key == "hops" else 0
            if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= LARGEST:
                raise PolicyError(
                    f"fresh_consent[{scope!r}][{key!r}] must be a whole number up to {LARGEST}.", "fresh_consent"
                )
        result[scope] = dict(rule)
    return result


def validate_limit(name: str, value: Any, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= LARGEST:
        raise PolicyError(f"{name} must be a whole number from {minimum} to {LARGEST}, or null.", name)
    return value


def save_policy(application, document: dict[str, Any]) -> HandoffPolicy:
    """Validate ``document`` and make it ``application``'s policy (None: the default)."""
    fields = validate(document)
    row, _ = HandoffPolicy.objects.update_or_create(
        application_id=application.pk if application is not None else None, defaults=fields
    )
    return row


def policy_document(row: HandoffPolicy) -> dict[str, Any]:
    return {
        "client_id": row.application.client_id if row.application is not None else None,
        **{key: getattr(row, key) for key in _KEYS},
    }


def export_policies(client_id: str | None = None) -> dict[str, Any]:
    """Every policy (the default first), or one client's, as an importable document."""
    rows = HandoffPolicy.objects.select_related("application").order_by("application__client_id")
    if client_id is not None:
        rows = rows.filter(application__client_id=client_id)
    documents = sorted((policy_document(r) for r in rows), key=lambda d: (d["client_id"] is not None, d["client_id"]))
    return {"chain_grant_policy": EXPORT_VERSION, "policies": documents}


def _client_id_shape(value: Any) -> bool:
    # No NUL: PostgreSQL refuses one in a query (a DataError, not an error naming it).
    return value is None or (isinstance(value, str) and "\x00" not in value)


def import_policies(data: Any) -> list[HandoffPolicy]:
    """Replace the policies ``data`` names (one for each ``client_id``, null = the
    default), all or none: every document is validated before anything is written.
    Policies it does not name are kept."""
    if not isinstance(data, dict) or data.get("chain_grant_policy") != EXPORT_VERSION:
        expected = f'{{"chain_grant_policy": {EXPORT_VERSION}, "policies": [...]}}'
        raise PolicyError(f"Not a policy export: expected {expected}.")
    documents = data.get("policies")
    if not isinstance(documents, list):
        raise PolicyError("policies must be a list.")
    if not all(isinstance(d, dict) and _client_id_shape(d.get("client_id")) for d in documents):
        raise PolicyError('Each policy is a JSON object with a "client_id" (a string, or null for the default).')
    applications = get_application_model().objects.in_bulk(
        [d["client_id"] for d in documents if d.get("client_id")], field_name="client_id"
    )
    planned, seen = [], set()
    for document in documents:
        client_id = document.get("client_id")
        if client_id in seen:
            raise PolicyError(f"The file names the policy of {client_id or 'the default'} twice.")
        seen.add(client_id)
        if client_id is not None and client_id not in applications:
            raise PolicyError(f"No client {client_id!r}.")
        fields = {k: v for k, v in document.items() if k != "client_id"}
        try:
            planned.append((applications.get(client_id), validate(fields)))
        except PolicyError as exc:
            raise PolicyError(f"{client_id or 'default'}: {exc}", exc.field) from None
    with transaction.atomic():
        return [save_policy(application, fields) for application, fields in planned]
