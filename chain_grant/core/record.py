"""The signed record: what someone who can write the database but does not hold the
IdP's record key cannot forge.

* Each step written (hash version 3) carries ``record_jws``: a JWS by the record key
  over its ``link_hash`` (which covers its immutable fields and every parent's link
  hash) and the chain's head as that step left it.
* State changes are append-only :class:`~chain_grant.models.StepEvent` rows: numbered
  per chain, each hashing the previous one, each signed with the head it leaves.
* The chain's :class:`~chain_grant.models.ChainHead` keeps the step count, an
  order-free digest of the leaves' link hashes (sum modulo 2**256, so a hop updates it
  in constant time), the event count and the last event's hash, with the latest
  signature over them.

One signature per write: a hop signs its step (the head rides in the same payload), an
event signs itself (likewise). The key is ``CHAIN_GRANT["RECORD_SIGNING_KEY"]`` (a PEM:
Ed25519, EC or RSA), or an Ed25519 key derived from ``SECRET_KEY`` when that is empty;
its public half is served at the chain's JWKS (``chain_grant.urls``), and retired public
keys stay verifiable through ``RECORD_VERIFY_KEYS``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.signals import setting_changed
from django.utils import timezone
from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from ..client.jose import b64url_decode, sha256_hex
from ..models import ChainedGrant, ChainHead, StepEvent
from ..settings import chain_grant_settings

_MODULUS = 2**256
_EC_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
STEP_TYP, EVENT_TYP = "chain-step+jws", "chain-event+jws"


# --- the key --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def signing_key() -> jwk.JWK:
    """The record key (private), with ``kid`` = its RFC 7638 thumbprint."""
    pem = chain_grant_settings.RECORD_SIGNING_KEY
    if pem:
        key = jwk.JWK.from_pem(pem.encode() if isinstance(pem, str) else pem)
    else:
        seed = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"chain_grant", info=b"chain_grant record signing key v1"
        ).derive(str(settings.SECRET_KEY).encode())
        private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        key = jwk.JWK.from_pem(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    key.update({"kid": key.thumbprint(), "use": "sig", "alg": algorithm_for(key)})
    return key


def algorithm_for(key: jwk.JWK) -> str:
    """The JWS algorithm a record key signs with (EdDSA, ES256/384/512 or RS256)."""
    kty = key.get("kty")
    if kty == "EC":
        return _EC_ALGS.get(key.get("crv"), "")
    return {"OKP": "EdDSA", "RSA": "RS256"}.get(kty, "")


@lru_cache(maxsize=1)
def _verify_keys() -> dict[str, jwk.JWK]:
    keys = {}
    for value in [signing_key().export_public(as_dict=True), *chain_grant_settings.RECORD_VERIFY_KEYS]:
        key = jwk.JWK(**value)
        keys[value.get("kid") or key.thumbprint()] = key
    return keys


def public_jwks() -> dict[str, Any]:
    """The record keys' public halves (current first), as a JWK Set."""
    keys = []
    for kid, key in _verify_keys().items():
        public = key.export_public(as_dict=True)
        keys.append({**public, "kid": kid, "use": "sig", "alg": algorithm_for(key)})
    return {"keys": keys}


def _reset(**kwargs) -> None:
    signing_key.cache_clear()
    _verify_keys.cache_clear()


setting_changed.connect(_reset)


def sign(payload: dict[str, Any], typ: str) -> str:
    key = signing_key()
    alg = key.get("alg")
    token = jws.JWS(_canonical_json(payload).encode())
    token.add_signature(key, alg=alg, protected=json.dumps({"alg": alg, "kid": key.get("kid"), "typ": typ}))
    return token.serialize(compact=True)


def verified_payload(token: str, typ: str) -> dict[str, Any] | None:
    """The payload of a record JWS signed by a record key, or None."""
    if not token or token.count(".") != 2:
        return None
    try:
        header = json.loads(b64url_decode(token.split(".", 1)[0]))
        key = _verify_keys().get(header.get("kid"))
        if key is None or header.get("typ") != typ or header.get("alg") != algorithm_for(key):
            return None
        parsed = jws.JWS()
        parsed.deserialize(token)
        parsed.verify(key, alg=header["alg"])
        payload = json.loads(parsed.payload)
    except (JWException, ValueError, TypeError, KeyError):
        return None
    return payload if isinstance(payload, dict) else None


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- the head -------------------------------------------------------------------------


def leaf_term(link_hash: str) -> int:
    return int(link_hash, 16) if link_hash else 0


def leaves_digest(link_hashes) -> str:
    """The order-free digest of a set of leaves: their link hashes summed mod 2**256."""
    return format(sum(leaf_term(h) for h in link_hashes) % _MODULUS, "064x")


def _shift(digest: str, add: list[str], remove: list[str]) -> str:
    total = leaf_term(digest) + sum(leaf_term(h) for h in add) - sum(leaf_term(h) for h in remove)
    return format(total % _MODULUS, "064x")


def head_claims(head: ChainHead) -> dict[str, Any]:
    return {"n": head.steps, "leaves": head.leaves, "events": head.events, "ev": head.event_hash}


def _head_for_update(root_id) -> ChainHead:
    """The chain's head (the caller holds the chain lock). A chain recorded before
    signed records gets one now, from its rows as they are."""
    head = ChainHead.objects.filter(root_id=root_id).first()
    if head is not None:
        return head
    rows = list(ChainedGrant.objects.chain(root_id).values_list("pk", "link_hash", "children_count"))
    head = ChainHead(root_id=root_id, steps=len(rows), leaves=leaves_digest(h for _, h, n in rows if n == 0))
    head.save(force_insert=True)
    return head


def sign_step(step: ChainedGrant, parents: list[ChainedGrant]) -> ChainHead:
    """Before ``step`` is inserted: move the head on (one more step; the parents that
    were leaves no longer are; the step is one), and set ``step.record_jws``. Returns
    the head to save with :func:`save_head` once the step is written."""
    if step.parent_id is None:
        head = ChainHead(root_id=step.pk, steps=0, leaves=leaves_digest([]))
        head._state.adding = True
    else:
        head = _head_for_update(step.root_id)
    head.steps += 1
    was_leaf = [p.link_hash for p in parents if p.children_count == 0]
    head.leaves = _shift(head.leaves, [step.link_hash], was_leaf)
    step.record_jws = sign(
        {
            "chain": str(step.root_id),
            "step": str(step.pk),
            "lh": step.link_hash,
            "parents": [p.link_hash for p in parents],
            "iat": int(timezone.now().timestamp()),
            **head_claims(head),
        },
        STEP_TYP,
    )
    head.jws = step.record_jws
    return head


def save_head(head: ChainHead) -> None:
    head.updated = timezone.now()
    if head._state.adding:
        head.save(force_insert=True)
    else:
        ChainHead.objects.filter(pk=head.pk).update(
            steps=head.steps,
            leaves=head.leaves,
            events=head.events,
            event_hash=head.event_hash,
            jws=head.jws,
            updated=head.updated,
        )


# --- events ---------------------------------------------------------------------------


def event_hash(previous: str, event: StepEvent) -> str:
    fields = {
        "chain": str(event.root_id),
        "seq": event.seq,
        "step": str(event.step_id),
        "kind": event.kind,
        "data": event.data,
        "at": event.at.isoformat(timespec="microseconds"),
    }
    return sha256_hex(previous + "\n" + _canonical_json(fields))


def append_event(step: ChainedGrant, kind: str, data: dict[str, Any], at=None) -> StepEvent:
    """Record a state change of ``step`` (the caller holds the chain lock), signed with
    the head it leaves."""
    head = _head_for_update(step.root_id)
    event = StepEvent(root_id=step.root_id, step_id=step.pk, seq=head.events + 1, kind=kind, data=data)
    event.at = at or timezone.now()
    event.hash = event_hash(head.event_hash, event)
    head.events, head.event_hash = event.seq, event.hash
    payload = {"chain": str(step.root_id), "seq": event.seq, "step": str(step.pk), "kind": kind, "data": data}
    event.jws = head.jws = sign({**payload, "eh": event.hash, **head_claims(head)}, EVENT_TYP)
    event.save(force_insert=True)
    save_head(head)
    return event


def exchange_link_verifies(step: ChainedGrant, access_token, family=None) -> bool:
    """Whether ``access_token`` (or, for a token issued by refreshing, its refresh
    token ``family``) is the one the step's signed ``exchanged`` event names. A step
    recorded before signed records (hash version < 3) has no event and is trusted as
    before."""
    signed = list(
        StepEvent.objects.filter(step_id=step.pk, kind=StepEvent.Kind.EXCHANGED).values_list("jws", flat=True)
    )
    if not signed:
        return step.hash_version < 3
    payload = verified_payload(signed[0], EVENT_TYP)
    if payload is None or payload.get("step") != str(step.pk) or payload.get("kind") != StepEvent.Kind.EXCHANGED:
        return False
    data = payload.get("data") or {}
    if family is not None:
        return data.get("token_family") == str(family)
    return data.get("token_checksum") == access_token.token_checksum
