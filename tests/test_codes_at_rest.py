"""No usable code at rest: DOT's Grant table, like chain_grant's own, keeps only
SHA-256 digests of codes (chain_grant.oauth.digest_codes); every code still
exchanges, and codes stored in clear before the upgrade are hashed by migration."""

import importlib
import re

from django.apps import apps as django_apps
from oauth2_provider.models import get_grant_model

from chain_grant.core.codes import code_digest
from chain_grant.models import ChainedGrant

Grant = get_grant_model()
DIGEST = re.compile(r"[0-9a-f]{64}")


def test_dot_and_chain_codes_are_stored_as_digests(flow, alice, planner, make_agent):
    root, root_verifier = flow.authorize(alice, scope="openid read")  # DOT's own authorize
    code, verifier, _ = flow.advance(root, planner)  # a hop
    plain, plain_verifier = flow.authorize(alice, scope="openid")  # a code never chained
    stored = set(Grant.objects.values_list("code", flat=True))
    assert stored == {code_digest(root), code_digest(code), code_digest(plain)}
    assert all(DIGEST.fullmatch(value) for value in stored)
    assert not stored & {root, code, plain}
    assert ChainedGrant.objects.filter(code_digest=code_digest(code)).exists()
    # every kind of code still exchanges, with its PKCE verifier
    assert flow.exchange(code, verifier).status_code == 200
    assert flow.exchange(plain, plain_verifier).status_code == 200
    assert not Grant.objects.filter(code=code_digest(plain)).exists()


def test_the_migration_hashes_codes_stored_in_clear(flow, alice, planner):
    code, verifier = flow.authorize(alice, scope="openid read")
    Grant.objects.filter(code=code_digest(code)).update(code=code)  # as before the upgrade
    migration = importlib.import_module("chain_grant.migrations.0006_dot_codes_as_digests")
    migration.hash_codes(django_apps, None)
    migration.hash_codes(django_apps, None)  # idempotent
    assert list(Grant.objects.values_list("code", flat=True)) == [code_digest(code)]
    assert flow.exchange(code, verifier).status_code == 200


def test_a_replayed_plain_code_is_undetectable_by_default(flow, alice):
    code, verifier = flow.authorize(alice, scope="openid")
    token = flow.exchange(code, verifier).json()["access_token"]
    assert flow.exchange(code, verifier).json()["error"] == "invalid_grant"
    assert flow.introspect(token)["active"] is True  # DOT deleted the row: nothing to go on
    assert not ChainedGrant.objects.exists()


def test_tracked_plain_codes_revoke_on_replay(flow, alice, settings):
    settings.CHAIN_GRANT = {**settings.CHAIN_GRANT, "TRACK_PLAIN_CODES": True}
    code, verifier = flow.authorize(alice, scope="openid")
    token = flow.exchange(code, verifier).json()["access_token"]
    step = ChainedGrant.objects.get(code_digest=code_digest(code))
    assert step.depth == 0 and step.state == "exchanged" and step.access_token_id
    replay = flow.exchange(code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert flow.introspect(token)["active"] is False
    step.refresh_from_db()
    assert step.revoked_reason == "authorization code replay"
