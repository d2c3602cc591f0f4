"""What a resource server requires of a token's chain, as plain rules.

A :class:`ChainView` is what a resource server knows of a token: the actors from the
chain's root down to the current one (each with its step's kind), the depth, the scopes,
and the inputs of the joins on that line. It is read from the IdP's database or from
introspection (``chain_actors``, ``chain_depth``, ``chain_joins``, ``scope``:
:func:`view_from_claims`), so both sources are judged by the same rules. This module imports nothing of Django: a
remote resource server needs neither chain_grant's models nor its tables. :func:`unmet`
answers None or the first unmet requirement's description (``"requires the actor
writer"``), which the glue puts in RFC 6750's ``error_description``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The kind of step that is a person's: logging in and consenting at authorize (user). A
# wallet presentation is not: its key is self-issued, so a client running a wallet could
# make one itself (the hand-off policy's fresh consent does not count it either).
PERSON_KINDS = frozenset({"user"})
NO_CHAIN = "requires a token issued from an authorization code chain"


@dataclass(frozen=True)
class Actor:
    sub: str  # as in ``act``: an agent's identifier, a person's user id, a wallet's DID
    kind: str  # agent | user | wallet


@dataclass(frozen=True)
class ChainView:
    actors: tuple[Actor, ...]  # root → current, along the primary parents (as ``act``)
    depth: int
    scopes: frozenset[str]
    joined: frozenset[str] = frozenset()  # every actor a join on the line took as input

    @property
    def actor(self) -> str:
        return self.actors[-1].sub


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
        raise TypeError(f"Requirement.{what} must be a list of non-empty strings, not {value!r}")
    return tuple(value)


def _hops(value: Any, what: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise TypeError(f"Requirement.{what} must be None or an integer >= 0, not {value!r}")
    return value


@dataclass(frozen=True)
class Requirement:
    """What a request needs. ``actor``: the token's current actor. ``upstream``: actors
    that must have acted before it (on its line, or as a join's input). ``max_depth``:
    the deepest step accepted. ``person_within``: a person's step (``user``; not a wallet's) at most
    that many hops above the current one (0: the current step is a person's). ``scopes``:
    scopes the token must carry (also for a token that is not from a chain)."""

    actor: str | None = None
    upstream: Iterable[str] = field(default=())
    max_depth: int | None = None
    person_within: int | None = None
    scopes: Iterable[str] = field(default=())

    def __post_init__(self):
        if self.actor is not None and not (isinstance(self.actor, str) and self.actor):
            raise TypeError(f"Requirement.actor must be None or a non-empty string, not {self.actor!r}")
        object.__setattr__(self, "upstream", _names(self.upstream, "upstream"))
        object.__setattr__(self, "scopes", _names(self.scopes, "scopes"))
        _hops(self.max_depth, "max_depth")
        _hops(self.person_within, "person_within")

    @property
    def needs_chain(self) -> bool:
        return bool(self.actor or self.upstream) or self.max_depth is not None or self.person_within is not None


def unmet(view: ChainView | None, requirement: Requirement, scopes: Iterable[str] | None = None) -> str | None:
    """None, or the description of the first requirement ``view`` does not meet. Scopes
    come first (``scopes``: the token's, for a token that is not from a chain)."""
    held = view.scopes if view is not None else frozenset(scopes or ())
    missing = [s for s in requirement.scopes if s not in held]
    if missing:
        return f"requires the scope{'s' if len(missing) > 1 else ''} {' '.join(missing)}"
    if not requirement.needs_chain:
        return None
    if view is None:
        return NO_CHAIN
    if requirement.actor is not None and view.actor != requirement.actor:
        return f"requires the actor {requirement.actor}"
    if requirement.max_depth is not None and view.depth > requirement.max_depth:
        return f"requires a chain depth of at most {requirement.max_depth}"
    before = {a.sub for a in view.actors[:-1]} | view.joined
    for name in requirement.upstream:
        if name not in before:
            return f"requires the actor {name} upstream"
    within = requirement.person_within
    if within is not None and not any(a.kind in PERSON_KINDS for a in view.actors[-1 - within :]):
        return f"requires a person's step within {within} hop{'' if within == 1 else 's'}"
    return None


def view_from_claims(claims: Mapping[str, Any]) -> ChainView | None:
    """The chain view of an introspection answer (or of ``lineage.chain_claims`` with the
    token's ``scope``); None for a token that is not from a chain. Anything malformed is
    a ValueError: a resource server fails closed."""
    if "chain_id" not in claims:
        return None
    line, depth, scope = claims.get("chain_actors"), claims.get("chain_depth"), claims.get("scope", "")
    if not isinstance(line, list) or not line or not isinstance(scope, str):
        raise ValueError("chain_actors must be a non-empty list and scope a string")
    if not all(isinstance(a, dict) and isinstance(a.get("sub"), str) and isinstance(a.get("kind"), str) for a in line):
        raise ValueError("each of chain_actors must have a string sub and kind")
    if isinstance(depth, bool) or depth != len(line) - 1:
        raise ValueError("chain_depth must be the depth of chain_actors' last step")
    actors = tuple(Actor(a["sub"], a["kind"]) for a in line)
    return ChainView(actors, depth, frozenset(scope.split()), frozenset(joined_actors(claims.get("chain_joins", []))))


def joined_actors(joins: Any) -> Iterable[str]:
    """Every actor in ``chain_joins``: each joined input and its own ``act`` line."""
    if not isinstance(joins, list):
        raise ValueError("chain_joins must be a list")
    for join in joins:
        inputs = join.get("joined", []) if isinstance(join, dict) else None
        if not isinstance(inputs, list):
            raise ValueError("each of chain_joins must be an object whose joined is a list")
        for entry in inputs:
            while entry:  # the input, then its own act line
                if not isinstance(entry, dict) or not isinstance(entry.get("sub"), str):
                    raise ValueError("each joined input must have a string sub")
                yield entry["sub"]
                entry = entry.get("act")
