"""The record is the truth: each step stores who its actor was when it acted
(``ChainedGrant.actor``), link_hash (version 2) covers it, and every reader (the tree,
the consent page's history, the API, evidence, introspection's ``act``) shows the
stored values, never the live Agent or user row. Renaming an agent afterwards, in the
admin or straight in the database, changes nothing in any chain's record."""

from __future__ import annotations

import importlib
import json

import pytest
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from chain_grant.core import integrity, lineage
from chain_grant.models import Agent, ChainedGrant, ChainHead, StepEvent
from chain_grant.review import evidence
from tests.helpers import build_real_chain

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(flow, alice, make_agent):
    return build_real_chain(flow, alice, make_agent)


@pytest.fixture
def staff(db):
    user = get_user_model().objects.create_superuser("auditor", "auditor@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def everything_shown(chain, flow, staff) -> dict:
    """What an auditor, a person and a resource server are shown about the chain."""
    view = evidence.chain_view(chain.chain_id)
    merger = chain.step["merger"]
    return {
        "labels": [lineage.actor_label(step) for step in ChainedGrant.objects.chain(chain.chain_id)],
        "history": [row["actor"] for row in lineage.step_rows(lineage.ancestors(merger, with_actors=True))],
        "evidence": evidence.chain_data(view),
        "api": staff.get(f"/api/chains/{chain.chain_id}/").json(),
        "page": staff.get(reverse("admin:chain_grant_chain_tree", args=[chain.chain_id])).content.decode(),
        "act": flow.introspect(chain.tokens["merger"]["access_token"])["act"],
    }


def test_each_step_records_its_actor(chain, alice):
    security = chain.step["security"]
    agent = chain.agents["security"].model
    assert security.actor == {
        "identifier": "security",
        "name": agent.name,
        "key_thumbprint": agent.keys.get().kid,
    }
    assert security.hash_version == integrity.LINK_HASH_VERSION == 5
    root = chain.root
    assert root.actor["username"] == "alice" and root.actor["sub"] == str(alice.pk)
    assert root.actor["scopes"] == {"new": ["openid", "read", "write"], "kept": [], "dropped": []}


def test_renaming_an_agent_in_the_database_changes_nothing_in_the_record(chain, flow, staff):
    before = everything_shown(chain, flow, staff)
    assert "security" in before["labels"] and "mallory" not in json.dumps(before["evidence"])
    # security -> mallory, identifier and name, written straight to the table (no signal)
    Agent.objects.filter(identifier="security").update(identifier="mallory", name="Mallory")
    Agent.objects.filter(identifier="merger").update(identifier="eve", name="Eve")
    after = everything_shown(chain, flow, staff)
    assert after["labels"] == before["labels"] and after["history"] == before["history"]
    assert after["evidence"] == before["evidence"] and after["evidence"]["verification"]["ok"] is True
    assert after["api"]["steps"] == before["api"]["steps"] and after["act"] == before["act"]
    assert "mallory" not in after["page"].lower() and "Eve" not in after["page"]
    assert "security" in after["page"] and "merger" in after["page"] and integrity.verify_chain(chain.chain_id).ok


def test_an_agents_identifier_is_fixed_once_it_has_acted(chain, make_agent, staff):
    security = chain.agents["security"].model
    security.identifier = "mallory"
    with pytest.raises(ValueError, match="cannot change"):
        security.save()
    assert Agent.objects.filter(identifier="security").exists()
    # the admin shows it read-only; the display name may change, the record keeps the old one
    page = staff.get(f"/admin/chain_grant/agent/{security.pk}/change/").content.decode()
    assert 'name="identifier"' not in page and 'name="name"' in page
    security.refresh_from_db()
    old_name = chain.step["security"].actor["name"]
    security.name = "Security reviewer (renamed)"
    security.save()
    assert ChainedGrant.objects.get(pk=chain.step["security"].pk).actor["name"] == old_name
    # an agent that never acted may still be renamed
    idle = make_agent("idle").model
    idle.identifier = "idle-2"
    idle.save()
    assert Agent.objects.filter(identifier="idle-2").exists()


@pytest.mark.parametrize(
    "edit",
    [
        {"identifier": "mallory"},
        {"name": "Mallory"},
        {"key_thumbprint": "x" * 43},
    ],
)
def test_editing_the_recorded_actor_is_caught(chain, edit):
    step = chain.step["security"]
    ChainedGrant.objects.filter(pk=step.pk).update(actor={**step.actor, **edit})
    result = integrity.verify_chain(chain.chain_id)
    assert not result.ok and result.first_bad_step == step.pk


def test_editing_the_key_thumbprint_or_downgrading_the_version_is_caught(chain):
    step = chain.step["planner"]
    ChainedGrant.objects.filter(pk=step.pk).update(agent_key_thumbprint="y" * 43)
    assert integrity.verify_chain(chain.chain_id).first_bad_step == step.pk
    ChainedGrant.objects.filter(pk=step.pk).update(agent_key_thumbprint=step.agent_key_thumbprint, hash_version=1)
    assert integrity.verify_chain(chain.chain_id).first_bad_step == step.pk
    ChainedGrant.objects.filter(pk=step.pk).update(hash_version=7)
    assert integrity.verify_chain(chain.chain_id).first_bad_step == step.pk


def test_steps_hashed_before_version_2_still_verify_and_get_their_actor(chain):
    """Steps written before migration 0009: link_hash version 1, no recorded actor. The
    migration fills ``actor`` from what the step recorded; their hashes still verify."""
    steps = list(ChainedGrant.objects.chain(chain.chain_id).order_by("depth", "created"))
    hashes = {}
    for step in steps:  # rewrite the chain as version 1 would have hashed it
        step.hash_version, step.actor = 1, {}
        step.link_hash = integrity.compute_link_hash(step, hashes.get(step.parent_id, ""))
        hashes[step.pk] = step.link_hash
        ChainedGrant.objects.filter(pk=step.pk).update(hash_version=1, actor={}, link_hash=step.link_hash)
    StepEvent.objects.filter(root_id=chain.chain_id).delete()  # and, as before migration 0010,
    ChainHead.objects.filter(root_id=chain.chain_id).delete()  # no signed events or head
    assert integrity.verify_chain(chain.chain_id).ok
    migration = importlib.import_module("chain_grant.migrations.0009_step_recorded_actor")
    migration.fill_actors(django_apps, None)
    security = ChainedGrant.objects.get(pk=chain.step["security"].pk)
    assert security.actor["identifier"] == "security" and security.actor["key_thumbprint"]
    assert ChainedGrant.objects.get(pk=chain.root.pk).actor["username"] == "alice"
    assert integrity.verify_chain(chain.chain_id).ok  # version 1 does not cover the filled actor


def test_a_wallet_step_records_its_did(wflow, wallet):
    pending = wflow.start()
    redirect = wallet.respond(pending.url, post=wflow.post)
    wflow.client.get(redirect)
    step = ChainedGrant.objects.get(kind=ChainedGrant.Kind.WALLET)
    assert step.actor == {"did": step.subject} and step.subject.startswith("did:jwk:")
    assert integrity.verify_chain(step.root_id).ok
