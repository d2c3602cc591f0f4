"""``ChainValidatorMixin``: the chain's hooks in a DOT validator. A thin adapter:
each hook calls :mod:`chain_grant.core` and turns a ChainError into an OAuth error.

    class MyValidator(ChainValidatorMixin, MyOAuth2Validator): ...   # mixin first
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from oauth2_provider.models import get_application_model, get_grant_model
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.settings import oauth2_settings
from oauthlib.oauth2.rfc6749 import errors

from ..core import client_auth, dpop, lifecycle, policy, steps, token_exchange
from ..core.errors import ChainError
from ..models import ChainedGrant
from ..settings import chain_grant_settings
from .digest_codes import DigestCodesMixin, stored
from .errors import oauth_error
from .grant import GRANT_TYPE
from .hardening import DOTHardeningMixin

log = logging.getLogger("chain_grant")


class ChainValidatorMixin(DOTHardeningMixin, DigestCodesMixin):
    """Adds the code_chain grant, chain steps at authorize, chained-code exchange and
    replay handling to a DOT validator. Put it first in the bases."""

    is_pkce_required: Callable[[str, Any], bool]  # the DOT validator's (the mixin's partner)
    _extract_basic_auth: Callable[[Any], str | None]  # DOT's too

    def is_pkce_required(self, client_id, request):  # type: ignore[no-redef]
        """The IdP's PKCE policy, except for a PoC-compatible client while RELAXED_PROOFS
        is on (Boruta's PoC sends no PKCE); no query otherwise."""
        if chain_grant_settings.RELAXED_PROOFS:
            client = getattr(request, "client", None)
            if client is None or client.client_id != client_id:
                client = get_application_model().objects.filter(client_id=client_id).first()
            if policy.poc_client(client):
                return False
        return super().is_pkce_required(client_id, request)

    # -- client authentication: private_key_jwt (RFC 7523 §2.2) ---------------------

    def authenticate_client(self, request, *args, **kwargs):
        """A client assertion authenticates a client with registered keys (core.client_auth);
        anything else is the IdP's own authentication, except that a key-only client's
        secret is refused."""
        if getattr(request, "client_assertion", None) is not None or getattr(request, "client_assertion_type", None):
            return self._authenticate_assertion(request)
        if not super().authenticate_client(request, *args, **kwargs):
            return False
        if client_auth.key_only(request.client):
            log.info("chain_grant: refused the secret of key-only client %s", request.client.client_id[:64])
            return False
        return True

    def client_authentication_required(self, request, *args, **kwargs):
        """A request with a client assertion authenticates (no lookup of an absent client_id)."""
        if getattr(request, "client_assertion", None) is not None or getattr(request, "client_assertion_type", None):
            return True
        return super().client_authentication_required(request, *args, **kwargs)

    def _authenticate_assertion(self, request) -> bool:
        try:
            request.client = client_auth.authenticate(
                assertion_type=getattr(request, "client_assertion_type", None),
                assertion=getattr(request, "client_assertion", None),
                client_id_param=getattr(request, "client_id", None),
                other_credentials=bool(self._extract_basic_auth(request))
                or getattr(request, "client_secret", None) is not None,
                audiences=self.get_assertion_audiences(request),
                usable=lambda application: application.is_usable(request),
            )
        except ChainError as exc:
            log.info("chain_grant: client assertion refused: %s", getattr(exc, "reason", exc))
            return False
        request.client_id = request.client.client_id
        return True

    def get_assertion_audiences(self, request) -> list[str]:
        """What a client assertion's ``aud`` may be: the issuer, or the URL of the
        endpoint it is posted to (RFC 7523bis accepts both), with or without a trailing
        slash. The endpoint's origin is the issuer's (configured, or DOT's from Django's
        ALLOWED_HOSTS-checked host): never a raw Host header."""
        issuer = self._issuer(request)
        origin = urlsplit(issuer)
        endpoint = f"{origin.scheme}://{origin.netloc}{urlsplit(request.uri or '').path}"
        found = []
        for value in (issuer, endpoint):
            found += [value.rstrip("/"), value.rstrip("/") + "/"]
        return found

    def save_authorization_code(self, client_id, code, request, *args, **kwargs):
        """With ``code=<previous>`` (see views.AuthorizationView) the new code is a
        ``user`` child of the previous step; otherwise DOT's (the IdP's) own."""
        jkt = getattr(request, "chain_dpop_jkt", None)
        if jkt is not None:
            try:
                dpop.check_jkt(jkt, getattr(request, "chain_dpop_jkt_count", 1))
            except ChainError as exc:
                raise oauth_error(exc, request) from None
        parent_code = getattr(request, "chain_parent_code", None)
        if parent_code is None:
            result = super().save_authorization_code(client_id, code, request, *args, **kwargs)
            if jkt:
                dpop.bind_code(code["code"], jkt)
            return result
        save = super().save_authorization_code

        def save_grant():
            save(client_id, code, request, *args, **kwargs)
            return get_grant_model().objects.get(code=stored(code["code"]), application=request.client)

        try:  # the GET checked these; a crafted POST (DOT's form carries them) is checked again
            if getattr(request, "chain_parent_code_count", 1) > 1:
                raise ChainError("Duplicate code parameter.", "invalid_request")
            if not policy.client_may_chain(request.client):
                raise ChainError("This client may not continue chains.", "unauthorized_client")
            policy.refuse_resource(getattr(request, "resource", None) or [])
            try:
                steps.add_user_step(
                    request.client, parent_code, request.user, save_grant, " ".join(request.scopes), dpop_jkt=jkt or ""
                )
            except ChainError as exc:
                raise ChainError(f"{steps.PREVIOUS_CODE_REFUSED} {exc.description}", "invalid_request") from None
        except ChainError as exc:
            raise oauth_error(exc, request) from None

    def validate_grant_type(self, client_id, grant_type, client, request, *args, **kwargs):
        if grant_type in (GRANT_TYPE, token_exchange.GRANT_TYPE):
            # A hop (either front door) is an authorization-code client's act: the IdP's own
            # policy for authorization_code (super()) must allow it too, then chain_grant's switch.
            return super().validate_grant_type(
                client_id, "authorization_code", client, request, *args, **kwargs
            ) and policy.client_may_chain(request.client)
        return super().validate_grant_type(client_id, grant_type, client, request, *args, **kwargs)

    def get_chain_audiences(self, request) -> list[str]:
        """Accepted proof ``aud`` values: CHAIN_GRANT["PROOF_AUDIENCES"], else the issuer."""
        configured = chain_grant_settings.PROOF_AUDIENCES
        if isinstance(configured, str):  # a misconfiguration (chain_grant.E110), never a list of characters
            configured = [configured]
        return list(configured) or [self._issuer(request)]

    @staticmethod
    def _issuer(request) -> str:
        """DOT's issuer for this request (a URL reverse), worked out once per request."""
        issuer = getattr(request, "_chain_grant_issuer", None)
        if issuer is None:
            issuer = request._chain_grant_issuer = oauth2_settings.oidc_issuer(request)
        return issuer

    def advance_chain(self, request) -> tuple[ChainedGrant, str]:
        """Run one agent hop; return the new step and its code."""
        try:
            return steps.advance_by_agent(
                application=request.client,
                parent_code=request.authorization_code,
                proof=request.id_token,
                audiences=self.get_chain_audiences(request),
                scope=request.scope,
                code_challenge=getattr(request, "code_challenge", None),
                code_challenge_method=getattr(request, "code_challenge_method", None),
                pkce_required=self.is_pkce_required(request.client_id, request),
                code_verifier=getattr(request, "code_verifier", None),
                joined_codes=_listed(getattr(request, "joined_codes", None)),
                joined_code_verifiers=_listed(getattr(request, "joined_code_verifiers", None)) or None,
                dpop_jkt=self._dpop_key(request),
            )
        except ChainError as exc:
            raise oauth_error(exc, request) from None

    def exchange_token(self, request, token_handler) -> dict[str, Any]:
        """RFC 8693 token exchange onto the chain (core.token_exchange): the new step's
        access token, written by the IdP's own token code (``save_bearer_token``)."""

        def issue(step: ChainedGrant, resource: list[str], longest: int) -> dict[str, Any]:
            request.user, request.scopes, request.resource = step.user, step.scope.split(), resource
            token = token_handler.create_token(request, refresh_token=False)
            token["expires_in"] = min(int(token.get("expires_in", longest)), longest)
            self.save_bearer_token(token, request)  # oauthlib's save_token, as DOT implements it
            return token

        try:
            jkt = self._dpop_key(request)
            step, body = token_exchange.exchange(
                request.client,
                token_exchange.ExchangeRequest(
                    subject_token=getattr(request, "subject_token", None),
                    subject_token_type=getattr(request, "subject_token_type", None),
                    actor_token=getattr(request, "actor_token", None),
                    actor_token_type=getattr(request, "actor_token_type", None),
                    scope=request.scope,
                    resource=_all_values(request, "resource"),
                    audience=_all_values(request, "audience"),
                    requested_token_type=getattr(request, "requested_token_type", None),
                ),
                audiences=self.get_chain_audiences(request),
                issue_token=issue,
                dpop_jkt=jkt,
            )
        except ChainError as exc:
            raise oauth_error(exc, request) from None
        return {**body, "issued_token_type": token_exchange.ACCESS_TOKEN_TYPE}

    # -- DPoP (RFC 9449) at the token endpoint ---------------------------------------

    def _dpop_key(self, request, bound_to: str = "") -> str:
        """The thumbprint of the key the request's DPoP proof names ("" without one),
        after checking the proof (core.dpop). A proof is required when the client's
        policy says so or the code or token presented is bound (``bound_to``), and its
        key must then be that one."""
        proof = request.headers.get("HTTP_DPOP") or request.headers.get("DPoP")
        required = bool(bound_to) or policy.dpop_required(request.client)
        if not proof and not required:
            return ""
        key = dpop.verify_proof(
            proof,
            htm="POST",
            htu=self.endpoint_url(request),
            nonces=dpop.nonces(),
        )
        if bound_to and key.jkt != bound_to:
            raise ChainError("The code or token is bound to another DPoP key.", "invalid_grant")
        request.dpop_jkt = key.jkt
        return key.jkt

    def endpoint_url(self, request) -> str:
        """This endpoint's URL on the issuer's origin (what ``htu`` and ``aud`` name)."""
        origin = urlsplit(oauth2_settings.oidc_issuer(request))
        return f"{origin.scheme}://{origin.netloc}{urlsplit(request.uri or '').path}"

    # -- exchanging a chained code (grant_type=authorization_code) -------------------

    def validate_code(self, client_id, code, client, request, *args, **kwargs):
        try:
            request.chain_step = lifecycle.step_for_exchange(code, client)
        except ChainError:
            return False
        step = request.chain_step
        try:
            bound = (step.dpop_jkt if step is not None else "") or dpop.bound_key(code, "code")
            self._dpop_key(request, bound_to=bound)
        except ChainError as exc:
            raise oauth_error(exc, request) from None
        return super().validate_code(client_id, code, client, request, *args, **kwargs)

    def save_bearer_token(self, token, request, *args, **kwargs):
        jkt = getattr(request, "dpop_jkt", "")
        if jkt:  # RFC 9449 §5: a DPoP-bound token says so
            token["token_type"] = "DPoP"
        if request.grant_type != "authorization_code":
            result = super().save_bearer_token(token, request, *args, **kwargs)
            if jkt:
                dpop.bind_tokens(token, jkt, public=request.client.client_type == request.client.CLIENT_PUBLIC)
            return result
        save = super().save_bearer_token
        try:
            result = lifecycle.exchange(
                request.client,
                request.code,
                getattr(request, "chain_step", None),
                lambda: save(token, request, *args, **kwargs),
                token["access_token"],
                dpop_jkt=jkt,
            )
            if jkt:
                dpop.bind_tokens(token, jkt, public=request.client.client_type == request.client.CLIENT_PUBLIC)
        except lifecycle.CodeLost:
            id_token = self._load_id_token(token["id_token"]) if token.get("id_token") else None
            if id_token is not None:
                id_token.delete()  # saved before the token, now an orphan
            raise errors.InvalidGrantError(request=request) from None
        request.chain_code_consumed = True
        return result

    def invalidate_authorization_code(self, client_id, code, request, *args, **kwargs):
        if getattr(request, "chain_code_consumed", False):
            return  # already consumed with the token, in save_bearer_token
        return super().invalidate_authorization_code(client_id, code, request, *args, **kwargs)

    def validate_bearer_token(self, token, scopes, request):
        """RFC 9449 §7.1: a DPoP-bound token is not a bearer token, wherever DOT checks one
        (userinfo, the review API, introspection by token): only a DPoP request with its
        proof (``chain_grant.oauth.resource``) may use it."""
        if token and dpop.bound_key(token):
            request.oauth2_error = {
                "error": "invalid_token",
                "error_description": "This token is DPoP-bound: present it with the DPoP scheme and a proof.",
            }
            return False
        return super().validate_bearer_token(token, scopes, request)

    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs):
        """DOT's check, plus: a refresh token issued from a revoked step is dead, even if
        a rotation raced the revocation."""
        if not super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            return False
        try:  # a bound refresh token (a public client's) needs a proof by its key
            self._dpop_key(request, bound_to=dpop.bound_key(refresh_token, "refresh"))
        except ChainError as exc:
            raise oauth_error(exc, request) from None
        family = request.refresh_token_instance.token_family
        return not ChainedGrant.objects.filter(token_family=family, revoked_at__isnull=False).exists()


class ChainOAuth2Validator(ChainValidatorMixin, OAuth2Validator):
    """DOT's OAuth2Validator with chain_grant added (for new IdPs; compose the mixin
    into your own validator otherwise)."""


def _all_values(request, name: str) -> list[str]:
    """Every value of a repeatable form parameter (RFC 8707 ``resource``, RFC 8693
    ``audience``): ChainOAuthLibCore passes them all on."""
    return [value for key, value in (getattr(request, "decoded_body", None) or []) if key == name]


def _listed(value) -> list[str]:
    """A space-separated request parameter (``joined_codes``) as a list."""
    return value.split() if isinstance(value, str) else []
