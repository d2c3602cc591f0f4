"""Reading a chain for review: the tree, its integrity and an evidence bundle (plain
functions shared by the admin and the REST API).

A chain is read in one query whatever its size (``root`` is denormalised and every
related row is joined), and verified from the same rows.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone
from jwcrypto import jws
from jwcrypto.common import JWException
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.utils import jwk_from_pem

from ..core import integrity
from ..core.lineage import actor_label
from ..models import ChainedGrant, ChainHead


@dataclass
class Node:
    step: ChainedGrant
    children: list[Node] = field(default_factory=list)
    narrowed: list[str] = field(default_factory=list)  # parent's scopes this step does not have
    added: list[str] = field(default_factory=list)  # scopes this step has that its parent did not
    joins: list[Node] = field(default_factory=list)  # a join's other parents
    joined_into: list[Node] = field(default_factory=list)  # joins that took this step as another parent
    problems: list[str] = field(default_factory=list)  # what verification says of this step

    @property
    def actor(self) -> str:
        return actor_label(self.step)


@dataclass
class ChainView:
    root: Node
    nodes: list[Node]  # depth-first, parents before children (for an indented tree)
    verification: integrity.Verification
    head: ChainHead | None = None


def load_steps(chain_id) -> list[ChainedGrant]:
    """Every step of a chain, with actor, person and client, in one query."""
    return list(
        ChainedGrant.objects.chain(chain_id)
        .select_related("agent", "user", "application", "head")
        .order_by("depth", "created")
    )


def build(steps: list[ChainedGrant], head: ChainHead | None = None) -> ChainView | None:
    """The tree (a join sits under its primary parent and lists its other parents in
    ``joined``) and its verification."""
    if not steps:
        return None
    nodes = {s.pk: Node(s) for s in steps}
    for node in nodes.values():
        parent = nodes.get(node.step.parent_id) if node.step.parent_id else None
        if parent is not None:
            parent.children.append(node)
            mine, theirs = node.step.scope.split(), parent.step.scope.split()
            node.narrowed = [s for s in theirs if s not in mine]
            node.added = [s for s in mine if s not in theirs]
    for node in nodes.values():
        for entry in node.step.joined or []:
            other = nodes.get(uuid.UUID(entry["step"]))
            if other is not None:
                node.joins.append(other)
                other.joined_into.append(node)
    root = nodes[steps[0].pk]
    ordered: list[Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        ordered.append(node)
        stack.extend(reversed(node.children))
    head = head or integrity.head_of(steps)
    verification = integrity.verify_steps(steps, head=head)
    by_id = {str(pk): node for pk, node in nodes.items()}
    for problem in verification.problems:
        if problem["step"] in by_id:
            by_id[problem["step"]].problems.append(problem["problem"])
    return ChainView(root, ordered, verification, head)


def chain_view(chain_id) -> ChainView | None:
    return build(load_steps(chain_id))


def step_data(node: Node) -> dict[str, Any]:
    """One step as JSON: everything an auditor needs, never the code."""
    s = node.step
    return {
        "id": str(s.pk),
        "parent": str(s.parent_id) if s.parent_id else None,
        "joined": [j["step"] for j in s.joined],  # a join's other parents (a DAG)
        "dpop_jkt": s.dpop_jkt or None,  # the DPoP key its code is bound to (RFC 9449)
        "depth": s.depth,
        "kind": s.kind,
        "actor": node.actor,
        "subject": s.subject,
        "agent": s.actor.get("identifier") if s.kind == s.Kind.AGENT else None,
        "recorded_actor": s.actor,
        "hash_version": s.hash_version,
        "policy_decision": s.policy_decision,  # the hand-off policy rule that allowed it ({}: no policy)
        "user": s.user.get_username() if s.user is not None else None,
        "application": s.application.client_id,
        "scope": s.scope,
        "requested_scope": s.requested_scope,
        "scope_narrowed": node.narrowed,
        "scope_added": node.added,
        "proof": {"jti": s.proof_jti, "claims": s.proof_claims, "digest": s.proof_digest} if s.proof_digest else None,
        "message_digest": s.message_digest or None,
        "code_digest_prefix": s.code_digest[:8],
        "link_hash": s.link_hash,
        "state": s.state,
        "created": s.created.isoformat(),
        "expires": s.expires.isoformat(),
        "exchanged_at": s.exchanged_at.isoformat() if s.exchanged_at else None,
        "access_token_id": s.access_token_id,
        "revoked_at": s.revoked_at.isoformat() if s.revoked_at else None,
        "revoked_reason": s.revoked_reason or None,
        "children": [str(c.step.pk) for c in node.children],
    }


def verification_data(verification: integrity.Verification) -> dict[str, Any]:
    return {
        "ok": verification.ok,
        "checked": verification.checked,
        "first_bad_step": str(verification.first_bad_step) if verification.first_bad_step else None,
        "problems": verification.problems,
    }


def head_data(head: ChainHead | None) -> dict[str, Any] | None:
    """The chain's signed head, as an export keeps it (to catch a later rollback)."""
    if head is None:
        return None
    return {**integrity.head_data(head), "jws": head.jws}


def chain_data(view: ChainView) -> dict[str, Any]:
    return {
        "chain_id": str(view.root.step.pk),
        "steps": [step_data(n) for n in view.nodes],
        "head": head_data(view.head),
        "verification": verification_data(view.verification),
    }


# --- evidence ---------------------------------------------------------------------------


def evidence_bundle(chain_id, issuer: str) -> dict[str, Any] | None:
    """The chain as JSON plus a compact JWS whose payload is exactly that JSON, signed
    with the IdP's OIDC key (RS256, ``kid`` as in the published JWKS), so anyone can
    check it offline against ``jwks_uri``."""
    view = chain_view(chain_id)
    if view is None:
        return None
    payload = {"iss": issuer, "iat": int(timezone.now().timestamp()), "typ": "chain-evidence+json", **chain_data(view)}
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    key = jwk_from_pem(oauth2_settings.OIDC_RSA_PRIVATE_KEY)  # DOT's OIDC key; kid as in DOT's JWKS
    token = jws.JWS(body.encode("utf-8"))
    token.add_signature(
        key, alg="RS256", protected=json.dumps({"alg": "RS256", "kid": key.thumbprint(), "typ": "chain-evidence+jws"})
    )
    return {"evidence": payload, "jws": token.serialize(compact=True)}


def bundle_verifies(bundle: dict[str, Any]) -> bool:
    """Whether an evidence bundle's JWS verifies with this IdP's OIDC key and its
    payload is exactly the bundle's ``evidence``."""
    key = jwk_from_pem(oauth2_settings.OIDC_RSA_PRIVATE_KEY)
    token = jws.JWS()
    try:
        token.deserialize(bundle.get("jws", ""))
        token.verify(key, alg="RS256")
    except (JWException, ValueError, TypeError):
        return False
    return json.loads(token.payload) == bundle.get("evidence")
