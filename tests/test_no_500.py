"""0 × 5xx: requests that crashed the IdP with an HTTP 500 (chain_grant's own code,
DOT's and Django's reached through our endpoints), each answered now as an OAuth
error with the right status: a 4xx JSON ``{"error", "error_description"}`` at the
OAuth and API endpoints, a 400 page for browser pages; and nothing written.

Where the fault is DOT's or Django's, the guard is in chain_grant's layer (backend,
validator, views, ``chain_grant.middleware``); docs/upstream.md says what to report."""

from __future__ import annotations

import json
import sys
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import BadRequest
from django.test import Client, override_settings
from django.urls import resolve
from jwcrypto import jwk
from oauth2_provider.models import get_device_grant_model, get_grant_model

from chain_grant.client.jose import JWK_THUMBPRINT_URI
from chain_grant.client.wallet import HeadlessWallet
from chain_grant.core.codes import code_digest
from chain_grant.models import ChainedGrant, WalletRequest
from tests.helpers import basic_auth, signed
from tests.helpers import proof_claims as claims
from tests.test_wallet_step import RESPONSE_URI, WalletFlow, claims_for, craft, public_of
from tests.wsgi_client import WSGIClient

pytestmark = pytest.mark.django_db
Grant = get_grant_model()
DeviceGrant = get_device_grant_model()
FORM = "application/x-www-form-urlencoded"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
NO_STEP = "00000000-0000-0000-0000-000000000000"
ERROR_KEYS = {"error", "error_description"}
# A multipart body whose declared charset is a codec Python knows but that is not a
# text encoding: Django's MultiPartParser (and QueryDict) raise LookupError.
MULTIPART = (
    b"--xx\r\n"
    b'Content-Disposition: form-data; name="grant_type"\r\n\r\nclient_credentials\r\n'
    b"--xx\r\n"
    b'Content-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n' + b"a" * 32 + b"\r\n"
    b"--xx--\r\n"
)


def raw(**kwargs) -> Client:
    """A test client that answers a crash as the 500 a real server sends."""
    return Client(raise_request_exception=False, **kwargs)


def assert_oauth_error(response, status: int, error: str | set[str] | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) >= ERROR_KEYS, body
    assert isinstance(body["error_description"], str) and body["error_description"], body
    if error:
        assert body["error"] in ({error} if isinstance(error, str) else error), body
    return body


def assert_bad_request_page(response) -> None:
    assert response.status_code == 400, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("text/html"), response["Content-Type"]


@pytest.fixture
def code(flow, alice):
    code, _ = flow.authorize(alice, scope="openid read write")
    return code


def nothing_written(code: str) -> None:
    assert not ChainedGrant.objects.exists()
    assert list(Grant.objects.values_list("code", flat=True)) == [code_digest(code)]


# --- (1) chain_grant: a non-ASCII c_hash in a validly signed agent proof ------------------


def test_1_non_ascii_c_hash_is_invalid_grant(flow, planner, code):
    """Rule: a signed proof whose c_hash is not ASCII is refused like any wrong c_hash
    (hmac.compare_digest raised TypeError for non-ASCII str: a 500)."""
    response = flow.hop(code, signed(planner, claims(planner, code, c_hash="é" * 43)))
    body = assert_oauth_error(response, 400, "invalid_grant")
    assert "c_hash" in body["error_description"]
    nothing_written(code)


# --- (2) chain_grant: a wallet direct_post whose thumbprint sub is not ASCII ---------------


def test_2_non_ascii_thumbprint_sub_at_direct_post_is_invalid_grant(client, app):
    """Rule: a self-issued id_token whose RFC 9278 thumbprint ``sub`` has a non-ASCII
    character is refused (invalid_grant) and the request stays open. No credential is
    needed to send it: the state is in the openid:// link anyone can ask for."""
    wflow = WalletFlow(client, app)
    pending = wflow.start()
    wallet = HeadlessWallet.generate()
    sub = JWK_THUMBPRINT_URI + jwk.JWK(**public_of(wallet.key)).thumbprint()[:-1] + "é"
    token = craft(wallet.key, claims_for(wallet, pending.request, iss=sub, sub=sub, sub_jwk=public_of(wallet.key)))
    response = raw().post(RESPONSE_URI, {"id_token": token, "state": pending.state})
    body = assert_oauth_error(response, 400, "invalid_grant")
    assert "thumbprint" in body["error_description"]
    row = pending.refresh()
    assert row.status == WalletRequest.Status.PENDING and row.wallet is None
    assert not get_user_model().objects.filter(username__startswith="wallet-").exists()


# --- (3) chain_grant API: a created_after whose UTC value is out of range ------------------


@pytest.fixture
def staff_client(db):
    staff = get_user_model().objects.create_user("auditor", "auditor@example.com", "pw", is_staff=True)
    client = raw()
    client.force_login(staff)
    return client


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("created_after", "0001-01-01T00:00:00+23:59"),
        ("created_before", "0001-01-01T00:00:00+01:00"),
        ("created_after", "9999-12-31T23:59:59-23:59"),
    ],
)
def test_3_created_filter_out_of_range_is_invalid_request(staff_client, name, value):
    """Rule: an ISO 8601 date-time that parses but is out of range once in UTC is an
    invalid_request (was OverflowError on SQLite, DataError on PostgreSQL)."""
    body = assert_oauth_error(staff_client.get("/api/chains/", {name: value}), 400, "invalid_request")
    assert name in body["error_description"]


# --- (4) chain_grant API: a deeply nested JSON body, unauthenticated -----------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", f"/api/steps/{NO_STEP}/revoke/"), ("GET", "/api/chains/"), ("GET", f"/api/chains/{NO_STEP}/")],
)
def test_4_deeply_nested_json_body_is_invalid_request(method, path):
    """Rule: a JSON body nested beyond the parser's recursion limit is a 400
    invalid_request, with or without credentials (DOT's DRF authentication reads the
    body first: RecursionError, a 500, for anyone)."""
    depth = sys.getrecursionlimit() * 20
    response = raw().generic(method, path, "[" * depth + "]" * depth, content_type="application/json")
    assert_oauth_error(response, 400, "invalid_request")


# --- (5), (6) DOT: the device_code grant without a usable device_code ----------------------


def test_5_device_code_grant_without_device_code_is_invalid_request(flow):
    """Rule: grant_type=…device_code without device_code is an invalid_request (DOT's
    TokenView indexed request.POST["device_code"]: MultiValueDictKeyError, a 500)."""
    response = raw().post("/oauth/token", {"grant_type": DEVICE_CODE}, **flow.auth())
    assert_oauth_error(response, 400, "invalid_request")
    assert not DeviceGrant.objects.exists()


@pytest.mark.parametrize("device_code", ["a\x00b", "\x00"])
def test_6_device_code_with_a_nul_is_invalid_request(flow, device_code):
    """Rule: a device_code with a NUL byte is an invalid_request (DOT looked it up as
    given: a 500 on PostgreSQL, which refuses NUL in text)."""
    response = raw().post("/oauth/token", {"grant_type": DEVICE_CODE, "device_code": device_code}, **flow.auth())
    assert_oauth_error(response, 400, "invalid_request")


def test_6_unknown_device_code_is_invalid_grant(flow):
    """Rule: an unknown device_code is RFC 6749 §5.2's invalid_grant (400), not DOT's
    bare 404 ``{"error": "device_not_found"}``."""
    response = raw().post("/oauth/token", {"grant_type": DEVICE_CODE, "device_code": "no-such"}, **flow.auth())
    assert_oauth_error(response, 400, "invalid_grant")


def test_6_repeated_device_code_is_invalid_request(flow):
    body = f"grant_type={DEVICE_CODE}&device_code=a&device_code=b"
    response = raw().post("/oauth/token", body, content_type=FORM, **flow.auth())
    assert_oauth_error(response, 400, "invalid_request")


# --- (7), (8) DOT: non-ASCII HTTP Basic credentials -----------------------------------------


NON_ASCII_BASIC = ["Basic é", "Basic YWJj\u00e9", "Basic \u2603\u2603\u2603\u2603"]


@pytest.mark.parametrize("authorization", NON_ASCII_BASIC)
def test_7_non_ascii_basic_credentials_at_the_token_endpoint(authorization, code):
    """Rule: Basic credentials that are not ASCII are a failed client authentication,
    401 invalid_client (base64.b64decode raised ValueError, which DOT does not catch)."""
    data = {"grant_type": "client_credentials"}
    assert_oauth_error(raw().post("/oauth/token", data, HTTP_AUTHORIZATION=authorization), 401, "invalid_client")
    nothing_written(code)


@pytest.mark.parametrize("authorization", NON_ASCII_BASIC)
def test_8_non_ascii_basic_credentials_at_introspection(authorization):
    """Rule: the same at the introspection endpoint is RFC 7662 §2.3's 401
    invalid_client (a 500 before; with bad ASCII credentials DOT answers a bare 403)."""
    response = raw().post("/oauth/introspect/", {"token": "x"}, HTTP_AUTHORIZATION=authorization)
    assert_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize("authorization", NON_ASCII_BASIC)
def test_8_non_ascii_basic_credentials_at_revocation(authorization):
    response = raw().post("/oauth/revoke_token/", {"token": "x"}, HTTP_AUTHORIZATION=authorization)
    assert_oauth_error(response, 401, "invalid_client")


def test_8_bad_client_at_introspection_is_a_json_401(flow):
    """Rule: failed authentication at introspection is a JSON 401 (DOT: a bare 403):
    invalid_client for client credentials, invalid_token for a bearer token."""
    for authorization in (basic_auth(flow.app.client_id, "wrong"), basic_auth("nobody", "x"), "Basic !!"):
        response = raw().post("/oauth/introspect/", {"token": "x"}, HTTP_AUTHORIZATION=authorization)
        assert_oauth_error(response, 401, "invalid_client")
        assert response["WWW-Authenticate"].startswith("Basic")
    response = raw().post("/oauth/introspect/", {"token": "x"}, HTTP_AUTHORIZATION="Bearer nope")
    assert_oauth_error(response, 401, "invalid_token")
    assert response["WWW-Authenticate"].startswith("Bearer")


# --- (9) DOT: POST /oauth/device-authorization/ ----------------------------------------------


@pytest.fixture
def device_client(make_app):
    return make_app(
        "tv-client",
        client_type="public",
        client_secret="",
        authorization_grant_type=DEVICE_CODE,
    )


@pytest.mark.parametrize("body", ["client_id=tv-client", "client_id=tv-client&scope=read"])
def test_9_device_authorization_answers_the_codes(device_client, body):
    """Rule: a well-formed device authorization request (RFC 8628 §3.1) is answered
    with the codes. oauthlib 4.0.1 adds ``scope`` to the response dict and DOT 3.4.1
    builds ``DeviceCodeResponse(**response)``, which takes no ``scope``: TypeError, a
    500 for every valid request."""
    response = raw().post("/oauth/device-authorization/", body, content_type=FORM)
    assert response.status_code == 200, response.content[:300]
    data = response.json()
    assert {"device_code", "user_code", "verification_uri", "expires_in"} <= set(data)
    grant = DeviceGrant.objects.get()
    assert grant.device_code == data["device_code"]
    assert grant.scope == ("read" if "scope=" in body else "openid")


def test_9_device_authorization_with_client_id_in_the_query_only(device_client):
    """Rule: a client_id in the URL but not in the form is an invalid_request (oauthlib
    reads both; DOT then indexed request.POST["client_id"]: KeyError, a 500), and no
    device grant is stored."""
    response = raw().post("/oauth/device-authorization/?client_id=tv-client", "scope=read", content_type=FORM)
    assert_oauth_error(response, 400, "invalid_request")
    assert not DeviceGrant.objects.exists()


def test_9_device_authorization_refusals_write_nothing(device_client):
    for body, status in (("", 400), ("client_id=nobody", 400), ("client_id=tv-client&scope=nope", 400)):
        response = raw().post("/oauth/device-authorization/", body, content_type=FORM)
        assert_oauth_error(response, status)
    assert not DeviceGrant.objects.exists()


# --- (10) Django: a form not in UTF-8, and a csrftoken cookie ---------------------------------

# Django's test client skips CSRF checks (``_dont_enforce_csrf_checks``), so these go
# through the WSGI application, as a server's requests do.


def handler_without_guards():
    """idp_project's Django handler without chain_grant's RequestGuardMiddleware: how a
    stock Django project answers (its views are still chain_grant's)."""
    from django.core.handlers.wsgi import WSGIHandler

    with override_settings(MIDDLEWARE=[m for m in settings.MIDDLEWARE if not m.endswith("RequestGuardMiddleware")]):
        return WSGIHandler()  # loads the middleware now


CSRF_COOKIE = {"csrftoken": "a" * 32}
LOGIN_FORM = b"username=a&password=b&csrfmiddlewaretoken=" + b"b" * 32


@pytest.mark.parametrize("charset", ["latin-1", "utf-16", "iso-8859-15", "utf8"])
@pytest.mark.parametrize("path", ["/admin/login/", "/accounts/login/", "/oauth/authorize/"])
def test_10_non_utf8_form_with_a_csrf_cookie_is_a_400_page(path, charset):
    """Rule: a urlencoded POST declared in a charset other than UTF-8 (Django compares the
    name: even "utf8"), with any csrftoken cookie, to a CSRF-protected page is a 400
    page. Django raises BadRequest from CsrfViewMiddleware and leaves the form unread;
    its 400 view (requires_csrf_token) reads it again, so does its 500 view: the
    BadRequest escapes the handler, and the WSGI server answers 500."""
    content_type = f"{FORM}; charset={charset}"
    with pytest.raises(BadRequest):  # the upstream bug, without the guard
        WSGIClient(handler_without_guards(), cookies=CSRF_COOKIE).request(
            "POST", path, body=LOGIN_FORM, content_type=content_type
        )
    response = WSGIClient(cookies=CSRF_COOKIE).request("POST", path, body=LOGIN_FORM, content_type=content_type)
    assert response.status == 400 and response.content_type.startswith("text/html"), response.body[:300]


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/wallet/response", "/oauth/introspect/"])
def test_10_non_utf8_form_with_a_csrf_cookie_at_oauth_endpoints(path, flow):
    """Rule: the same at the OAuth endpoints is an OAuth error JSON (their views read the
    form first; with stock DOT the token endpoint's BadRequest reaches the same 400 view)."""
    for app in (None, handler_without_guards()):
        response = WSGIClient(app, cookies=CSRF_COOKIE).request(
            "POST", path, body=b"grant_type=client_credentials", content_type=f"{FORM}; charset=latin-1"
        )
        assert response.status == 400 and response.json()["error"] == "invalid_request", response.body[:300]


# An unknown charset (x-unknown) is ignored by Django (it decodes as UTF-8) and never
# crashed; a known codec that is not a text encoding (rot13, hex, base64, zip, uu …)
# or one that cannot decode ASCII ("undefined") did.
BAD_CHARSETS = ["rot13", "hex", "undefined"]


def multipart(charset: str) -> str:
    return f"multipart/form-data; boundary=xx; charset={charset}"


@pytest.mark.parametrize("charset", BAD_CHARSETS)
@pytest.mark.parametrize("path", ["/admin/login/", "/accounts/login/"])
def test_10_csrf_protected_page_with_a_bad_form_charset(path, charset):
    """Rule: a POST to a CSRF-protected page whose multipart form declares such a
    charset, with any csrftoken cookie (so CsrfViewMiddleware reads the form), is a 400
    page (LookupError, a 500, in Django's MultiPartParser): with the WSGI guard, and
    with the middleware alone (its 400 page's CSRF check must not read the form)."""
    client = raw()
    client.cookies["csrftoken"] = "a" * 32
    assert_bad_request_page(client.generic("POST", path, MULTIPART, content_type=multipart(charset)))
    from idp_project.wsgi import application

    for app in (application, application.__wrapped__):
        response = WSGIClient(app, cookies=CSRF_COOKIE).request(
            "POST", path, body=MULTIPART, content_type=multipart(charset)
        )
        assert response.status == 400 and response.content_type.startswith("text/html"), response.body[:300]


@pytest.mark.parametrize("charset", BAD_CHARSETS)
def test_10_token_endpoint_with_a_bad_form_charset(flow, charset):
    response = raw().generic("POST", "/oauth/token", MULTIPART, content_type=multipart(charset), **flow.auth())
    assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize("charset", ["latin-1", "utf-16", "rot13"])
def test_10_token_endpoint_with_a_non_utf8_urlencoded_body(flow, charset):
    """Rule: a urlencoded body declared in another charset (Django 5.2 answers its HTML
    400 page) is an OAuth error JSON at the token endpoint."""
    body = b"grant_type=client_credentials"
    content_type = f"{FORM}; charset={charset}"
    assert_oauth_error(raw().generic("POST", "/oauth/token", body, content_type=content_type, **flow.auth()), 400)


def test_10_unknown_charset_is_read_as_utf8(flow):
    """Django ignores a charset Python does not know: no error, the form is read."""
    body = b"grant_type=client_credentials"
    response = raw().generic("POST", "/oauth/token", body, content_type=f"{FORM}; charset=x-unknown", **flow.auth())
    assert response.status_code == 400 and response.json()["error"] == "unauthorized_client"


# --- (11) the same elsewhere, and before Django's middleware ---------------------------------


@pytest.mark.parametrize("charset", BAD_CHARSETS)
@pytest.mark.parametrize(
    "path",
    [
        "/oauth/wallet/response",
        "/oauth/introspect/",
        "/oauth/revoke_token/",
        "/oauth/device-authorization/",
        f"/api/steps/{NO_STEP}/revoke/",
    ],
)
def test_11_other_endpoints_with_a_bad_form_charset(path, charset):
    """Rule: the wallet's direct_post, introspection, revocation, device authorization
    and the API answer the same request with an OAuth error JSON, not a 500."""
    assert_oauth_error(raw().generic("POST", path, MULTIPART, content_type=multipart(charset)), 400)


def call_wsgi(path: str, query: str, content_type: str, method: str = "GET", app=None) -> tuple[int, dict, bytes]:
    """Through idp_project's real WSGI application (what gunicorn runs), or ``app``."""
    response = WSGIClient(app).request(method, path, query=query, content_type=content_type)
    return response.status, response.headers, response.body


@pytest.mark.parametrize("charset", ["rot13", "undefined"])
@pytest.mark.parametrize(
    ("path", "json_error"),
    [("/oauth/authorize/", False), ("/oauth/token", True), ("/api/chains/", True), ("/", False)],
)
def test_11_query_string_with_a_bad_charset_header(path, json_error, charset, app):
    """Rule: any request with a query string and a Content-Type naming such a charset
    (even a GET) is a 400. Django built the request object (WSGIRequest.__init__
    decodes the query string with it) before any middleware ran: an unhandled
    LookupError/UnicodeError, a 500 from any WSGI server. chain_grant's WSGI guard
    (idp_project/wsgi.py) takes the charset off; its middleware answers the 400."""
    from idp_project.wsgi import application

    query = urlencode({"client_id": app.client_id, "response_type": "code"})
    with pytest.raises((LookupError, UnicodeError)):  # the upstream bug, behind the guard
        call_wsgi(path, query, f"text/plain; charset={charset}", app=application.__wrapped__)
    status, headers, body = call_wsgi(path, query, f"text/plain; charset={charset}")
    assert status == 400, (status, body[:300])
    if json_error:
        assert headers["Content-Type"].startswith("application/json")
        assert set(json.loads(body)) >= ERROR_KEYS
    else:
        assert headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain; a*=x-unknown''b", "multipart/form-data; boundary*=undefined''x"],
)
@pytest.mark.parametrize(("path", "json_error"), [("/oauth/token", True), ("/accounts/login/", False)])
def test_11_unparsable_content_type_parameter(content_type, path, json_error):
    """Rule: a Content-Type with an RFC 2231 parameter in an unknown or non-text
    charset is a 400, even without a query string: Django's parse_header_parameters
    raises ValueError/LookupError in WSGIRequest.__init__ (a 500 before any middleware,
    for any URL and method)."""
    from idp_project.wsgi import application

    with pytest.raises((ValueError, LookupError)):  # the upstream bug, behind the guard
        call_wsgi(path, "", content_type, method="POST", app=application.__wrapped__)
    status, headers, body = call_wsgi(path, "", content_type, method="POST")
    assert status == 400, (status, body[:300])
    assert headers["Content-Type"].startswith("application/json" if json_error else "text/html")


@pytest.mark.parametrize(
    "path", ["/oauth/token", "/oauth/introspect/", "/oauth/revoke_token/", "/oauth/device-authorization/"]
)
def test_guarded_endpoints_keep_dots_csrf_exemption(path, flow):
    """Rule: the views that read the form first are still exempt from CSRF (a client
    with a stray csrftoken cookie is not refused 403) and from LoginRequiredMiddleware."""
    client = Client(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = "a" * 32
    response = client.post(path, "token=x&client_id=x", content_type=FORM, **flow.auth())
    assert response.status_code != 403, response.content[:300]
    view = resolve(path).func
    assert getattr(view, "csrf_exempt", False) and getattr(view, "login_required", True) is False
