"""DOT views with the chain added: introspection shows the actor chain, and OIDC
discovery lists the grant types (including ``code_chain``)."""

from __future__ import annotations

import json

from django.db import transaction
from django.http import JsonResponse
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters
from django.views.generic import View
from oauth2_provider import views as dot_views
from oauth2_provider.compat import login_not_required
from oauth2_provider.exceptions import OAuthToolkitError
from oauth2_provider.models import get_application_model
from oauth2_provider.oauth2_backends import _add_iss_to_redirect
from oauth2_provider.scopes import get_scopes_backend
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request as OauthlibRequest
from oauthlib.oauth2.rfc6749 import errors as oauth_errors

from ..core import lineage, policy, record, steps
from ..core.codes import plausible_code
from ..core.errors import ChainError
from ..settings import chain_grant_settings
from . import throttle, wallet_views
from .middleware import oauth_error, unreadable_form

# Never in error reports (DEBUG pages, mail_admins, Sentry): codes, proofs, secrets.
SECRET_PARAMS = ("client_secret", "code", "authorization_code", "id_token", "code_verifier", "refresh_token")
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class ReadableFormMixin:
    """A POST whose body Django cannot read as a form (a charset that is no text
    encoding, a urlencoded body not in UTF-8, too large, broken multipart) is an OAuth
    error JSON, not Django's HTML 400 or an unhandled LookupError (a 500). Only for DOT's
    machine endpoints: ``dispatch`` keeps their CSRF and login exemptions (``as_view``
    takes them from the outermost ``dispatch``)."""

    oauth_json_errors = True  # RequestGuardMiddleware answers this view's refusals as JSON

    @method_decorator([csrf_exempt, login_not_required])
    def dispatch(self, request, *args, **kwargs):
        refusal = unreadable_form(request)
        if refusal is not None:
            return refusal
        return super().dispatch(request, *args, **kwargs)


@method_decorator(sensitive_post_parameters("token"), name="dispatch")
class IntrospectTokenView(ReadableFormMixin, dot_views.IntrospectTokenView):
    """RFC 7662 introspection (DOT's) plus the chain claims (``lineage.chain_claims``:
    ``chain_id``, ``chain_depth``, ``act``, ``chain_actors``, ``chain_joins``), shown only
    to the token's own client and to the resource servers the IdP names in
    ``CHAIN_GRANT["INTROSPECTION_RESOURCE_SERVERS"]``: who acted in a chain is not every
    client's business (RFC 7662 §4)."""

    def unauthenticated_response(self, request, oauthlib_request=None):
        """RFC 7662 §2.3: bad client credentials are RFC 6749 §5.2's 401 invalid_client
        (DOT answers a bare 403); a bearer token that fails is RFC 6750's answer."""
        if request.headers.get("Authorization", "")[:7].lower() == "bearer ":
            error = dict(getattr(oauthlib_request, "oauth2_error", None) or {"error": "invalid_token"})
            error.setdefault("error_description", "The access token is invalid.")
            status = 403 if error["error"] == "insufficient_scope" else 401
            challenge = f'Bearer error="{error["error"]}"'
        else:
            error = {"error": "invalid_client", "error_description": "Client authentication failed."}
            status, challenge = 401, 'Basic realm="introspection"'
        response = JsonResponse(error, status=status)
        response["WWW-Authenticate"] = challenge
        response["Cache-Control"] = "no-store"
        return response

    def authenticate_client(self, request):
        # DOT's, keeping which client authenticated (one check, not two).
        core = self.get_oauthlib_core()
        uri, http_method, body, headers = core._extract_params(request)
        oauth_request = OauthlibRequest(uri, http_method, body, headers)
        valid = core.server.request_validator.authenticate_client(oauth_request)
        request.chain_caller = getattr(oauth_request, "client", None) if valid else None
        return valid

    def verify_request(self, request):
        valid, oauth_request = super().verify_request(request)
        if valid:  # a bearer token with the introspection scope: its client is the caller
            request.chain_caller = getattr(oauth_request.access_token, "application", None)
        return valid, oauth_request

    def get_token_response(self, token_value=None):
        response = dot_views.IntrospectTokenView.get_token_response(token_value)
        if response.status_code != 200:
            return response
        data = json.loads(response.content)
        if not data.get("active"):
            return response
        token = lineage.introspected_token(token_value or "")  # one query decides what follows
        if token is not None and token.bound_jkt:  # RFC 9449 §6.2: what the token is bound to
            data.update(token_type="DPoP", cnf={"jkt": token.bound_jkt})
            response.content = json.dumps(data)
        try:
            extra = lineage.chain_claims(token) if token and token.in_chain and self._may_see_chain(token) else {}
        except lineage.UnverifiedLink:  # its step link was edited: nothing about it can be trusted
            return JsonResponse({"active": False}, headers={"Cache-Control": "no-store"})
        if not extra:
            return response
        data.update(extra)
        response.content = json.dumps(data)
        return response

    def _may_see_chain(self, token) -> bool:
        caller = getattr(self.request, "chain_caller", None)
        if caller is None:
            return False
        return caller.pk == token.application_id or (
            caller.client_id in chain_grant_settings.INTROSPECTION_RESOURCE_SERVERS
        )


def rfc9700_gated_grants() -> set[str]:
    """The grants DOT's RFC 9700 gates turn off (DOT neither serves nor advertises them)."""
    gates = {
        "implicit": oauth2_settings.COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT,
        "password": oauth2_settings.COMPLIANT_BCP_RFC9700_PASSWORD_GRANT,
    }
    return {grant for grant, on in gates.items() if on}


def advertised_grant_types(listed=None) -> list[str]:
    """``grant_types_supported``: DOT's (``OAUTH2_GRANT_TYPES_SUPPORTED`` less the grants
    its RFC 9700 gates turned off, as DOT's RFC 8414 view computes it) plus the grants
    the configured server class adds (``ChainServer.chain_grant_types``), so the IdP never
    restates DOT's list to advertise ``code_chain``."""
    if listed is None:
        off = rfc9700_gated_grants()
        listed = [g for g in oauth2_settings.OAUTH2_GRANT_TYPES_SUPPORTED if g not in off]
    extra = getattr(oauth2_settings.OAUTH2_SERVER_CLASS, "chain_grant_types", ())
    return list(dict.fromkeys([*listed, *extra]))


def add_dpop(data: dict) -> None:
    """RFC 9449 §5.1: the DPoP algorithms, added to what DOT lists."""
    algorithms = list(chain_grant_settings.DPOP_ALGORITHMS)
    data["dpop_signing_alg_values_supported"] = list(
        dict.fromkeys([*data.get("dpop_signing_alg_values_supported", []), *algorithms])
    )


def add_client_auth_methods(data: dict) -> None:
    """``private_key_jwt`` and its algorithms, added to what DOT lists for each endpoint
    that authenticates clients (token; introspection and revocation where listed)."""
    algorithms = list(chain_grant_settings.CLIENT_ASSERTION_ALGORITHMS)
    for endpoint in ("token", "introspection", "revocation"):
        methods = f"{endpoint}_endpoint_auth_methods_supported"
        if endpoint != "token" and methods not in data:
            continue
        data[methods] = list(dict.fromkeys([*data.get(methods, ["client_secret_basic"]), "private_key_jwt"]))
        signing = f"{endpoint}_endpoint_auth_signing_alg_values_supported"
        data[signing] = list(dict.fromkeys([*data.get(signing, []), *algorithms]))


class OAuthServerMetadataView(dot_views.OAuthServerMetadataView):
    """RFC 8414 metadata (DOT's) with chain_grant's grants added to ``grant_types_supported``
    and ``private_key_jwt`` to the client authentication methods."""

    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        data = json.loads(response.content)
        data["grant_types_supported"] = advertised_grant_types(data.get("grant_types_supported", []))
        add_client_auth_methods(data)
        add_dpop(data)
        response.content = json.dumps(data)
        return response


class ConnectDiscoveryInfoView(dot_views.ConnectDiscoveryInfoView):
    """OIDC discovery (DOT's) plus ``grant_types_supported`` (as RFC 8414's, with
    ``code_chain``), introspection and revocation endpoints, so agents find the grant."""

    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        data = json.loads(response.content)
        data.setdefault("grant_types_supported", advertised_grant_types())
        for key, name in (("introspection_endpoint", "introspect"), ("revocation_endpoint", "revoke-token")):
            url = self._get_endpoint_url(request, name)
            if url:
                data.setdefault(key, url)
        add_client_auth_methods(data)
        add_dpop(data)
        response.content = json.dumps(data)
        return response


class TokenView(ReadableFormMixin, dot_views.TokenView):
    """DOT's token endpoint with codes, proofs, verifiers and refresh tokens hidden from
    error reports. DOT marks only ``password`` and ``client_secret``, on an inner method,
    which overwrites any ``sensitive_post_parameters`` wrapped around the view; so the
    full list is set here, after DOT's decorator ran.

    The device_code grant's poll: DOT 3.4.1 indexes ``request.POST["device_code"]``
    (a KeyError when it is missing) and looks it up as given (a NUL byte is a
    PostgreSQL error), both 500s; and answers an unknown one with a bare 404. Here
    those are invalid_request and RFC 6749 §5.2's invalid_grant."""

    def post(self, request, *args, **kwargs):
        if request.POST.get("grant_type") != DEVICE_CODE_GRANT:  # the value DOT dispatches on
            return super().post(request, *args, **kwargs)
        device_codes = request.POST.getlist("device_code")
        if len(device_codes) != 1 or not plausible_code(device_codes[0]):
            return oauth_error("invalid_request", "device_code must be given once, as printable ASCII.")
        response = super().post(request, *args, **kwargs)
        if response.status_code == 404 and response.content == b'{"error": "device_not_found"}':
            return oauth_error("invalid_grant", "Unknown device_code.")
        return response

    def create_token_response(self, request):
        request.sensitive_post_parameters = ("password", *SECRET_PARAMS)
        if "client_assertion" not in request.POST and "HTTP_DPOP" not in request.META:
            return super().create_token_response(request)  # DOT's requests: DOT's transactions
        # A client assertion's and a DPoP proof's jti (core.replay) are recorded in the
        # transaction that writes the code or token, not in one of their own: one commit
        # per request. An OAuth error still commits them (errors are responses, not
        # exceptions), so a jti is spent even by a request that fails.
        with transaction.atomic():
            return super().create_token_response(request)


@method_decorator(sensitive_post_parameters("token"), name="dispatch")
class RevokeTokenView(ReadableFormMixin, dot_views.RevokeTokenView):
    """RFC 7009 revocation (DOT's), with the token hidden from error reports."""


class DeviceAuthorizationView(ReadableFormMixin, dot_views.DeviceAuthorizationView):
    """RFC 8628 device authorization (DOT's); ``ChainOAuthLibCore`` guards its crashes."""


class AuthorizationView(dot_views.AuthorizationView):
    """DOT's authorize endpoint with the two browser steps (docs/architecture.md, "Browser steps").

    * ``response_type=id_token``: the wallet step (``wallet_views.start``); no login.
    * ``response_type=code`` with ``code=<previous>``: the user step. The person logs
      in (``prompt=login`` honoured), the consent page shows the chain so far, and the
      new code is a ``user`` child of the previous step. Consent is never skipped.
    * anything else: DOT's view, unchanged.
    """

    chain_template_name = "chain_grant/consent.html"

    def dispatch(self, request, *args, **kwargs):
        if request.method == "GET" and request.GET.get("response_type") == "id_token" and self._wallet_client():
            return wallet_views.start(request)
        if request.method == "GET" and "code" in request.GET:  # a chain step; anonymous ones are counted
            wait = throttle.retry_after("chain_authorize", request, request.GET.get("client_id", ""))
            if wait is not None:
                response = wallet_views.error_page(request, "Too many requests; try again shortly.", 429, "slow_down")
                response["Retry-After"] = str(wait)
                return response
        return super().dispatch(request, *args, **kwargs)

    def _wallet_client(self) -> bool:
        """response_type=id_token is the wallet step for a client enabled for it; for
        any other (an OIDC implicit client) it is DOT's flow."""
        if not chain_grant_settings.WALLET_STEP:
            return False
        client_id = self.request.GET.get("client_id", "")
        application = plausible_code(client_id) and get_application_model().objects.filter(client_id=client_id).first()
        return bool(application) and policy.wallet_step_client(application)

    def previous_code(self) -> str | None:
        codes = self.request.GET.getlist("code")
        return codes[0] if codes else None

    def get(self, request, *args, **kwargs):
        code = self.previous_code()
        if code is None:  # DOT's authorize, byte for byte (prompt=none included)
            return super().get(request, *args, **kwargs)
        try:
            scopes, credentials = self.validate_authorization_request(request)
        except OAuthToolkitError as error:
            return self.error_response(error, application=None)
        prompt = set(request.GET.get("prompt", "").split())
        if "login" in prompt:
            return self.handle_prompt_login()
        application = get_application_model().objects.get(client_id=credentials["client_id"])
        try:
            if len(request.GET.getlist("code")) > 1:
                raise ChainError("Duplicate code parameter.", "invalid_request")
            if "none" in prompt:
                raise ChainError("A chain step always needs the person's consent.", "consent_required")
            if not policy.client_may_chain(application):
                raise ChainError("This client may not continue chains.", "unauthorized_client")
            policy.refuse_resource(request.GET.getlist("resource"))
            parent = steps.preview_parent(application, code)
        except ChainError as exc:
            return self._redirect_error(exc.error, exc.description, credentials, application)

        all_scopes = get_scopes_backend().get_all_scopes()
        kwargs.update(
            scopes=scopes,
            scopes_descriptions=[all_scopes[scope] for scope in scopes],
            application=application,
            **{k: credentials[k] for k in ("client_id", "redirect_uri", "response_type", "state")},
        )
        for name in ("code_challenge", "code_challenge_method", "nonce"):
            if name in credentials:
                kwargs[name] = credentials[name]
        if "claims" in credentials:
            kwargs["claims"] = json.dumps(credentials["claims"])
        self.oauth2_data = kwargs
        kwargs["form"] = self.get_form(self.get_form_class())
        kwargs.update(consent_context(parent, scopes, request.user))
        kwargs["requested"] = list(zip(scopes, kwargs["scopes_descriptions"], strict=True))
        return self.render_to_response(self.get_context_data(**kwargs))

    def error_response(self, error, application, **kwargs):
        response = super().error_response(error, application, **kwargs)
        # RFC 9207 §2: error responses carry iss too (DOT 3.4.1 adds it to successes only).
        if (
            self.previous_code() is not None
            and response.status_code == 302
            and (oauth2_settings.COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS)
        ):
            issuer = oauth2_settings.oauth2_authorization_server_issuer(self.request)
            response["Location"] = _add_iss_to_redirect(response["Location"], issuer)
        return response

    def _redirect_error(self, error: str, description: str, credentials, application):
        """An OAuth error redirect to the (validated) redirect_uri, with the state."""
        oauth_error = oauth_errors.CustomOAuth2Error(
            error=error, description=description, state=credentials.get("state")
        )
        oauth_error.redirect_uri = credentials["redirect_uri"]
        return self.error_response(OAuthToolkitError(error=oauth_error), application)

    def get_template_names(self):
        if self.previous_code() is not None:
            return [self.chain_template_name]
        return super().get_template_names()

    def create_authorization_response(self, request, scopes, credentials, allow):
        code = self.previous_code()
        jkt = request.GET.get("dpop_jkt")
        if jkt is not None:  # RFC 9449 §10: bind the new code (DOT's form posts back to this URL)
            credentials = {
                **credentials,
                "chain_dpop_jkt": jkt,
                "chain_dpop_jkt_count": len(request.GET.getlist("dpop_jkt")),
            }
        if code is not None:
            # Read by ChainValidatorMixin.save_authorization_code (oauthlib copies
            # credentials onto its request).
            credentials = {
                **credentials,
                "chain_parent_code": code,
                "chain_parent_code_count": len(request.GET.getlist("code")),
            }
        return super().create_authorization_response(request, scopes, credentials, allow)


def consent_context(parent, scopes: list[str], person) -> dict:
    """What a person sees before joining a chain: each step so far (kind, actor,
    scope, time), whom the chain acted for, and which requested scopes are new."""
    had = set(parent.scope.split())
    return {
        "chain_steps": lineage.step_rows(lineage.ancestors(parent, with_actors=True)),
        "chain_person": parent.user,
        "chain_person_is_you": parent.user_id == person.pk,
        "new_scopes": [scope for scope in scopes if scope not in had],
    }


@method_decorator(login_not_required, name="dispatch")
class RecordKeysView(View):
    """The record key's public half (and retired ones), as a JWK Set: what verifies each
    step's ``record_jws``, each state event and the chain's head (core.record)."""

    def get(self, request, *args, **kwargs):
        response = JsonResponse(record.public_jwks())
        response["Cache-Control"] = "public, max-age=3600"
        response["Access-Control-Allow-Origin"] = "*"
        return response
