"""Tamper evidence against someone who can write the database but does not hold the
IdP's record key: each step's record, each state event and the chain's head are
signed, and verification names what was edited, removed or added. Each of the six
edits that used to pass as ✓ is here, made straight in the database."""

from __future__ import annotations

import json
import uuid

import pytest
from django.core.management import call_command
from django.db.models import F
from jwcrypto import jwk, jws
from oauth2_provider.models import get_access_token_model, get_grant_model

from chain_grant.client.jose import sha256_hex
from chain_grant.core import integrity, lifecycle, record
from chain_grant.models import ChainedGrant, ChainHead, StepEvent
from chain_grant.review import evidence
from tests.helpers import build_real_chain

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(flow, alice, make_agent):
    """root (alice) → planner → (researcher → merger, security); merger and security exchanged."""
    return build_real_chain(flow, alice, make_agent)


def problems(chain_id) -> list[dict]:
    verification = integrity.verify_chain(chain_id)
    assert not verification.ok, "the edit was not caught"
    return verification.problems


def named(chain_id, step) -> list[str]:
    """The problems verification names ``step`` with (asserting there is one)."""
    found = [p["problem"] for p in problems(chain_id) if p["step"] == str(step.pk)]
    assert found, problems(chain_id)
    return found


def chain_level(chain_id) -> list[str]:
    return [p["problem"] for p in problems(chain_id) if p["step"] is None]


def rehash_from(step: ChainedGrant) -> None:
    """What an attacker who read the docs does: recompute the link hashes of ``step``
    and everything under it with the published algorithm."""
    hashes = {}
    for row in ChainedGrant.objects.subtree_of(step).order_by("depth", "created"):
        parent = hashes.get(row.parent_id) or (row.parent.link_hash if row.parent_id else "")
        row.link_hash = integrity.compute_link_hash(row, parent)
        hashes[row.pk] = row.link_hash
        ChainedGrant.objects.filter(pk=row.pk).update(link_hash=row.link_hash)


def test_an_untouched_chain_verifies_and_its_record_verifies_offline(chain, client):
    verification = integrity.verify_chain(chain.chain_id)
    assert verification.ok and verification.problems == [] and verification.checked == 5
    jwks = client.get("/oauth/chain/jwks/").json()
    keys = {key["kid"]: jwk.JWK(**key) for key in jwks["keys"]}
    assert all(not key.has_private for key in keys.values())
    for step in ChainedGrant.objects.chain(chain.chain_id):
        token = jws.JWS()
        token.deserialize(step.record_jws)
        header = json.loads(jws.base64url_decode(step.record_jws.split(".")[0]))
        token.verify(keys[header["kid"]], alg=header["alg"])
        assert json.loads(token.payload)["lh"] == step.link_hash
    head = ChainHead.objects.get(root_id=chain.chain_id)
    assert (head.steps, head.events) == (5, 2)  # two exchanges


# --- the six edits --------------------------------------------------------------------------


def test_deleting_a_leaf_is_named_at_its_parent(chain):
    merger = chain.step["merger"]
    ChainedGrant.objects.filter(pk=merger.pk).delete()  # its events go with it (CASCADE)
    assert any("removed" in p for p in named(chain.chain_id, chain.step["researcher"]))
    assert any("counts 5 steps, the database has 4" in p for p in chain_level(chain.chain_id))


def test_deleting_a_whole_subtree_is_caught(chain):
    planner = chain.step["planner"]
    for step in ChainedGrant.objects.subtree_of(planner).order_by("-depth"):
        ChainedGrant.objects.filter(pk=step.pk).delete()
    assert any("removed" in p for p in named(chain.chain_id, chain.root))
    assert any("the database has 1" in p for p in chain_level(chain.chain_id))


def test_widening_a_scope_and_rehashing_is_named_at_the_step(chain):
    researcher = chain.step["researcher"]
    ChainedGrant.objects.filter(pk=researcher.pk).update(scope="openid read write admin")
    rehash_from(ChainedGrant.objects.get(pk=researcher.pk))
    assert any("signed record" in p for p in named(chain.chain_id, researcher))


def test_a_forged_step_with_a_correct_hash_is_named(chain):
    security = ChainedGrant.objects.get(pk=chain.step["security"].pk)
    forged = ChainedGrant(
        kind="agent",
        code_digest="f" * 64,
        expires=security.expires,
        application=security.application,
        user=security.user,
        agent=security.agent,
        subject="security",
        scope="read",
    )
    forged.id = uuid.uuid4()
    forged.parent, forged.root_id, forged.depth = security, security.root_id, security.depth + 1
    forged.path = security.path + forged.id.hex + "/"
    forged.link_hash = integrity.compute_link_hash(forged, security.link_hash)
    forged.save(force_insert=True)
    assert any("signed record" in p for p in named(chain.chain_id, forged))
    assert any("counts 5 steps, the database has 6" in p for p in chain_level(chain.chain_id))


def test_a_record_signed_with_another_key_is_named(chain):
    """Re-signing a rehashed step needs the record key: any other key is not one of it."""
    security = chain.step["security"]
    other = jwk.JWK.generate(kty="OKP", crv="Ed25519", kid=record.signing_key().get("kid"))
    payload = {"chain": str(security.root_id), "step": str(security.pk), "lh": security.link_hash}
    token = jws.JWS(json.dumps(payload).encode())
    header = {"alg": "EdDSA", "kid": other.get("kid"), "typ": record.STEP_TYP}
    token.add_signature(other, alg="EdDSA", protected=json.dumps(header))
    ChainedGrant.objects.filter(pk=security.pk).update(record_jws=token.serialize(compact=True))
    assert any("signed record" in p for p in named(chain.chain_id, security))


@pytest.mark.parametrize("column", ["exchanged", "revoked"])
def test_clearing_a_state_is_named(chain, column):
    if column == "exchanged":
        victim = chain.step["security"]
        ChainedGrant.objects.filter(pk=victim.pk).update(exchanged_at=None, access_token=None, ended_at=None)
    else:
        victim = chain.step["researcher"]
        lifecycle.revoke_subtree(victim, "audit")
        assert integrity.verify_chain(chain.chain_id).ok
        ChainedGrant.objects.filter(pk=victim.pk).update(revoked_at=None, revoked_reason="")
    assert any(f"{column} state was cleared" in p for p in named(chain.chain_id, victim))


def test_marking_a_state_without_its_event_is_named(chain):
    researcher = chain.step["researcher"]
    ChainedGrant.objects.filter(pk=researcher.pk).update(revoked_at=researcher.created, revoked_reason="made up")
    assert any("no signed event" in p for p in named(chain.chain_id, researcher))


def test_pointing_a_step_at_another_token_is_named_and_that_token_introspects_inactive(chain, flow, alice):
    code, verifier = flow.authorize(alice, scope="openid read")
    plain = flow.exchange(code, verifier).json()["access_token"]
    assert flow.introspect(plain)["active"] is True
    plain_token = get_access_token_model().objects.get(token_checksum=sha256_hex(plain))
    security = chain.step["security"]
    ChainedGrant.objects.filter(pk=security.pk).update(access_token=plain_token)
    assert any("access-token link" in p for p in named(chain.chain_id, security))
    assert flow.introspect(plain) == {"active": False}  # never a forged act chain
    # The untouched tokens of the chain still introspect with their act.
    assert flow.introspect(chain.tokens["merger"]["access_token"])["act"]["sub"] == "merger"


@pytest.mark.parametrize(
    "edit",
    [
        {"scope": "openid read write admin"},
        {"redirect_uri": "http://127.0.0.1:8765/evil"},
        {"code_challenge": "A" * 43},
    ],
    ids=["scope", "redirect_uri", "code_challenge"],
)
def test_an_edited_dot_grant_is_refused_at_exchange(chain, flow, make_agent, edit):
    writer = make_agent("writer", scopes="read")
    code, verifier, _ = flow.advance(chain.researcher[0], writer)
    step = lifecycle.find_step(code)
    get_grant_model().objects.filter(pk=step.grant_id).update(**edit)
    tokens_before = get_access_token_model().objects.count()
    response = flow.exchange(
        code, verifier, redirect_uri=edit.get("redirect_uri", "http://127.0.0.1:8765/oauth-callback")
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert get_access_token_model().objects.count() == tokens_before
    assert lifecycle.find_step(code).exchanged_at is None


# --- events and the head ------------------------------------------------------------------


def test_deleting_an_event_is_caught(chain):
    StepEvent.objects.filter(root_id=chain.chain_id, seq=1).delete()
    assert any("event 1" in p for p in problems_text(chain.chain_id))
    assert any("counts 2 events" in p for p in chain_level(chain.chain_id))


def test_editing_an_event_is_named(chain):
    event = StepEvent.objects.get(root_id=chain.chain_id, seq=2)
    StepEvent.objects.filter(pk=event.pk).update(data={**event.data, "access_token_id": 999})
    assert any("event 2" in p for p in named(chain.chain_id, ChainedGrant.objects.get(pk=event.step_id)))


def problems_text(chain_id) -> list[str]:
    return [p["problem"] for p in problems(chain_id)]


def test_a_rollback_is_caught_against_an_earlier_export(chain, flow, make_agent):
    before = evidence.chain_data(evidence.chain_view(chain.chain_id))
    head_then = ChainHead.objects.filter(root_id=chain.chain_id).values().get()
    writer_code, _, _ = flow.advance(chain.researcher[0], make_agent("writer", scopes="read"))
    exported = evidence.chain_data(evidence.chain_view(chain.chain_id))  # the auditor's copy
    # The database (steps and head together) goes back to before the writer's hop.
    writer = lifecycle.find_step(writer_code)
    ChainedGrant.objects.filter(pk=writer.pk).delete()
    ChainedGrant.objects.filter(pk=writer.parent_id).update(children_count=F("children_count") - 1)
    ChainHead.objects.filter(root_id=chain.chain_id).update(**{k: v for k, v in head_then.items() if k != "root_id"})
    assert integrity.verify_chain(chain.chain_id).ok  # consistent in itself: only an export catches it
    steps = list(ChainedGrant.objects.chain(chain.chain_id))
    head = ChainHead.objects.get(root_id=chain.chain_id)
    found = integrity.compare_with_export(exported, steps, head)
    assert {"step": str(writer.pk), "problem": "removed since the export"} in found
    assert any("rollback" in p["problem"] for p in found)
    assert integrity.compare_with_export(before, steps, head) == []


def test_compare_with_export_names_changed_and_added_steps(chain, flow, make_agent):
    exported = evidence.chain_data(evidence.chain_view(chain.chain_id))
    writer_code, _, _ = flow.advance(chain.researcher[0], make_agent("writer", scopes="read"))
    security = chain.step["security"]
    ChainedGrant.objects.filter(pk=security.pk).update(link_hash="0" * 64)
    steps = list(ChainedGrant.objects.chain(chain.chain_id))
    found = integrity.compare_with_export(exported, steps, ChainHead.objects.get(root_id=chain.chain_id))
    assert {"step": str(security.pk), "problem": "its link_hash changed since the export"} in found
    assert {"step": str(lifecycle.find_step(writer_code).pk), "problem": "added since the export"} in found


def test_the_verify_command_names_a_tampered_step_and_an_export_difference(chain, tmp_path, capsys):
    exported = tmp_path / "evidence.json"
    exported.write_text(json.dumps(evidence.chain_data(evidence.chain_view(chain.chain_id)), default=str))
    researcher = chain.step["researcher"]
    ChainedGrant.objects.filter(pk=researcher.pk).update(scope="openid read write admin")
    with pytest.raises(SystemExit) as exit_info:
        call_command("chain_grant_verify", chain.chain_id, "--against", str(exported))
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert str(researcher.pk) in out and "edited" in out


# --- the key --------------------------------------------------------------------------------


def test_a_configured_record_key_signs_and_a_retired_one_still_verifies(chain, chain_settings, flow, make_agent):
    retired = record.public_jwks()["keys"][0]
    new_key = jwk.JWK.generate(kty="EC", crv="P-256")
    pem = new_key.export_to_pem(private_key=True, password=None).decode()
    chain_settings(RECORD_SIGNING_KEY=pem)
    assert not integrity.verify_chain(chain.chain_id).ok  # the old key is unknown now
    chain_settings(RECORD_SIGNING_KEY=pem, RECORD_VERIFY_KEYS=[retired])
    assert integrity.verify_chain(chain.chain_id).ok
    code, _, _ = flow.advance(chain.researcher[0], make_agent("writer", scopes="read"))
    header = json.loads(jws.base64url_decode(lifecycle.find_step(code).record_jws.split(".")[0]))
    assert (header["alg"], header["kid"]) == ("ES256", new_key.thumbprint())
    assert integrity.verify_chain(chain.chain_id).ok


@pytest.mark.parametrize(
    "name, value",
    [
        ("RECORD_SIGNING_KEY", "not a pem"),
        ("RECORD_VERIFY_KEYS", [{"kty": "oct", "k": "c2VjcmV0"}]),
        ("RECORD_VERIFY_KEYS", "nope"),
        ("MAX_JOINS", 0),
    ],
)
def test_record_settings_are_checked(chain_settings, name, value):
    from chain_grant.checks import check_settings

    chain_settings(**{name: value})
    ids = {error.id for error in check_settings()}
    assert {
        "RECORD_SIGNING_KEY": "chain_grant.E123",
        "RECORD_VERIFY_KEYS": "chain_grant.E124",
        "MAX_JOINS": "chain_grant.E125",
    }[name] in ids


def test_an_edited_children_count_is_named(chain):
    researcher = chain.step["researcher"]
    ChainedGrant.objects.filter(pk=researcher.pk).update(children_count=3)  # would block its hops
    assert any("children count says 3" in p for p in named(chain.chain_id, researcher))


def test_revoking_a_step_whose_token_family_was_edited_still_revokes_its_tokens(chain, flow):
    merger = chain.step["merger"]
    ChainedGrant.objects.filter(pk=merger.pk).update(token_family=uuid.uuid4())
    assert lifecycle.revoke_subtree(ChainedGrant.objects.get(pk=merger.pk), "audit") == 1
    assert flow.introspect(chain.tokens["merger"]["access_token"])["active"] is False
    refreshed = flow.refresh(chain.tokens["merger"]["refresh_token"])
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
