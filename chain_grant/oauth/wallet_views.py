"""HTTP for the wallet step (rules in ``chain_grant.core.wallet_step``) and the demo web wallet page.

* ``start``: authorize with ``response_type=id_token`` → the wallet request page
  (``openid://`` link, QR code, a poll that waits for the wallet).
* ``DirectPostView``: the wallet's ``direct_post`` (``id_token`` + ``state``) → JSON.
* ``StatusView`` / ``CompleteView`` / ``CancelView``: the waiting page's poll, its
  collection of the code (or the wallet's same-device redirect), and giving up.
* ``DemoWalletView``: ``/wallet/``, a wallet whose key stays in the browser.
"""

from __future__ import annotations

import re

import segno
from django.contrib.auth.decorators import login_not_required  # Django >= 5.1: exempt from LoginRequiredMiddleware
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters
from django.views.generic import TemplateView
from oauth2_provider.http import OAuth2ResponseRedirect
from oauth2_provider.models import get_application_model
from oauth2_provider.scopes import get_scopes_backend
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request as OauthlibRequest
from oauthlib.uri_validate import is_absolute_uri

from ..core import lineage, policy
from ..core import wallet_step as siop
from ..core.codes import plausible_code
from ..core.errors import ChainError
from ..models import WalletRequest
from . import throttle
from .middleware import unreadable_form

_SINGLE = (
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code",
    "client_metadata",
    "code_challenge",
    "code_challenge_method",
)
_STATE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_NONCE = 255  # DOT's Grant.nonce


# The browser's poll token collects the code; the wallet's id_token is its presentation.
# Never in error reports (DEBUG pages, mail_admins, Sentry). (The same-device
# ``response_code`` is in a URL, by OpenID4VP's design: single-use, like a code.)
SECRET_PARAMS = ("poll", "id_token")
_ENDPOINT = [csrf_exempt, login_not_required, never_cache, sensitive_post_parameters(*SECRET_PARAMS)]


def _no_store(response):
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def error_page(request, description: str, status: int = 400, error: str = "invalid_request"):
    """Shown when the client cannot be told (unknown client or redirect_uri, or the
    request already ended): never a redirect to an unregistered URI."""
    return _no_store(
        render(request, "chain_grant/wallet_error.html", {"error": error, "description": description}, status=status)
    )


def _issuer(request) -> str:
    """The verifier's client_id, the `aud` the wallet signs for: the OIDC issuer."""
    return oauth2_settings.oidc_issuer(request)


def _iss(request) -> str:
    """RFC 9207 `iss` of authorization responses (what DOT puts on its own redirects)."""
    return oauth2_settings.oauth2_authorization_server_issuer(request)


def _redirect(url: str, application):
    return OAuth2ResponseRedirect(url, application.get_allowed_schemes())


def _validator_request(request, application, client_id: str, redirect_uri: str) -> OauthlibRequest:
    """The oauthlib request the IdP's validator is asked about, as DOT's authorize would."""
    oauth_request = OauthlibRequest(request.build_absolute_uri(), "GET", "", {})
    oauth_request.client = application
    oauth_request.client_id = client_id
    oauth_request.redirect_uri = redirect_uri
    oauth_request.response_type = "code"  # what the wallet step gives the client
    oauth_request.user = None
    return oauth_request


def _redirect_uri_valid(validator, client_id: str, redirect_uri: str, oauth_request) -> bool:
    """oauthlib's check (an absolute URI: refuses "127.0.0.1:8765.evil.example" and
    ports like ":abc") and then the IdP's validator (DOT's registered-URI match)."""
    if not redirect_uri or "\x00" in redirect_uri or not is_absolute_uri(redirect_uri):
        return False
    try:
        return bool(validator.validate_redirect_uri(client_id, redirect_uri, oauth_request))
    except ValueError:  # urlsplit: "http://[::1" (DOT's own endpoint refuses it in oauthlib first)
        return False


def _scope(validator, application, client_id: str, raw: str, oauth_request) -> str:
    """The requested scopes (or the client's defaults), as the IdP's validator allows them."""
    wanted = list(dict.fromkeys(raw.split())) or list(validator.get_default_scopes(client_id, oauth_request) or [])
    oauth_request.scopes = wanted
    if not wanted or not validator.validate_scopes(client_id, wanted, application, oauth_request):
        raise ChainError("Unknown or unavailable scope: " + " ".join(wanted), "invalid_scope")
    return " ".join(wanted)


def start(request):
    """The wallet step's authorize request: validate it like DOT would, store a
    pending request, and show the wallet request page."""
    params = request.GET
    if any(len(params.getlist(name)) > 1 for name in _SINGLE):
        return error_page(request, "A parameter was given more than once.")
    client_id = params.get("client_id", "")
    wait = throttle.retry_after("wallet_request", request, client_id)
    if wait is not None:
        response = error_page(request, "Too many wallet requests; try again shortly.", 429, "slow_down")
        response["Retry-After"] = str(wait)
        return response
    application = plausible_code(client_id) and (get_application_model().objects.filter(client_id=client_id).first())
    validator = oauth2_settings.OAUTH2_VALIDATOR_CLASS()
    probe = _validator_request(request, application or None, client_id, "")
    if not application or not validator.validate_client_id(client_id, probe):
        return error_page(request, "Unknown client_id.", error="invalid_client")
    redirect_uri = params.get("redirect_uri") or validator.get_default_redirect_uri(client_id, probe) or ""
    oauth_request = _validator_request(request, application, client_id, redirect_uri)
    if not _redirect_uri_valid(validator, client_id, redirect_uri, oauth_request):
        return error_page(request, "Missing or unregistered redirect_uri.")

    fake = WalletRequest(redirect_uri=redirect_uri, client_state=params.get("state", ""))
    try:
        if not policy.client_may_chain(application) or not validator.validate_response_type(
            client_id, "code", application, oauth_request
        ):
            raise ChainError("This client may not use the wallet step.", "unauthorized_client")
        siop.check_prompt(params.get("prompt", ""))
        policy.refuse_resource(params.getlist("resource"))
        if "dpop_jkt" in params:  # never bind silently less than asked (RFC 9449 §10): refuse instead
            raise ChainError("dpop_jkt is not supported for the wallet step.", "invalid_request")
        if "\x00" in params.get("state", "") + params.get("nonce", ""):  # no database stores it
            raise ChainError("state and nonce must not contain NUL characters.", "invalid_request")
        if len(params.get("nonce", "")) > _MAX_NONCE:  # kept whole in the DOT grant, for the id_token
            raise ChainError(f"nonce is longer than {_MAX_NONCE} characters.", "invalid_request")
        scope = _scope(validator, application, client_id, params.get("scope", ""), oauth_request)
        metadata = siop.parse_client_metadata(params.get("client_metadata"))
        challenge, method = policy.check_pkce(
            params.get("code_challenge"),
            params.get("code_challenge_method"),
            validator.is_pkce_required(client_id, oauth_request),
        )
        wallet_request, poll_token = siop.start_request(
            application,
            redirect_uri=redirect_uri,
            verifier_id=_issuer(request),
            scope=scope,
            client_state=params.get("state", ""),
            client_metadata=metadata,
            code_challenge=challenge,
            code_challenge_method=method,
            oidc_nonce=params.get("nonce", ""),
            parent_code=params.get("code"),
        )
    except ChainError as exc:
        params_out = {"error": exc.error, "error_description": exc.description}
        return _redirect(siop.client_redirect(fake, params_out, _iss(request)), application)

    response_uri = request.build_absolute_uri(reverse("oauth2_provider:chain-wallet-response"))
    openid_url = siop.request_url(wallet_request, response_uri)
    all_scopes = get_scopes_backend().get_all_scopes()
    context = {
        "application": application,
        "wallet_request": wallet_request,
        "openid_url": openid_url,
        "qr_svg": segno.make(openid_url, error="m").svg_inline(scale=3, dark="#1d232b"),
        "poll_token": poll_token,
        "scopes_descriptions": [all_scopes.get(s, s) for s in scope.split()],
        "status_url": reverse("oauth2_provider:chain-wallet-status", args=[wallet_request.pk]),
        "complete_url": reverse("oauth2_provider:chain-wallet-complete", args=[wallet_request.pk]),
        "cancel_url": reverse("oauth2_provider:chain-wallet-cancel", args=[wallet_request.pk]),
        "demo_wallet_url": _demo_wallet_url(),
        "expires_in": int((wallet_request.expires - wallet_request.created).total_seconds()),
    }
    if wallet_request.parent_id:
        context["chain_steps"] = lineage.step_rows(lineage.ancestors(wallet_request.parent, with_actors=True))
    return _no_store(render(request, "chain_grant/wallet_request.html", context))


def _demo_wallet_url() -> str | None:
    try:
        return reverse("chain_grant_wallet:demo")
    except NoReverseMatch:
        return None


def _json_error(exc: ChainError, status: int = 400):
    return _no_store(JsonResponse({"error": exc.error, "error_description": exc.description}, status=status))


@method_decorator(_ENDPOINT, name="dispatch")
class DirectPostView(View):
    """OpenID4VP ``direct_post``: the wallet posts ``id_token`` and ``state``."""

    oauth_json_errors = True  # RequestGuardMiddleware answers its refusals as JSON
    http_method_names = ["post", "options"]

    def post(self, request, *args, **kwargs):
        refusal = unreadable_form(request)  # Django's own answer: an HTML 400, or a 500 for some charsets
        if refusal is not None:
            return _no_store(refusal)
        data = request.POST
        try:
            if any(len(data.getlist(name)) > 1 for name in ("id_token", "state")):
                raise ChainError("A parameter was given more than once.", "invalid_request")
            state = data.get("state", "")
            if not _STATE.fullmatch(state):
                raise ChainError("Unknown or missing state.", "invalid_request")
            wallet_request, response_code = siop.accept_presentation(state, data.get("id_token", ""))
        except ChainError as exc:
            return _json_error(exc)
        url = request.build_absolute_uri(reverse("oauth2_provider:chain-wallet-complete", args=[wallet_request.pk]))
        return _no_store(JsonResponse({"redirect_uri": f"{url}?response_code={response_code}"}))


@method_decorator(_ENDPOINT, name="dispatch")
class StatusView(View):
    """The waiting page's poll (POST ``poll``, so the token stays out of URLs and logs)."""

    oauth_json_errors = True  # RequestGuardMiddleware answers its refusals as JSON
    http_method_names = ["post"]

    def post(self, request, request_id):
        refusal = unreadable_form(request)
        if refusal is not None:
            return refusal
        try:
            return _no_store(JsonResponse(siop.status(request_id, request.POST.get("poll", ""))))
        except ChainError as exc:
            return _json_error(exc, status=404)


@method_decorator(_ENDPOINT, name="dispatch")
class CompleteView(View):
    """Collect the code: POST ``poll`` from the waiting page, or GET ``response_code``
    when the wallet sends this browser here (same device). Redirects to the client."""

    http_method_names = ["get", "post"]

    def get(self, request, request_id):
        return self._complete(request, request_id, response_code=request.GET.get("response_code", ""))

    def post(self, request, request_id):
        if unreadable_form(request) is not None:
            return error_page(request, "The request body is not a readable form.")
        return self._complete(request, request_id, poll_token=request.POST.get("poll", ""))

    def _complete(self, request, request_id, **secret):
        try:
            step, redirect = siop.complete(request_id, issuer=_iss(request), **secret)
        except siop.RequestEnded as exc:
            if exc.redirect:
                application = WalletRequest.objects.get(pk=request_id).application
                return _redirect(exc.redirect, application)
            return error_page(request, exc.description, status=400, error=exc.error)
        except ChainError as exc:
            return error_page(request, exc.description, status=400, error=exc.error)
        return _redirect(redirect, step.application)


@method_decorator(_ENDPOINT, name="dispatch")
class CancelView(View):
    http_method_names = ["post"]

    def post(self, request, request_id):
        if unreadable_form(request) is not None:
            return error_page(request, "The request body is not a readable form.")
        try:
            redirect = siop.cancel(request_id, request.POST.get("poll", ""), issuer=_iss(request))
        except ChainError as exc:
            return error_page(request, exc.description, status=400, error=exc.error)
        return _redirect(redirect, WalletRequest.objects.get(pk=request_id).application)


@method_decorator(login_not_required, name="dispatch")
class DemoWalletView(TemplateView):
    """A demo wallet: an ES256 key made with WebCrypto and kept in localStorage; it
    shows its did:jwk and answers an ``openid://`` request opened or pasted in."""

    template_name = "chain_grant/wallet_demo.html"
