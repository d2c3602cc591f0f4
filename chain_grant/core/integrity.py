"""Tamper evidence: each step's ``link_hash`` covers its parent's and its own
immutable fields; ``verify_chain`` recomputes them root first."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from ..client.jose import sha256_hex
from ..models import ChainedGrant, ChainHead, ChainJoin, StepEvent
from . import record

_LINKED_FIELDS_V1 = (
    "id",
    "parent_id",
    "root_id",
    "depth",
    "path",
    "code_digest",
    "kind",
    "application_id",
    "user_id",
    "agent_id",
    "subject",
    "scope",
    "requested_scope",
    "proof_jti",
    "proof_claims",
    "proof_digest",
    "message_digest",
    "redirect_uri",
    "created",
    "expires",
)
# Version 2 (migration 0009) also covers who the actor was and the key it signed with;
# version 3 (migration 0010) the joined parents' link hashes and the DOT grant's PKCE
# challenge and resource (``grant_digest``), and its steps carry a signed record.
_LINKED_FIELDS_V2 = (*_LINKED_FIELDS_V1, "actor", "agent_key_thumbprint", "hash_version")
_LINKED_FIELDS_V3 = (*_LINKED_FIELDS_V2, "joined", "grant_digest")
# Version 4 (migration 0011) also covers the DPoP key a step's code is bound to;
# version 5 (migration 0012) the hand-off policy's decision (core.handoff).
_LINKED_FIELDS_V4 = (*_LINKED_FIELDS_V3, "dpop_jkt")
LINKED_FIELDS = {
    1: _LINKED_FIELDS_V1,
    2: _LINKED_FIELDS_V2,
    3: _LINKED_FIELDS_V3,
    4: _LINKED_FIELDS_V4,
    5: (*_LINKED_FIELDS_V4, "policy_decision"),
}
LINK_HASH_VERSION = 5


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if value is None or isinstance(value, (int, str, dict, list, bool)):
        return value
    return str(value)  # UUIDs


def compute_link_hash(step: ChainedGrant, parent_link_hash: str) -> str:
    """SHA-256 over the parent's link_hash and this step's immutable fields (those of its
    ``hash_version``; an unknown version matches no stored hash)."""
    names = LINKED_FIELDS.get(step.hash_version)
    if names is None:
        return ""
    fields = {name: _canonical(getattr(step, name)) for name in names}
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256_hex(parent_link_hash + "\n" + blob)


@dataclass
class Verification:
    ok: bool
    checked: int
    first_bad_step: Any = None  # id of the first step named by a problem
    problems: list[dict[str, Any]] = field(default_factory=list)  # [{step, problem}], step None: the chain's


def verify_chain(chain_id) -> Verification:
    """Verify a chain from the database: every link hash, signed record, join, event
    and the signed head (see :func:`verify_steps`)."""
    steps = ChainedGrant.objects.chain(chain_id).select_related("head").order_by("depth", "created")
    return verify_steps(list(steps))


_LOAD: Any = object()  # "not given: load it"


def head_of(steps) -> ChainHead | None:
    """The chain's head: from the root row (``select_related("head")`` makes that free),
    or None if it has none."""
    root = next((s for s in steps if s.parent_id is None), None)
    if root is None:
        return None
    try:
        return root.head
    except ChainHead.DoesNotExist:
        return None


def verify_steps(steps, events=None, head=_LOAD, joins=None) -> Verification:
    """Verify a chain's steps (all of one chain, parents first: depth, created) and,
    loaded here unless given, its events, head and join rows. Each problem names the
    step it is about; a chain recorded before signed records (no head, hash version
    < 3) is checked by its link hashes alone."""
    steps = list(steps)
    if not steps:
        return Verification(False, 0)
    root_id = steps[0].root_id
    if events is None:
        events = list(StepEvent.objects.filter(root_id=root_id).order_by("seq"))
    if head is _LOAD:
        head = head_of(steps)
    if joins is None:
        joins = list(ChainJoin.objects.filter(root_id=root_id).values_list("step_id", "parent_id", "position"))
    found = _Problems()
    _check_links(steps, found)
    _check_joins(steps, joins, found)
    signed = head is not None or any(s.hash_version >= 3 for s in steps)
    if signed:
        children = _children(steps)
        _check_records(steps, found)
        _check_events(events, found)
        _check_head(steps, events, head, children, found)
        _check_states(steps, events, children, found)
    first = next((p["step"] for p in found.items if p["step"]), None)
    return Verification(not found.items, len(steps), first and _as_uuid(first), found.items)


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, step_id, problem: str) -> None:
        self.items.append({"step": str(step_id) if step_id else None, "problem": problem})


def _as_uuid(value):
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _check_links(steps, found: _Problems) -> None:
    by_id = {step.pk: step for step in steps}
    principal = None  # the person a user-rooted chain acts for, as its root recorded it
    for step in steps:
        if step.parent_id is None and step.kind == ChainedGrant.Kind.USER:
            principal = _user_pk(step.subject)
        parent = by_id.get(step.parent_id) if step.parent_id else None
        if step.parent_id and parent is None:
            found.add(step.pk, "its parent step is missing (removed)")
            continue
        if not _link_matches(step, parent.link_hash if parent else "", principal):
            found.add(step.pk, "its fields do not match its link_hash (edited)")
        for entry in step.joined or []:
            other = by_id.get(_as_uuid(entry["step"]))
            if other is None:
                found.add(step.pk, f"its joined parent {entry['step']} is missing (removed)")
            elif other.link_hash != entry["link_hash"]:
                found.add(other.pk, f"its link_hash is not the one join {step.pk} recorded (rehashed)")


def _check_joins(steps, joins, found: _Problems) -> None:
    recorded = {(s.pk, _as_uuid(j["step"]), i) for s in steps for i, j in enumerate(s.joined or [], 1)}
    rows = {tuple(row) for row in joins}
    for step_id, parent_id, _ in rows - recorded:
        found.add(step_id, f"a join row names {parent_id}, which its record does not")
    for step_id, parent_id, _ in recorded - rows:
        found.add(step_id, f"the join row for its parent {parent_id} is missing (revocation would not reach it)")


def _check_records(steps, found: _Problems) -> None:
    for step in steps:
        if step.hash_version < 3:
            continue
        payload = record.verified_payload(step.record_jws, record.STEP_TYP)
        expected = {"chain": str(step.root_id), "step": str(step.pk), "lh": step.link_hash}
        if payload is None or any(payload.get(k) != v for k, v in expected.items()):
            found.add(step.pk, "its signed record does not match it (forged, inserted or rehashed)")


def _check_events(events, found: _Problems) -> None:
    previous = ""
    for expected, event in enumerate(events, 1):
        if event.seq != expected:
            found.add(event.step_id, f"event {expected} of the chain is missing (removed)")
            previous = ""
        if record.event_hash(previous, event) != event.hash and event.seq == expected:
            found.add(event.step_id, f"event {event.seq} ({event.kind}) was edited")
        payload = record.verified_payload(event.jws, record.EVENT_TYP)
        signed = {
            "seq": event.seq,
            "step": str(event.step_id),
            "kind": event.kind,
            "data": event.data,
            "eh": event.hash,
        }
        if payload is None or any(payload.get(k) != v for k, v in signed.items()):
            found.add(event.step_id, f"event {event.seq} ({event.kind}) does not match its signature")
        previous = event.hash


def _children(steps) -> dict[Any, list]:
    """Each step's children as the rows say: the steps naming it as a parent, primary or joined."""
    children: dict[Any, list] = {}
    for s in steps:
        for parent in [s.parent_id, *(_as_uuid(j["step"]) for j in s.joined or [])]:
            children.setdefault(parent, []).append(s.pk)
    return children


def _check_head(steps, events, head, children: dict[Any, list], found: _Problems) -> None:
    if head is None:
        found.add(None, "the chain's signed head is missing")
        return
    payload = record.verified_payload(head.jws, record.STEP_TYP) or record.verified_payload(head.jws, record.EVENT_TYP)
    claims = record.head_claims(head)
    if (
        payload is None
        or payload.get("chain") != str(head.root_id)
        or any(payload.get(k) != v for k, v in claims.items())
    ):
        found.add(None, "the chain's head does not match its signature")
    leaves = [s.link_hash for s in steps if s.pk not in children]
    if head.steps != len(steps):
        lost = head.steps - len(steps)
        what = f"{lost} step(s) were removed" if lost > 0 else f"{-lost} step(s) were added outside a hop"
        found.add(None, f"the signed head counts {head.steps} steps, the database has {len(steps)}: {what}")
        for s in steps:
            named = len(children.get(s.pk, []))
            if s.children_count > named:
                found.add(s.pk, f"{s.children_count - named} of its children are missing (removed)")
    else:
        _check_children_counts(steps, children, found)
    if head.steps == len(steps) and record.leaves_digest(leaves) != head.leaves:
        found.add(None, "the chain's leaves are not the ones its signed head names (a step was replaced)")
    if head.events != len(events) or head.event_hash != (events[-1].hash if events else ""):
        found.add(None, f"the signed head counts {head.events} events, the database has {len(events)}")


def _check_children_counts(steps, children: dict[Any, list], found: _Problems) -> None:
    """``children_count`` (what the fan-out limit and the handed-off state read) is the
    number of steps that name the step as a parent, primary or joined."""
    for s in steps:
        named = len(children.get(s.pk, []))
        if s.children_count != named:
            found.add(s.pk, f"its children count says {s.children_count}, {named} steps name it")


def _check_states(steps, events, children: dict[Any, list], found: _Problems) -> None:
    """Every exchanged or revoked column agrees with a signed event, and back."""
    exchanged = {e.step_id: e.data for e in events if e.kind == StepEvent.Kind.EXCHANGED}
    reason: dict[Any, str] = {}
    for event in events:
        if event.kind != StepEvent.Kind.REVOKED:
            continue
        stack = [event.step_id]
        while stack:
            pk = stack.pop()
            if pk not in reason:
                reason[pk] = event.data.get("reason", "")
                stack.extend(children.get(pk, []))
    for s in steps:
        if s.hash_version < 3:
            continue  # recorded before state events
        data = exchanged.get(s.pk)
        if s.exchanged_at and data is None:
            found.add(s.pk, "it is marked exchanged, but no signed event says so")
        elif data is None and (s.access_token_id or s.token_family):
            found.add(s.pk, "it links a token, but no signed event says it was exchanged")
        elif data is not None and not s.exchanged_at:
            found.add(s.pk, "its exchanged state was cleared")
        elif data is not None and s.access_token_id != data.get("access_token_id"):
            found.add(s.pk, "its access-token link is not the token its exchange event names")
        elif data is not None and (str(s.token_family) if s.token_family else None) != data.get("token_family"):
            found.add(s.pk, "its refresh token family is not the one its exchange event names")
        if s.revoked_at and s.pk not in reason:
            found.add(s.pk, "it is marked revoked, but no signed event says so")
        elif s.pk in reason and not s.revoked_at:
            found.add(s.pk, "its revoked state was cleared")
        elif s.pk in reason and s.revoked_reason != reason[s.pk]:
            found.add(s.pk, "its revocation reason is not the one its event names")


def _link_matches(step: ChainedGrant, parent_hash: str, principal) -> bool:
    if compute_link_hash(step, parent_hash) == step.link_hash:
        return True
    if step.user_id is None and principal is not None:
        # Deleting the person nulls user_id (SET_NULL): not an edit. Check the hash
        # against the person the root recorded.
        step.user_id = principal
        try:
            return compute_link_hash(step, parent_hash) == step.link_hash
        finally:
            step.user_id = None
    return False


def _user_pk(subject: str):
    try:
        return get_user_model()._meta.pk.to_python(subject)
    except ValidationError:
        return None


# --- an earlier export against today's database ---------------------------------------

_EXPORTED_STATE = ("state", "exchanged_at", "revoked_at", "revoked_reason", "access_token_id")


def head_data(head: ChainHead) -> dict[str, Any]:
    return {"steps": head.steps, "leaves": head.leaves, "events": head.events, "event_hash": head.event_hash}


def compare_with_export(exported: dict[str, Any], steps, head: ChainHead | None) -> list[dict[str, Any]]:
    """What changed since ``exported`` (an evidence bundle's ``evidence``, or the tree
    API's answer): each step removed, added or whose link_hash changed, each state that
    moved backwards or changed its record, and a head that went back (a rollback).
    A step live then and exchanged, handed off, expired or revoked now is the chain
    going on, not a change."""
    found = _Problems()
    now = {str(s.pk): s for s in steps}
    then = {row["id"]: row for row in exported.get("steps", []) if isinstance(row, dict) and "id" in row}
    for step_id, row in then.items():
        step = now.get(step_id)
        if step is None:
            found.add(step_id, "removed since the export")
        elif step.link_hash != row.get("link_hash"):
            found.add(step_id, "its link_hash changed since the export")
        elif row.get("state") != "live":
            for name in _EXPORTED_STATE[1:]:
                value = getattr(step, name)
                value = value.isoformat() if hasattr(value, "isoformat") else value
                if name == "revoked_reason":
                    value = value or None
                if row.get(name) != value and not (name in ("revoked_at", "revoked_reason") and not row.get(name)):
                    found.add(step_id, f"its {name} changed since the export")
    for step_id in now.keys() - then.keys():
        found.add(step_id, "added since the export")
    old_head = exported.get("head") or {}
    if old_head and head is None:
        found.add(None, "the chain's signed head is gone since the export")
    elif (
        old_head
        and head is not None
        and (head.steps < old_head.get("steps", 0) or head.events < old_head.get("events", 0))
    ):
        found.add(None, "the head went back since the export (a rollback)")
    return found.items
