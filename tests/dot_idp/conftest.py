"""Corp's test fixtures: its people and its clients, as a typical DOT IdP has them, and
``observe``, which records what an endpoint answered (made comparable: codes, tokens,
times and CSRF values replaced by placeholders; ID tokens verified and decoded) into
the JSON file named by ``CORP_OBSERVATIONS``. tests/test_dot_idp.py runs these checks
once without chain_grant (``before``) and once with it (``after``) and compares the two.

Only under ``--ds=tests.dot_idp.<before|after>.settings`` with ``--confcutdir`` here:
tests/conftest.py imports chain_grant, which ``before`` does not install.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.conf import settings
from jwcrypto import jwk, jwt

SECRET = "corp-client-secret"
REDIRECTS = {
    "webapp": "https://webapp.corp.example/callback",
    "portal": "https://portal.corp.example/callback",
    "spa": "https://spa.corp.example/callback",
}
VOLATILE = {
    "code",
    "access_token",
    "refresh_token",
    "iat",
    "exp",
    "auth_time",
    "jti",
    "at_hash",
    "c_hash",
    "expires_in",
    "device_code",
    "user_code",
    "verification_uri_complete",
    "csrfmiddlewaretoken",
    "iss",
}
OBSERVED: dict[str, object] = {}


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("CORP_OBSERVATIONS")
    if path:
        with open(path, "w") as out:
            json.dump(OBSERVED, out, indent=1, sort_keys=True)


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user(
        "alice", "alice@corp.example", "pw", first_name="Alice", last_name="Liddell"
    )


@pytest.fixture
def clients(db):
    """webapp (confidential, code, consent skipped), portal (code, asks consent), spa
    (public, OIDC implicit), backend (client credentials), old-tool (suspended)."""
    from oauth2_provider.models import get_application_model

    Application = get_application_model()
    made = {}
    for client_id, kind, grant, skip, name in [
        ("webapp", "confidential", "authorization-code", True, "Web app"),
        ("portal", "confidential", "authorization-code", False, "Portal"),
        ("spa", "public", "implicit", True, "Single-page app"),
        ("backend", "confidential", "client-credentials", True, "Backend"),
        ("old-tool", "confidential", "client-credentials", True, "Old tool (suspended)"),
    ]:
        made[client_id] = Application.objects.create(
            client_id=client_id,
            client_secret=SECRET,
            name=name,
            client_type=kind,
            authorization_grant_type=grant,
            redirect_uris=REDIRECTS.get(client_id, ""),
            skip_authorization=skip,
            algorithm="RS256",
        )
    return made


def jwks(client) -> jwk.JWKSet:
    return jwk.JWKSet.from_json(client.get("/o/.well-known/jwks.json").content)


def id_token_claims(client, token: str) -> dict:
    return json.loads(jwt.JWT(jwt=token, key=jwks(client), expected_type="JWS").claims)


def comparable(value, client=None, sub=None):
    """``value`` with what differs from run to run replaced by placeholders."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "id_token" and client is not None and isinstance(item, str):
                out[key] = comparable(id_token_claims(client, item), client, sub)
            elif key in VOLATILE and item not in (None, ""):
                out[key] = f"<{key}>"
            else:
                out[key] = comparable(item, client, sub)
        return out
    if isinstance(value, list):
        return [comparable(item, client, sub) for item in value]
    if isinstance(value, str) and sub is not None and value == sub:
        return "<sub>"
    return value


def _location(location: str, client, sub):
    parts = urlsplit(location)
    return {
        "path": f"{parts.scheme}://{parts.netloc}{parts.path}",
        "query": comparable(dict(parse_qsl(parts.query)), client, sub),
        "fragment": comparable(dict(parse_qsl(parts.fragment)), client, sub),
    }


def _page(content: bytes) -> str:
    text = content.decode()
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', 'name="csrfmiddlewaretoken" value="<csrf>"', text)


@pytest.fixture
def observe(client, request):
    """observe(name, response, user=None): record status, content type, Location and body."""

    def record(name, response, user=None):
        sub = str(user.pk) if user is not None else None
        seen = {"status": response.status_code, "content_type": response.get("Content-Type")}
        if response.has_header("Location"):
            seen["location"] = _location(response["Location"], client, sub)
        if response.get("Content-Type", "").startswith("application/json"):
            seen["json"] = comparable(json.loads(response.content), client, sub)
        elif response.get("Content-Type", "").startswith("text/html"):
            seen["html"] = _page(response.content)
        key = f"{request.node.name}:{name}"
        assert key not in OBSERVED, key
        OBSERVED[key] = seen
        return response

    return record


@pytest.fixture(autouse=True)
def _corp_settings_only():
    if not settings.ROOT_URLCONF.startswith("tests.dot_idp."):
        pytest.skip("run with --ds=tests.dot_idp.before.settings or .after.settings (tests/test_dot_idp.py does)")
