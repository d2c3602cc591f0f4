"""A whole chain with every logger at DEBUG, through the IdP's real LOGGING (plain, plain with
IDP_PRODUCTION, JSON): every line every configured handler printed is grepped for every
credential the test saw -- codes, access/refresh/ID tokens, proofs, PKCE verifiers, the
client secret and its Basic header, the password, the session. Zero hits.

The chain: login, authorize → agent hop → consent step (a user step) → agent hop → exchange →
introspection → refresh → revocation, a replayed code, a failed proof, and a 500 (a broken
step_created receiver whose exception message carries the request). oauthlib's debug mode
is on (its request reprs then print the URL, headers and body).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, urlencode, urlparse

import pytest
from django.core.servers.basehttp import WSGIRequestHandler
from django.test import Client

from chain_grant import signals
from chain_grant.client import pkce_pair
from idp_project import settings as idp
from tests.helpers import REDIRECT_URI, SECRET, Flow, basic_auth

from .log_capture import capture, isolated_logging

pytestmark = pytest.mark.django_db

DEBUG_LOGGERS = ("root", "oauthlib", "oauth2_provider", "django", "django.request", "django.server", "chain_grant")
PASSWORD = "alice-pw"  # conftest's alice


class ServedClient(Client):
    """Django's test client that also logs each request the way runserver does (django.server)."""

    def request(self, **request):
        response = super().request(**request)
        wsgi = response.wsgi_request
        handler = WSGIRequestHandler.__new__(WSGIRequestHandler)
        handler.request, handler.requestline = None, f"{wsgi.method} {wsgi.get_full_path()} HTTP/1.1"
        handler.log_request(response.status_code, len(response.content))
        return response


@dataclass
class Seen:
    """Every credential the test handled, by label."""

    values: dict = field(default_factory=dict)

    def add(self, label, value):
        assert value, label
        self.values[f"{label} #{len(self.values)}"] = value
        return value

    def forms(self):
        for label, value in self.values.items():
            yield label, value
            if quote(value, safe="") != value:
                yield label + " (percent-encoded)", quote(value, safe="")


def drive_the_chain(flow: Flow, alice, make_agent, seen: Seen) -> None:
    planner = make_agent("planner")
    writer = make_agent("writer", scopes="openid read")
    seen.add("client secret", SECRET)
    seen.add("Basic credentials", basic_auth(flow.app.client_id, SECRET).split()[1])
    seen.add("password", PASSWORD)

    # a real login (the password in a form), then DOT's authorize page and consent
    login = flow.client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert login.status_code == 302, login.content[:300]
    seen.add("session", flow.client.cookies["sessionid"].value)
    root_code, root_verifier = flow.authorize(alice, scope="openid read write")
    seen.add("root code", root_code)
    seen.add("root verifier", root_verifier)

    # an agent hop
    proof = seen.add("planner proof", planner.proof(root_code, aud=flow.issuer))
    hop = flow.hop(root_code, proof)
    assert hop.status_code == 200, hop.content
    planner_code = seen.add("planner code", hop.json()["authorization_code"])
    seen.add("planner verifier", hop.verifier)

    # the consent step: alice approves a user step after the planner's
    verifier, challenge = pkce_pair()
    seen.add("user step verifier", verifier)
    params = {
        "client_id": flow.app.client_id,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": "openid read",
        "state": "st-user",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    url = "/oauth/authorize/?" + urlencode({**params, "code": planner_code})
    flow.client.force_login(alice)
    seen.add("session", flow.client.cookies["sessionid"].value)
    assert flow.client.get(url).status_code == 200
    consented = flow.client.post(url, {**params, "allow": "Authorize"})
    assert consented.status_code == 302, consented.content[:300]
    user_code = seen.add("user step code", parse_qs(urlparse(consented["Location"]).query)["code"][0])
    csrf = flow.client.cookies.get("csrftoken")
    if csrf:
        seen.add("CSRF cookie", csrf.value)
    flow.client.logout()

    # an agent hop after the user step
    proof = seen.add("writer proof", writer.proof(user_code, aud=flow.issuer))
    hop = flow.hop(user_code, proof)
    assert hop.status_code == 200, hop.content
    writer_code = seen.add("writer code", hop.json()["authorization_code"])
    writer_verifier = seen.add("writer verifier", hop.verifier)

    # a proof that fails (signed over another code)
    bad = seen.add("mismatched proof", writer.proof(root_code, aud=flow.issuer))
    assert flow.hop(writer_code, bad).status_code == 400

    # exchange, introspection, refresh, revocation
    exchanged = flow.exchange(writer_code, writer_verifier)
    assert exchanged.status_code == 200, exchanged.content
    tokens = exchanged.json()
    access = seen.add("access token", tokens["access_token"])
    refresh = seen.add("refresh token", tokens["refresh_token"])
    seen.add("ID token", tokens["id_token"])
    assert flow.introspect(access)["active"] is True
    refreshed = flow.client.post(
        "/oauth/token", {"grant_type": "refresh_token", "refresh_token": refresh}, **flow.auth()
    ).json()
    seen.add("refreshed access token", refreshed["access_token"])
    seen.add("refreshed refresh token", refreshed["refresh_token"])
    if "id_token" in refreshed:
        seen.add("refreshed ID token", refreshed["id_token"])
    stale = flow.client.post("/oauth/token", {"grant_type": "refresh_token", "refresh_token": refresh}, **flow.auth())
    assert stale.status_code == 400  # the rotated refresh token, again
    for token, hint in ((refreshed["access_token"], "access_token"), (refreshed["refresh_token"], "refresh_token")):
        revoked = flow.client.post("/oauth/revoke_token/", {"token": token, "token_type_hint": hint}, **flow.auth())
        assert revoked.status_code == 200
    assert flow.introspect(refreshed["access_token"])["active"] is False

    # a replay: the writer's code, again
    replay = flow.exchange(writer_code, writer_verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"

    # a 500: a broken receiver, with the request's credentials in its exception message
    proof = seen.add("crashing hop proof", planner.proof(planner_code, aud=flow.issuer))
    verifier, challenge = pkce_pair()
    seen.add("crashing hop verifier", verifier)
    data = {
        "grant_type": "code_chain",
        "authorization_code": planner_code,
        "id_token": proof,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }

    def broken_receiver(sender, step, **kwargs):
        try:
            raise KeyError(f"/oauth/token?authorization_code={planner_code}&id_token={proof}")
        except KeyError as exc:
            raise RuntimeError(f"receiver failed on {data!r} ({flow.auth()!r})") from exc

    signals.step_created.connect(broken_receiver, weak=False)
    try:
        crash = ServedClient(raise_request_exception=False).post("/oauth/token", data, **flow.auth())
    finally:
        signals.step_created.disconnect(broken_receiver)
    assert crash.status_code == 500


@pytest.mark.parametrize(
    ("log_format", "production"),
    [("", False), ("", True), ("json", False)],
    ids=["plain", "plain-production", "json"],
)
def test_a_whole_chain_at_debug_logs_no_credential(log_format, production, app, alice, make_agent, monkeypatch):
    import oauthlib

    monkeypatch.setattr(oauthlib, "_DEBUG", True)  # oauthlib.set_debug(True): full request reprs
    seen = Seen()
    with isolated_logging():
        streams = capture(idp.logging_config(log_format, production))
        for name in DEBUG_LOGGERS:
            logging.getLogger(None if name == "root" else name).setLevel(logging.DEBUG)
        drive_the_chain(Flow(ServedClient(), app), alice, make_agent, seen)
        for handler in logging._handlers.values():
            handler.flush()
    lines = [line for stream in streams.values() for line in stream.getvalue().splitlines()]
    text = "\n".join(lines)
    hits = [(label, line) for line in lines for label, value in seen.forms() if value in line]
    print(
        f"\n[{log_format or 'plain'}{', production' if production else ''}] handlers {sorted(streams)}: "
        f"{len(lines)} lines captured, {len(seen.values)} credentials checked "
        f"({sum(1 for _ in seen.forms())} forms), {len(hits)} hits, {text.count('[REDACTED]')} [REDACTED]"
    )
    assert hits == []

    # ...and the logs are the real ones: oauthlib's and DOT's debug lines, runserver's request
    # lines, the 500 with its (redacted) traceback, the chained exception included
    assert len(lines) > 60
    assert "Created authorization code grant {'code': '[REDACTED]'" in text
    assert "Validating refresh token [REDACTED] for client" in text
    assert "'HTTP_AUTHORIZATION': 'Basic [REDACTED]'" in text
    assert "/oauth/authorize/?client_id=chain-client" in text and "&code=[REDACTED]" in text
    assert "Internal Server Error: /oauth/token" in text
    assert "Traceback (most recent call last)" in text and "RuntimeError: receiver failed on {" in text
    assert "'authorization_code': '[REDACTED]', 'id_token': '[REDACTED]'" in text
    assert "KeyError: '/oauth/token?authorization_code=[REDACTED]&id_token=[REDACTED]'" in text
    assert "'code_challenge': '" in text and "[REDACTED]" not in text.split("'code_challenge': '")[1][:10]
