"""Helpers the test modules share (fixtures built on them live in tests/conftest.py).

- constants of the test IdP (issuer, the client's redirect URI and secret);
- ``Flow``: drives the real endpoints (authorize, token, introspect) as a client would,
  and ``TestAgent``: a registered agent with its private key;
- OAuth error assertions (``error_of``, ``assert_error``);
- JOSE: base64url (chain_grant.client.jose's), proof claims and signed JWSs with any
  header or claims (``proof_claims``, ``sign_jws``, ``poc_proof``);
- the browser steps: the consent step's URL and form, the wallet step's ``WalletFlow``,
  and the client's landing for each;
- chains: a real chain with every secret the client saw, the offline evidence check,
  "nothing live below this step";
- odds and ends: a free port, a crash report's text, screenshots.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

from django.urls import reverse
from django.utils import timezone
from django.views.debug import ExceptionReporter
from jwcrypto import jwk, jws
from oauth2_provider.models import get_access_token_model, get_grant_model, set_token_value

from chain_grant.client import pkce_pair, sign_proof
from chain_grant.client.jose import b64url, b64url_decode, code_hash, did_jwk  # noqa: F401 (b64url_decode: for tests)
from chain_grant.client.wallet import parse_request_url, request_url_from_html
from chain_grant.core import lifecycle
from chain_grant.models import ChainedGrant, WalletRequest

ISSUER = "http://testserver/oauth"
REDIRECT_URI = "http://127.0.0.1:8765/oauth-callback"
SECRET = "s3cret-for-tests"
RESPONSE_URI = "http://testserver/oauth/wallet/response/"  # the wallet step's direct_post endpoint
FORM = "application/x-www-form-urlencoded"


# --- credentials ----------------------------------------------------------------------------


def basic_auth(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def bearer(raw: str) -> dict:
    """Test-client keyword arguments sending ``raw`` as a bearer token."""
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def make_token(user, app, scope: str, expires_in: int = 3600) -> str:
    """An access token row that no chain step issued, as DOT would store it (hashed at
    rest when COMPLIANT_BCP_RFC9700_TOKEN_STORAGE is on: looked up by token_checksum)."""
    raw = secrets.token_urlsafe(30)
    AccessToken = get_access_token_model()
    token = AccessToken(user=user, application=app, scope=scope, expires=timezone.now() + timedelta(seconds=expires_in))
    set_token_value(token, raw)
    token.save()
    return raw


# --- OAuth errors ---------------------------------------------------------------------------


def error_of(response) -> tuple[int, str | None]:
    """(status, OAuth ``error``) of a JSON error response."""
    return response.status_code, response.json().get("error")


def assert_error(response, status: int | tuple[int, ...], error: str | set[str] | None = None, fragment=None) -> dict:
    """An OAuth error answered as JSON: the status (or one of them), the ``error`` (or
    one of a set) and, given, a fragment of its ``error_description``. Returns the body."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    if error is not None:
        errors = {error} if isinstance(error, str) else error
        assert body.get("error") in errors, body
    if fragment is not None:
        assert fragment in (body.get("error_description") or ""), body
    return body


# --- JOSE -----------------------------------------------------------------------------------


def b64(data) -> str:
    """base64url of bytes, of text (UTF-8), or of anything else as JSON."""
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes):
        data = json.dumps(data).encode()
    return b64url(data)


def proof_claims(agent, code: str, **overrides) -> dict:
    """The claims of a valid proof by ``agent`` (a TestAgent or an identifier) for the
    hand-off of ``code``; an override of None drops that claim."""
    now = int(time.time())
    claims = {
        "sub": agent if isinstance(agent, str) else agent.identifier,
        "aud": ISSUER,
        "iat": now,
        "exp": now + 60,
        "jti": f"jti-{uuid.uuid4().hex}",
        "c_hash": code_hash(code),
        **overrides,
    }
    return {k: v for k, v in claims.items() if v is not None}


def sign_jws(key: jwk.JWK, payload: dict | str, header: dict | str | None = None) -> str:
    """A compact JWS signed with ``key`` over ``payload`` (a dict as JSON, NaN and
    Infinity as the bare words a hostile signer would send, or JSON text exactly as
    given). ``header`` is merged over {"alg": "ES256", "kid": the key's kid} (a None
    value drops a member), or is the protected header's text exactly as given."""
    if not isinstance(header, str):
        merged = {"alg": "ES256", "kid": key.get("kid"), **(header or {})}
        header = json.dumps({k: v for k, v in merged.items() if v is not None})
    token = jws.JWS((payload if isinstance(payload, str) else json.dumps(payload)).encode())
    token.add_signature(key, alg=json.loads(header)["alg"], protected=header)
    return token.serialize(compact=True)


def signed(agent, payload: dict | str, header: dict | str | None = None, key: jwk.JWK | None = None) -> str:
    """``payload`` signed as ``agent`` (a TestAgent): with its key, or ``key``; see sign_jws."""
    return sign_jws(key or agent.key, payload, header)


def poc_proof(key: jwk.JWK, alg: str = "ES256", extra: dict | None = None) -> str:
    """What the PoC's agents send (relaxed mode): the public key in the ``jwk`` header,
    ``sub`` its did:jwk, no aud, jti or c_hash."""
    public = key.export_public(as_dict=True)
    now = int(time.time())
    claims = {"sub": did_jwk(public), "iat": now, "exp": now + 60, **(extra or {})}
    return sign_jws(key, claims, json.dumps({"alg": alg, "jwk": public}))


# --- driving the endpoints ------------------------------------------------------------------


@dataclass
class TestAgent:
    __test__ = False  # not a test class, whatever its name

    identifier: str
    key: jwk.JWK
    model: object

    def proof(self, code: str, **kwargs) -> str:
        kwargs.setdefault("aud", ISSUER)
        return sign_proof(self.key, sub=self.identifier, code=code, **kwargs)


def authorize_params(app, **extra) -> tuple[dict, str]:
    """Parameters of an authorization-code request with PKCE (an extra of None drops
    one), and the code's verifier."""
    verifier, challenge = pkce_pair()
    params = {
        "client_id": app.client_id,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": "openid read",
        "state": "st",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return {k: v for k, v in params.items() if v is not None}, verifier


@dataclass
class Flow:
    """Drives the IdP's endpoints with Django's test client."""

    client: object
    app: object
    secret: str = SECRET
    prefix: str = "/oauth"  # where the IdP mounts chain_grant.urls

    @property
    def issuer(self) -> str:
        return "http://testserver" + self.prefix

    def auth(self, app=None):
        app = app or self.app
        return {"HTTP_AUTHORIZATION": basic_auth(app.client_id, self.secret)}

    def authorize(self, user, scope="openid read write", app=None, **extra):
        """Log in, consent on DOT's authorize page, return (code, verifier). ``extra``:
        more authorize parameters (``resource``...)."""
        params, verifier = authorize_params(app or self.app, scope=scope, **extra)
        self.client.force_login(user)
        url = f"{self.prefix}/authorize/?" + urlencode(params, doseq=True)
        page = self.client.get(url)
        assert page.status_code == 200, page.content
        response = self.client.post(url, {**params, "allow": "Authorize"})
        assert response.status_code == 302, response.content
        self.client.logout()
        query = parse_qs(urlparse(response["Location"]).query)
        return query["code"][0], verifier

    def hop(self, code, proof, app=None, pkce=True, **extra):
        data = {"grant_type": "code_chain", "authorization_code": code, "id_token": proof, **extra}
        verifier = None
        if pkce and "code_challenge" not in extra:
            verifier, challenge = pkce_pair()
            data.update(code_challenge=challenge, code_challenge_method="S256")
        response = self.client.post(f"{self.prefix}/token/", data, **self.auth(app))
        response.verifier = verifier
        return response

    def advance(self, code, agent, **kwargs):
        response = self.hop(code, agent.proof(code, aud=self.issuer), **kwargs)
        assert response.status_code == 200, response.content
        body = response.json()
        return body["authorization_code"], response.verifier, body

    def exchange(self, code, verifier, app=None, redirect_uri=REDIRECT_URI):
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        return self.client.post(f"{self.prefix}/token/", data, **self.auth(app))

    def refresh(self, refresh_token, app=None):
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return self.client.post(f"{self.prefix}/token/", data, **self.auth(app))

    def introspect(self, token, app=None):
        return self.client.post(f"{self.prefix}/introspect/", {"token": token}, **self.auth(app)).json()

    def is_active(self, token_response) -> bool:
        """Whether the access token of a token response is still active."""
        return self.introspect(token_response.json()["access_token"])["active"]


def counts() -> tuple[int, int]:
    """(chain steps, DOT grants): what a refused browser step must leave unchanged."""
    return ChainedGrant.objects.count(), get_grant_model().objects.count()


# --- the consent (user) step -----------------------------------------------------------------


def consent_url(app, code, scope="email", **extra) -> tuple[str, str]:
    """The authorize URL of a user step (and the PKCE verifier of its new code)."""
    params, verifier = authorize_params(app, scope=scope, state="st-user", code=code, **extra)
    return "/oauth/authorize/?" + urlencode(params), verifier


def consent_form(url, allow=True) -> dict:
    """The consent form's fields (DOT's hidden fields carry the request), as posted back."""
    data = {k: v[0] for k, v in parse_qs(urlparse(url).query).items() if k != "code"}
    return {**data, "allow": "Authorize"} if allow else data


def user_step(flow, user, code, scope="openid email") -> tuple[str, str]:
    """``user`` consents on ``code`` (a user step): the new code and its PKCE verifier."""
    url, verifier = consent_url(flow.app, code, scope=scope)
    flow.client.force_login(user)
    query = consent_landing(flow.client.post(url, consent_form(url)))
    flow.client.logout()
    return query["code"], verifier


def chain_token(flow, user, agents, line, root_scope="openid email read", consent_scope="openid email") -> str:
    """``user``'s code (consent at authorize with ``root_scope``), then each of ``line``:
    ``"user"`` for the user's consent step, else the name of an agent in ``agents``
    making a hop; the last step's code exchanged: its access token."""
    code, verifier = flow.authorize(user, scope=root_scope)
    for who in line:
        if who == "user":
            code, verifier = user_step(flow, user, code, scope=consent_scope)
        else:
            code, verifier, _ = flow.advance(code, agents[who])
    response = flow.exchange(code, verifier)
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


def consent_landing(response, error=None) -> dict:
    """The client's redirect_uri query after a user step (asserting the redirect, and
    the RFC 9207 iss)."""
    assert response.status_code == 302, response.content[:500]
    location = response["Location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    query = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
    assert query.get("state") == "st-user", query
    assert query.get("iss") == ISSUER, query
    if error:
        assert query.get("error") == error, query
        assert error == "access_denied" or query.get("error_description"), query  # DOT's has none
        assert "code" not in query
    return query


# --- the wallet step ------------------------------------------------------------------------


@dataclass
class Pending:
    """A wallet request as the browser saw it."""

    page: object
    url: str  # the openid:// link
    request: dict  # its parameters
    poll: str
    row: WalletRequest

    @property
    def state(self) -> str:
        return self.request["state"]

    def path(self, name: str) -> str:
        return reverse(f"oauth2_provider:chain-wallet-{name}", args=[self.row.pk])

    def refresh(self) -> WalletRequest:
        self.row.refresh_from_db()
        return self.row


class WalletFlow:
    """A browser (Django test client) and a headless wallet posting through it."""

    def __init__(self, client, app, prefix="/oauth"):
        self.client, self.app, self.prefix = client, app, prefix
        self.verifier, self.challenge = pkce_pair()

    def params(self, **extra):
        params = {
            "client_id": self.app.client_id,
            "redirect_uri": REDIRECT_URI,
            "response_type": "id_token",
            "scope": "openid read write",
            "state": "client-state",
            "client_metadata": "{}",
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
        }
        params.update(extra)
        return {k: v for k, v in params.items() if v is not None}

    def open(self, **extra):
        return self.client.get(f"{self.prefix}/authorize/?" + urlencode(self.params(**extra), doseq=True))

    def request_url(self, **extra) -> str:
        page = self.open(**extra)
        assert page.status_code == 200, page.content
        return request_url_from_html(page.content.decode())

    def start(self, **extra) -> Pending:
        page = self.open(**extra)
        assert page.status_code == 200, page.content[:500]
        url = request_url_from_html(page.content.decode())
        request = parse_request_url(url)
        return Pending(page, url, request, self.poll_token(page), WalletRequest.objects.get(state=request["state"]))

    def post(self, url, data):
        response = self.client.post(url, data)
        return response.status_code, response.json()

    def direct_post(self, data: dict):
        return self.client.post(RESPONSE_URI, data)

    def status(self, pending: Pending, poll=None):
        return self.client.post(pending.path("status"), {"poll": pending.poll if poll is None else poll})

    def complete(self, pending: Pending, poll=None):
        return self.client.post(pending.path("complete"), {"poll": pending.poll if poll is None else poll})

    def cancel(self, pending: Pending):
        return self.client.post(pending.path("cancel"), {"poll": pending.poll})

    @staticmethod
    def poll_token(page) -> str:
        html = page.content.decode()
        start = html.index('name="poll" value="') + len('name="poll" value="')
        return html[start : html.index('"', start)]

    def exchange(self, code, verifier=None):
        return self.client.post(
            "/oauth/token/",
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier or self.verifier,
            },
            HTTP_AUTHORIZATION=basic_auth(self.app.client_id, SECRET),
        )


def wallet_landing(response, error=None) -> dict:
    """The client's redirect after a wallet step (state and RFC 9207 iss asserted); its query."""
    assert response.status_code == 302, response.content[:500]
    location = response["Location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    query = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
    assert query.get("state") == "client-state" and query.get("iss") == ISSUER, query
    if error:
        assert query.get("error") == error and query.get("error_description"), query
        assert "code" not in query
    else:
        assert "error" not in query and query.get("code"), query
    return query


# --- chains ---------------------------------------------------------------------------------


def build_real_chain(flow, alice, make_agent):
    """root (alice) → planner → (researcher → merger, security), through the real
    endpoints; merger's and security's codes exchanged. Keeps every secret the
    client ever saw, so tests can check none of them leaks."""
    planner = make_agent("planner")
    researcher = make_agent("researcher", scopes="openid read")
    security = make_agent("security", scopes="read")
    merger = make_agent("merger", scopes="openid read")
    root_code, root_verifier = flow.authorize(alice, scope="openid read write")
    t = type("RealChain", (), {})()
    t.root_code = root_code
    t.planner = flow.advance(root_code, planner)
    t.researcher = flow.advance(t.planner[0], researcher)
    t.security = flow.advance(t.planner[0], security)
    t.merger = flow.advance(t.researcher[0], merger)
    t.agents = {"planner": planner, "researcher": researcher, "security": security, "merger": merger}
    t.tokens = {}
    for name in ("merger", "security"):
        code, verifier, _ = getattr(t, name)
        response = flow.exchange(code, verifier)
        assert response.status_code == 200, response.content
        t.tokens[name] = response.json()
    t.root = lifecycle.find_step(root_code)
    t.step = {name: lifecycle.find_step(getattr(t, name)[0]) for name in t.agents}
    t.chain_id = str(t.root.pk)
    t.secrets = (
        [root_code, root_verifier]
        + [value for name in t.agents for value in getattr(t, name)[:2] if value]
        + [tok[k] for tok in t.tokens.values() for k in ("access_token", "refresh_token", "id_token") if k in tok]
    )
    t.digests = [s.code_digest for s in ChainedGrant.objects.chain(t.root.pk)]
    return t


def assert_no_secret(content: bytes, chain) -> None:
    """None of a build_real_chain() chain's codes, verifiers, tokens or full code digests is in ``content``."""
    text = content.decode("utf-8")
    for value in chain.secrets:
        assert value not in text, "a code, verifier or token leaked into the response"
    for digest in chain.digests:
        assert digest not in text, "a full code digest leaked (only an 8-character prefix may be shown)"


def verify_evidence_offline(bundle: dict, jwks: dict) -> dict:
    """How anyone checks an evidence bundle without trusting the IdP's database:

    1. fetch the IdP's JWKS (``jwks_uri`` from its OIDC discovery document,
       ``/oauth/.well-known/jwks.json`` here);
    2. read the compact JWS's protected header: ``alg`` must be RS256 and ``kid``
       must name a key of the JWKS;
    3. verify the signature with that public key (jwcrypto);
    4. the signed payload, parsed as JSON, must equal the bundle's ``evidence``
       (what a reader is shown) — otherwise the JSON was edited after signing.

    Returns the verified payload; raises on any failure."""
    token = jws.JWS()
    token.deserialize(bundle["jws"])
    header = token.jose_header
    if header.get("alg") != "RS256" or header.get("typ") != "chain-evidence+jws":
        raise ValueError(f"unexpected JWS header {header}")
    matches = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
    if len(matches) != 1:
        raise ValueError("the kid names no key of the IdP's JWKS")
    token.verify(jwk.JWK(**matches[0]), alg="RS256")  # raises InvalidJWSSignature
    payload = json.loads(token.payload)
    if payload != bundle["evidence"]:
        raise ValueError("the evidence JSON differs from what was signed")
    return payload


def assert_no_live_step_below(step: ChainedGrant) -> None:
    """Nothing under a revoked step can be chained or exchanged any more."""
    subtree = ChainedGrant.objects.subtree_of(step)
    assert not subtree.filter(revoked_at__isnull=True).exists()
    assert not get_grant_model().objects.filter(pk__in=subtree.exclude(grant_id=None).values("grant_id")).exists()
    assert (
        not get_access_token_model()
        .objects.filter(pk__in=subtree.exclude(access_token=None).values("access_token"))
        .exists()
    )


# --- odds and ends --------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def crash_report(caplog) -> str:
    """The text of the error report Django logged for a request that raised (what
    mail_admins and Sentry's Django integration would carry)."""
    record = next(r for r in caplog.records if r.name == "django.request" and r.exc_info)
    return ExceptionReporter(record.request, *record.exc_info).get_traceback_text()


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def screenshot(page, name: str) -> Path:
    """A full-page screenshot under test-artifacts/ (CI keeps them; look at them)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path
