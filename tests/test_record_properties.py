"""Property-based tests (hypothesis) of a chain's record.

1. Random sequences of operations on one chain, driven through the real endpoints
   (``Flow``) so the real rules apply: agent hops from a random step with a random
   scope request, joins (a hop naming 1-3 other steps in ``joined_codes``), exchanges
   of a random step's code, replays of an exchanged code, and revocations
   (``lifecycle.revoke_subtree``). A small model of the chain predicts each answer
   (200, or which 400 OAuth error, and what a replay revokes); a refusal is always a
   400 JSON OAuth error, never a 500. After each sequence: every step is in exactly
   one of STEP_STATES and that state is consistent with its grant, its token and its
   subtree; no agent step holds a scope its parents (primary and joined) or its agent
   lack; ``verify_chain`` is ok with no problem; the signed head counts every step
   and event; and the database says what the model says.
2. One random tamper made straight in the database, on a random chain built the same
   way: a single-field edit, a removal (leaf, subtree, event), an insertion (a forged
   step with a correct link hash), a widened scope rehashed with the published
   algorithm, a cleared or invented state, a token link pointed at an unrelated
   plain token. ``verify_chain`` is never ok and names the affected step (removals:
   a chain-level problem and the parent).
3. A widened DOT ``Grant`` scope of any live step makes its exchange a 400
   invalid_grant with no token issued.

Failures print the generated operations (the falsifying example) and, through
``note()``, what each one resolved to and answered. Bounded for CI: a few dozen
chains per test, no deadline, no example database.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NamedTuple

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from oauth2_provider.models import get_access_token_model, get_grant_model

from chain_grant.client.jose import sha256_hex
from chain_grant.core import integrity, lifecycle
from chain_grant.models import STEP_STATES, ChainedGrant, ChainHead, ChainJoin, StepEvent
from tests.helpers import make_token

pytestmark = pytest.mark.django_db

MAX_CHILDREN = 3
MAX_DEPTH = 16
ROOT_SCOPE = "openid read write"
# identifier -> allowed scopes: agents only narrow, so these shape what a hop may hold.
AGENTS = {
    "prop-wide": "openid read write",
    "prop-reader": "openid read",
    "prop-rw": "read write",
    "prop-narrow": "read",
}
SCOPES = ("openid", "read", "write", "admin")  # "admin": nobody holds it (an invalid_scope)
REPLAY = "authorization code replay"

PROPERTY = settings(
    deadline=None,
    database=None,  # nothing written outside the test database; a failure prints its example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- operations -------------------------------------------------------------------------------
# Indices are resolved against the chain as it is when the operation runs (modulo the
# candidates), so every generated sequence means something and shrinks well.


class Hop(NamedTuple):
    at: int  # among the live steps (every step if none is live, or with ``anywhere``)
    agent: int
    scope: str | None  # the hop's ``scope`` parameter (None: not sent)
    anywhere: bool  # from any step, ended ones too (refused, or a replay)


class Join(NamedTuple):
    at: int
    others: tuple[int, ...]  # 1-3 other steps, as for ``at``
    agent: int
    scope: str | None
    anywhere: bool


class Exchange(NamedTuple):
    at: int  # among every step


class Replay(NamedTuple):
    at: int  # among the exchanged steps


class Revoke(NamedTuple):
    at: int  # among every step


_INDEX = st.integers(0, 31)
_AGENT = st.integers(0, len(AGENTS) - 1)
_SCOPE = st.none() | st.lists(st.sampled_from(SCOPES), min_size=1, max_size=3, unique=True).map(" ".join)
_SOMETIMES = st.integers(0, 4).map(lambda n: n == 0)
HOPS = st.builds(Hop, _INDEX, _AGENT, _SCOPE, _SOMETIMES)
JOINS = st.builds(Join, _INDEX, st.lists(_INDEX, min_size=1, max_size=3).map(tuple), _AGENT, _SCOPE, _SOMETIMES)
OPERATION = st.one_of(
    HOPS, HOPS, JOINS, st.builds(Exchange, _INDEX), st.builds(Replay, _INDEX), st.builds(Revoke, _INDEX)
)


def operations(max_size: int, min_size: int = 0):
    return st.lists(OPERATION, min_size=min_size, max_size=max_size)


# --- the model --------------------------------------------------------------------------------


@dataclass
class Node:
    """A step as the client and the model see it."""

    name: str
    pk: uuid.UUID
    code: str
    verifier: str
    scope: str
    depth: int
    parents: tuple[uuid.UUID, ...] = ()  # primary first, then the joined ones in order
    agent: str | None = None
    children: int = 0
    exchanged: bool = False
    revoked: str | None = None  # the reason

    @property
    def live(self) -> bool:
        return not self.exchanged and not self.revoked


@dataclass(frozen=True)
class Outcome:
    error: str | None = None  # None: 200
    scope: str = ""  # granted, for a hop
    replay: Node | None = None  # the step a refusal revokes as a replay


@dataclass
class ChainRun:
    """One fresh chain (authorize + a first hop), the model of it, and the operations."""

    flow: object
    agents: list
    nodes: list[Node] = field(default_factory=list)
    tokens: dict = field(default_factory=dict)  # node name -> access token
    log: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, flow, alice, agents) -> ChainRun:
        run = cls(flow, agents)
        root_code, root_verifier = flow.authorize(alice, scope=ROOT_SCOPE)
        code, verifier, body = flow.advance(root_code, agents[0])  # the root step is written here
        root_step = lifecycle.find_step(root_code)
        root = Node("#0", root_step.pk, root_code, root_verifier, root_step.scope, 0, children=1)
        first = Node(
            "#1", lifecycle.find_step(code).pk, code, verifier, body["scope"], 1, (root.pk,), agents[0].identifier
        )
        assert set(root.scope.split()) == set(ROOT_SCOPE.split())
        run.nodes = [root, first]
        return run

    @property
    def root_id(self):
        return self.nodes[0].pk

    def by_pk(self, pk) -> Node:
        return next(n for n in self.nodes if n.pk == pk)

    def say(self, text: str, kind: str | None = None) -> None:
        """Log an operation's outcome: a note printed with a failing example and, with
        ``kind``, a hypothesis event (``--hypothesis-show-statistics``)."""
        self.log.append(text)
        try:
            note(text)
            if kind is not None:
                event(kind)
        except InvalidArgument:  # a plain (non-hypothesis) test
            pass

    # --- running one operation ----------------------------------------------------------------

    def apply(self, op) -> None:
        if isinstance(op, (Hop, Join)):
            pool = self.nodes if op.anywhere else [n for n in self.nodes if n.live] or self.nodes
            parent = pool[op.at % len(pool)]
            joined: list[Node] = []
            if isinstance(op, Join):
                others = [n for n in pool if n is not parent]
                if not others:
                    self.say(f"{op}: skipped, no other step to join")
                    return
                for i in op.others:
                    if others[i % len(others)] not in joined:
                        joined.append(others[i % len(others)])
            self.hop(parent, joined, self.agents[op.agent], op.scope)
        elif isinstance(op, (Exchange, Replay)):
            pool = self.nodes if isinstance(op, Exchange) else [n for n in self.nodes if n.exchanged]
            if not pool:
                self.say(f"{op}: skipped, nothing exchanged yet")
                return
            self.exchange(pool[op.at % len(pool)])
        else:
            self.revoke(self.nodes[op.at % len(self.nodes)], f"property revocation {len(self.log)}")

    def hop(self, parent: Node, joined: list[Node], agent, scope: str | None) -> Node | None:
        codes = [j.code for j in joined]
        proof = agent.proof(parent.code, aud=self.flow.issuer, joined_codes=codes or None)
        extra = {"joined_codes": " ".join(codes)} if codes else {}
        if scope is not None:
            extra["scope"] = scope
        expected = self.predict_hop(parent, joined, agent, scope)
        response = self.flow.hop(parent.code, proof, **extra)
        kind = "join" if joined else "hop"
        what = f"{kind} {'+'.join(n.name for n in [parent, *joined])} by {agent.identifier} scope={scope!r}"
        outcome = f"{expected.error or 200}{' (replay)' if expected.replay else ''}"
        self.say(f"{what}: {response.status_code} {response.content[:160]!r}", f"{kind}: {outcome}")
        if expected.error is not None:
            self.refused(response, expected)
            return None
        assert response.status_code == 200, (what, response.content)
        body = response.json()
        new = Node(
            f"#{len(self.nodes)}",
            lifecycle.find_step(body["authorization_code"]).pk,
            body["authorization_code"],
            response.verifier,
            expected.scope,
            max(p.depth for p in [parent, *joined]) + 1,
            tuple(p.pk for p in [parent, *joined]),
            agent.identifier,
        )
        assert (body["scope"], body["depth"], body["chain_id"]) == (new.scope, new.depth, str(self.root_id)), body
        for p in [parent, *joined]:
            p.children += 1
        self.nodes.append(new)
        return new

    def predict_hop(self, parent: Node, joined: list[Node], agent, requested: str | None) -> Outcome:
        """What steps.advance_by_agent answers: the parent's rules, then each joined
        code's in order (the first failing one decides; an exchanged one is a replay),
        then scope attenuation."""
        for step in [parent, *joined]:
            if step.revoked:
                return Outcome("invalid_grant")
            if step.exchanged:
                return Outcome("invalid_grant", replay=step)
            if step.children >= MAX_CHILDREN or step.depth + 1 > MAX_DEPTH:
                return Outcome("invalid_grant")
        shared = [s for s in parent.scope.split() if all(s in j.scope.split() for j in joined)]
        available = [s for s in shared if s in agent.model.scope_set]
        if requested is None:
            return Outcome(scope=" ".join(available)) if available else Outcome("invalid_scope")
        wanted = list(dict.fromkeys(requested.split()))
        if set(wanted) - set(available):
            return Outcome("invalid_scope")
        return Outcome(scope=" ".join(wanted))

    def exchange(self, node: Node):
        if node.exchanged:  # a replay, even of a revoked step
            expected = Outcome("invalid_grant", replay=node)
        elif node.revoked:
            expected = Outcome("invalid_grant")
        else:
            expected = Outcome()
        response = self.flow.exchange(node.code, node.verifier)
        outcome = f"{expected.error or 200}{' (replay)' if expected.replay else ''}"
        self.say(f"exchange {node.name}: {response.status_code} {response.content[:120]!r}", f"exchange: {outcome}")
        if expected.error is not None:
            self.refused(response, expected)
            return response
        assert response.status_code == 200, (node.name, response.content)
        self.tokens[node.name] = response.json()["access_token"]
        node.exchanged = True
        return response

    def revoke(self, node: Node, reason: str) -> None:
        count = lifecycle.revoke_subtree(ChainedGrant.objects.get(pk=node.pk), reason)
        newly = "some" if count else "none"
        self.say(f"revoke {node.name} ({reason!r}): {count} step(s)", f"revoke: {newly} newly revoked")
        assert count == self.revoke_in_model(node, reason), (node.name, count)

    def refused(self, response, expected: Outcome) -> None:
        assert response.status_code == 400, response.content
        assert response["Content-Type"].startswith("application/json")
        body = response.json()
        assert body.get("error") == expected.error, (expected, body)
        if expected.replay is not None:
            self.revoke_in_model(expected.replay, REPLAY)

    def revoke_in_model(self, node: Node, reason: str) -> int:
        """Revoke what lifecycle.reach reaches: the step and everything below it, joins
        included. Returns how many steps were newly revoked."""
        reached = descendants({n.pk: n.parents for n in self.nodes}, node.pk) | {node.pk}
        count = 0
        for n in self.nodes:
            if n.pk in reached and not n.revoked:
                n.revoked, count = reason, count + 1
        return count

    # --- after a sequence -------------------------------------------------------------------------

    def check_against_model(self) -> None:
        rows = {s.pk: s for s in ChainedGrant.objects.chain(self.root_id)}
        assert set(rows) == {n.pk for n in self.nodes}, "the chain's steps are not the ones the client made"
        for n in self.nodes:
            s = rows[n.pk]
            expected_state = "revoked" if n.revoked else "exchanged" if n.exchanged else "live"
            assert s.state == expected_state, (n.name, s.state, expected_state)
            assert (s.scope, s.depth, s.children_count) == (n.scope, n.depth, n.children), n.name
            assert s.revoked_reason == (n.revoked or ""), (n.name, s.revoked_reason, n.revoked)
            assert bool(s.exchanged_at) == n.exchanged, n.name
            assert (s.parent_id, *(uuid.UUID(j["step"]) for j in s.joined)) == (n.parents or (None,)), n.name
            if n.agent:
                assert s.subject == n.agent and s.kind == ChainedGrant.Kind.AGENT, n.name
        # Introspection agrees: a token is active exactly while its step is exchanged, not revoked.
        for name, token in self.tokens.items():
            node = next(n for n in self.nodes if n.name == name)
            seen = self.flow.introspect(token)
            assert seen["active"] is (not node.revoked), (name, seen)
            if seen["active"]:
                assert seen["chain_id"] == str(self.root_id) and seen["chain_depth"] == node.depth, seen


def descendants(parents_of: dict, pk) -> set:
    """Every step below ``pk`` along primary and joined parent links."""
    children: dict = {}
    for child, parents in parents_of.items():
        for p in parents:
            children.setdefault(p, []).append(child)
    found, stack = set(), [pk]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def check_invariants(root_id) -> None:
    """What holds for any chain whatever happened to it through the endpoints."""
    steps = list(ChainedGrant.objects.chain(root_id).select_related("agent"))
    by_pk = {s.pk: s for s in steps}
    join_rows = list(ChainJoin.objects.filter(root_id=root_id).order_by("step", "position"))
    for s in steps:
        rows = [(j.parent_id, j.position) for j in join_rows if j.step_id == s.pk]
        assert rows == [(uuid.UUID(j["step"]), i) for i, j in enumerate(s.joined, 1)], "join rows differ from joined"
    parents_of = {s.pk: tuple(p for p in [s.parent_id, *(uuid.UUID(j["step"]) for j in s.joined)] if p) for s in steps}

    # Exactly one state per step, the same from the property and the querysets.
    chain = ChainedGrant.objects.chain(root_id)
    members = {state: set(chain.in_state(state).values_list("pk", flat=True)) for state in STEP_STATES}
    assert sum(len(m) for m in members.values()) == len(steps)
    for s in steps:
        assert [state for state in STEP_STATES if s.pk in members[state]] == [s.state], s.pk

    Grant, AccessToken = get_grant_model(), get_access_token_model()
    grants = {g.pk: g for g in Grant.objects.filter(pk__in=[s.grant_id for s in steps if s.grant_id])}
    tokens = {
        t.pk: t for t in AccessToken.objects.filter(pk__in=[s.access_token_id for s in steps if s.access_token_id])
    }
    for s in steps:
        below = descendants(parents_of, s.pk)
        # What revocation reaches is the step and everything below it, joins included.
        assert set(ChainedGrant.objects.filter(lifecycle.reach(s)).values_list("pk", flat=True)) == below | {s.pk}
        assert s.children_count == sum(s.pk in p for p in parents_of.values()), s.pk
        if s.state == "revoked":
            assert all(by_pk[d].revoked_at for d in below), f"a step below revoked {s.pk} is not revoked"
            assert s.grant_id not in grants and s.ended_at is not None
            assert s.access_token_id not in tokens  # revoking deleted what it issued
        elif s.state == "exchanged":
            token = tokens.get(s.access_token_id)
            assert token is not None, f"exchanged step {s.pk} has no token link"
            assert (token.scope, token.user_id) == (s.scope, s.user_id)
            assert s.grant_id not in grants and s.ended_at is not None
        else:
            assert s.state == "live", s.state  # nothing expires within a test
            assert s.access_token_id is None and s.ended_at is None
            grant = grants.get(s.grant_id)
            assert grant is not None and grant.scope == s.scope, f"live step {s.pk} has no matching DOT grant"
        if s.kind == ChainedGrant.Kind.AGENT:  # agents only narrow
            scope = set(s.scope.split())
            assert scope, s.pk
            for p in parents_of[s.pk]:
                assert scope <= set(by_pk[p].scope.split()), f"{s.pk} is wider than its parent {p}"
            assert scope <= s.agent.scope_set

    verification = integrity.verify_chain(root_id)
    assert verification.problems == [], verification.problems
    assert verification.ok and verification.checked == len(steps) and verification.first_bad_step is None
    head = ChainHead.objects.get(root_id=root_id)
    assert head.steps == len(steps)
    assert head.events == StepEvent.objects.filter(root_id=root_id).count()


@pytest.fixture
def agents(make_agent, chain_settings):
    chain_settings(MAX_CHILDREN=MAX_CHILDREN, MAX_DEPTH=MAX_DEPTH)
    return [make_agent(identifier, scopes=scopes) for identifier, scopes in AGENTS.items()]


# --- 1. random operations ---------------------------------------------------------------------


@settings(PROPERTY, max_examples=80)
@given(ops=operations(min_size=2, max_size=12))
def test_random_operations_keep_every_step_in_one_consistent_state(flow, alice, agents, ops):
    note(f"operations: {ops!r}")  # pytest's report here leaves the example's arguments blank
    run = ChainRun.start(flow, alice, agents)
    for op in ops:
        run.apply(op)
    check_invariants(run.root_id)
    run.check_against_model()


# --- 2. one tamper ----------------------------------------------------------------------------

FIELD_EDITS = (
    "scope",
    "subject",
    "requested_scope",
    "redirect_uri",
    "expires",
    "actor",
    "joined",
    "proof_claims",
    "link_hash",
    "exchanged_cleared",
    "revoked_cleared",
    "revoked_set",
    "access_token_changed",
    "token_family",
)
TAMPERS = (*FIELD_EDITS, "delete_leaf", "delete_subtree", "delete_event", "forged_step", "widened_and_rehashed")
SALT = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)


def problems_of(root_id) -> list[dict]:
    verification = integrity.verify_chain(root_id)
    assert not verification.ok, f"the tamper was not caught: {verification}"
    assert verification.problems, verification
    return verification.problems


def named(problems, step_id) -> list[str]:
    return [p["problem"] for p in problems if p["step"] == str(step_id)]


def chain_level(problems) -> list[str]:
    return [p["problem"] for p in problems if p["step"] is None]


def eligible(kind: str, steps: list[ChainedGrant]) -> list[ChainedGrant]:
    """The steps a tamper of ``kind`` can be made on."""
    if kind == "exchanged_cleared":
        return [s for s in steps if s.exchanged_at]
    if kind == "revoked_cleared":
        return [s for s in steps if s.revoked_at]
    if kind == "revoked_set":
        return [s for s in steps if not s.revoked_at]
    if kind == "delete_leaf":
        return [s for s in steps if s.children_count == 0 and s.parent_id]
    if kind == "delete_subtree":
        return [s for s in steps if s.parent_id]
    return steps


def prepare(run: ChainRun, kind: str) -> None:
    """Through the real operations: give the chain what the tamper needs (an exchanged
    or a revoked step, an event), if the random operations did not."""
    if kind in ("exchanged_cleared", "access_token_changed", "delete_event") and not any(
        n.exchanged for n in run.nodes
    ):
        live = [n for n in run.nodes if n.live]
        if live:
            run.exchange(live[-1])
    if kind == "revoked_cleared" and not any(n.revoked for n in run.nodes):
        leaf = next(n for n in reversed(run.nodes) if n.children == 0)
        run.revoke(leaf, "prepared revocation")


def rehash_from(step: ChainedGrant) -> None:
    """What an attacker who read the docs does: recompute the link hashes of ``step``
    and of everything under it (by path) with the published algorithm."""
    hashes: dict = {}
    for row in ChainedGrant.objects.subtree_of(step).order_by("depth", "created"):
        parent = hashes.get(row.parent_id) or (row.parent.link_hash if row.parent_id else "")
        row.link_hash = integrity.compute_link_hash(row, parent)
        hashes[row.pk] = row.link_hash
        ChainedGrant.objects.filter(pk=row.pk).update(link_hash=row.link_hash)


def edit_field(kind: str, target: ChainedGrant, steps: list[ChainedGrant], data, run: ChainRun) -> None:
    """One column of ``target`` changed with a query (no save(): no signal, no hash)."""
    salt = data.draw(SALT, label="salt")
    rows = ChainedGrant.objects.filter(pk=target.pk)
    if kind in ("scope", "requested_scope"):
        extra = data.draw(st.sampled_from(["admin", "email", salt]), label="added scope")
        assume(extra not in getattr(target, kind).split())
        rows.update(**{kind: f"{getattr(target, kind)} {extra}".strip()})
    elif kind == "subject":
        rows.update(subject=target.subject + salt)
    elif kind == "redirect_uri":
        rows.update(redirect_uri=target.redirect_uri + "/" + salt)
    elif kind == "expires":
        seconds = data.draw(st.integers(1, 10**7) | st.integers(-(10**7), -1), label="seconds")
        rows.update(expires=target.expires + timedelta(seconds=seconds))
    elif kind == "actor":
        key = data.draw(st.sampled_from([*sorted(target.actor), salt]), label="actor key")
        rows.update(actor={**target.actor, key: salt + "!"})
    elif kind == "joined":
        how = data.draw(st.sampled_from(["drop", "rehash", "add"] if target.joined else ["add"]), label="joined edit")
        if how == "drop":
            rows.update(joined=target.joined[:-1])
        elif how == "rehash":  # a joined parent's link hash as it would be after editing that parent
            rows.update(joined=[{**target.joined[0], "link_hash": secrets.token_hex(32)}, *target.joined[1:]])
        else:
            other = data.draw(st.sampled_from([s for s in steps if s.pk != target.pk]), label="claimed parent")
            rows.update(joined=[*target.joined, {"step": str(other.pk), "link_hash": other.link_hash}])
    elif kind == "proof_claims":
        rows.update(proof_claims={**target.proof_claims, "x-" + salt: salt})
    elif kind == "link_hash":
        new = secrets.token_hex(32)
        rows.update(link_hash=new)
    elif kind == "exchanged_cleared":
        stealthy = data.draw(st.booleans(), label="token link and ended_at cleared too")
        rows.update(exchanged_at=None, **({"access_token": None, "ended_at": None} if stealthy else {}))
    elif kind == "revoked_cleared":
        rows.update(revoked_at=None, revoked_reason="")
    elif kind == "revoked_set":
        rows.update(revoked_at=timezone.now(), revoked_reason=salt, ended_at=timezone.now())
    elif kind == "access_token_changed":
        others = [s.access_token_id for s in steps if s.access_token_id not in (None, target.access_token_id)]
        how = data.draw(st.sampled_from(["plain", "missing", *(["another step's"] if others else [])]), label="token")
        if how == "plain":
            plain = make_token(target.user, target.application, target.scope)
            rows.update(access_token=get_access_token_model().objects.get(token_checksum=sha256_hex(plain)))
            # The edited link never lends the plain token the chain's act claim.
            assert run.flow.introspect(plain) == {"active": False}
        elif how == "missing":
            rows.update(access_token_id=(target.access_token_id or 0) + 10**6)
        else:
            rows.update(access_token_id=data.draw(st.sampled_from(others), label="another step's token"))
    elif kind == "token_family":  # exchanged: another family; never exchanged: one made up
        rows.update(token_family=uuid.uuid4())
    else:  # pragma: no cover
        raise AssertionError(kind)


def forge_step(under: ChainedGrant, steps: list[ChainedGrant], data) -> ChainedGrant:
    """A step inserted with a correctly computed link hash (but no signature of the
    record key: none, or another step's signed record replayed)."""
    record_from = data.draw(st.sampled_from([None, *steps]), label="record replayed from")
    forged = ChainedGrant(
        id=uuid.uuid4(),
        kind="agent",
        code_digest=secrets.token_hex(32),
        expires=timezone.now() + timedelta(minutes=10),
        redirect_uri=under.redirect_uri,
        application=under.application,
        user=under.user,
        agent=steps[-1].agent,
        subject=steps[-1].subject,
        scope=under.scope,
        requested_scope=under.scope,
        record_jws=record_from.record_jws if record_from else "",
    )
    forged.parent, forged.root_id, forged.depth = under, under.root_id, under.depth + 1
    forged.path = under.path + forged.id.hex + "/"
    forged.link_hash = integrity.compute_link_hash(forged, under.link_hash)
    forged.save(force_insert=True)
    if data.draw(st.booleans(), label="parent's children_count bumped too"):
        ChainedGrant.objects.filter(pk=under.pk).update(children_count=under.children_count + 1)
    return forged


def delete_steps(top: ChainedGrant) -> list[ChainedGrant]:
    """``top`` and everything under it by path, deepest first (parents are PROTECTed);
    join rows and events go with them (CASCADE)."""
    doomed = list(ChainedGrant.objects.subtree_of(top).order_by("-depth"))
    for step in doomed:
        ChainedGrant.objects.filter(pk=step.pk).delete()
    return doomed


@pytest.mark.parametrize("kind", TAMPERS)
@settings(PROPERTY, max_examples=6)
@given(ops=operations(max_size=6), data=st.data())
def test_one_tamper_in_the_database_is_caught_and_named(flow, alice, agents, kind, ops, data):
    note(f"operations: {ops!r}")  # pytest's report here leaves the example's arguments blank
    run = ChainRun.start(flow, alice, agents)
    for op in ops:
        run.apply(op)
    prepare(run, kind)
    check_invariants(run.root_id)  # untouched, the chain verifies
    steps = list(ChainedGrant.objects.chain(run.root_id).select_related("agent", "user", "application"))
    candidates = eligible(kind, steps)
    assume(candidates)  # e.g. "revoked_set" when the whole chain was revoked
    target = data.draw(st.sampled_from(candidates), label="target")
    note(f"tamper {kind} on {run.by_pk(target.pk).name} ({target.state})")

    if kind in FIELD_EDITS:
        edit_field(kind, target, steps, data, run)
        problems = problems_of(run.root_id)
        assert named(problems, target.pk), (kind, problems)
    elif kind == "widened_and_rehashed":
        ChainedGrant.objects.filter(pk=target.pk).update(scope=target.scope + " admin")
        rehash_from(ChainedGrant.objects.get(pk=target.pk))
        problems = problems_of(run.root_id)
        assert any("signed record" in p for p in named(problems, target.pk)), problems
    elif kind == "forged_step":
        forged = forge_step(target, steps, data)
        problems = problems_of(run.root_id)
        assert any("signed record" in p for p in named(problems, forged.pk)), problems
        assert any("added outside a hop" in p for p in chain_level(problems)), problems
    elif kind == "delete_event":
        events = list(StepEvent.objects.filter(root_id=run.root_id).order_by("seq"))
        assume(events)
        event = data.draw(st.sampled_from(events), label="event")
        StepEvent.objects.filter(pk=event.pk).delete()
        problems = problems_of(run.root_id)
        assert any(f"counts {len(events)} events" in p for p in chain_level(problems)), problems
        if event.kind == StepEvent.Kind.EXCHANGED:  # its step's exchanged column has no event now
            assert any("no signed event" in p for p in named(problems, event.step_id)), problems
    else:  # delete_leaf, delete_subtree
        top = target
        doomed = delete_steps(top)
        assert kind != "delete_leaf" or len(doomed) == 1
        problems = problems_of(run.root_id)
        assert any(f"{len(doomed)} step(s) were removed" in p for p in chain_level(problems)), problems
        assert any("children are missing" in p for p in named(problems, top.parent_id)), problems
        if kind == "delete_leaf":  # a join leaf: each joined parent misses it too
            for entry in top.joined:
                assert any("children are missing" in p for p in named(problems, entry["step"])), problems


# --- two edits these properties found verification missing (fixed) ----------------------------


def test_a_token_link_on_a_step_never_exchanged_is_named(flow, alice, agents):
    run = ChainRun.start(flow, alice, agents)
    live = run.nodes[1]
    plain = make_token(alice, flow.app, "read")
    ChainedGrant.objects.filter(pk=live.pk).update(
        access_token=get_access_token_model().objects.get(token_checksum=sha256_hex(plain))
    )
    assert flow.introspect(plain) == {"active": False}  # introspection refuses the forged link
    assert any("no signed event" in p for p in named(problems_of(run.root_id), live.pk))  # and verification names it


def test_an_edited_token_family_is_named(flow, alice, agents):
    run = ChainRun.start(flow, alice, agents)
    exchanged = run.nodes[1]
    run.exchange(exchanged)
    ChainedGrant.objects.filter(pk=exchanged.pk).update(token_family=uuid.uuid4())
    assert any("token family" in p for p in named(problems_of(run.root_id), exchanged.pk))


# --- 3. a widened DOT grant ---------------------------------------------------------------------


@settings(PROPERTY, max_examples=15)
@given(ops=operations(max_size=4), data=st.data())
def test_a_widened_dot_grant_scope_makes_the_exchange_invalid_grant(flow, alice, agents, ops, data):
    note(f"operations: {ops!r}")  # pytest's report here leaves the example's arguments blank
    run = ChainRun.start(flow, alice, agents)
    for op in ops:
        run.apply(op)
    live = [n for n in run.nodes if n.live]
    assume(live)
    node = data.draw(st.sampled_from(live), label="live step")
    step = ChainedGrant.objects.get(pk=node.pk)
    extra = data.draw(st.lists(st.sampled_from(["admin", "email", *SCOPES]), min_size=1, max_size=3), label="added")
    added = [s for s in dict.fromkeys(extra) if s not in step.scope.split()] or ["admin"]
    widened = " ".join([*step.scope.split(), *added])
    note(f"grant of {node.name} widened from {step.scope!r} to {widened!r}")
    get_grant_model().objects.filter(pk=step.grant_id).update(scope=widened)
    tokens_before = get_access_token_model().objects.count()

    response = run.flow.exchange(node.code, node.verifier)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_grant"
    assert get_access_token_model().objects.count() == tokens_before
    step.refresh_from_db()
    assert step.exchanged_at is None and step.access_token_id is None
    assert not StepEvent.objects.filter(step_id=step.pk, kind=StepEvent.Kind.EXCHANGED).exists()
    assert integrity.verify_chain(run.root_id).ok  # the chain's own record is untouched
