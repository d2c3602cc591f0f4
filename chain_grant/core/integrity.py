"""Tamper evidence: each step's ``link_hash`` covers its parent's and its own
immutable fields; ``verify_chain`` recomputes them root first."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from ..client.jose import sha256_hex
from ..models import ChainedGrant

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
# Version 2 (migration 0009) also covers who the actor was and the key it signed with.
LINKED_FIELDS = {1: _LINKED_FIELDS_V1, 2: (*_LINKED_FIELDS_V1, "actor", "agent_key_thumbprint", "hash_version")}
LINK_HASH_VERSION = 2


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
    first_bad_step: Any = None  # id of the first step whose link_hash does not match


def verify_chain(chain_id) -> Verification:
    """Recompute every link_hash of a chain (root first) against the stored values."""
    return verify_steps(ChainedGrant.objects.chain(chain_id).order_by("depth", "created").iterator(chunk_size=2000))


def verify_steps(steps) -> Verification:
    """verify_chain over steps already loaded, ordered parents first (depth, created)."""
    stored: dict[Any, str] = {}
    checked = 0
    principal = None  # the person a user-rooted chain acts for, as its root recorded it
    for step in steps:
        if step.parent_id is None and step.kind == ChainedGrant.Kind.USER:
            principal = _user_pk(step.subject)
        parent_hash = stored.get(step.parent_id, "") if step.parent_id else ""
        if step.parent_id and step.parent_id not in stored:
            return Verification(False, checked, step.id)
        if not _link_matches(step, parent_hash, principal):
            return Verification(False, checked, step.id)
        stored[step.id] = step.link_hash
        checked += 1
    return Verification(checked > 0, checked, None)


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
