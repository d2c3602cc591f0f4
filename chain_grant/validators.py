"""Validator classes for DOT: ``ChainValidatorMixin`` composes with an IdP's own
``OAuth2Validator`` subclass; ``ChainOAuth2Validator`` is the ready-made one.

    OAUTH2_PROVIDER["OAUTH2_VALIDATOR_CLASS"] = "chain_grant.validators.ChainOAuth2Validator"
    # or, keeping your own:  class MyValidator(ChainValidatorMixin, MyOAuth2Validator): ...
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

from django.db import router, transaction
from oauth2_provider.models import AbstractApplication, get_access_token_model, get_grant_model
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.settings import oauth2_settings
from oauthlib.oauth2.rfc6749 import errors

from . import chains
from .errors import ChainError
from .grants import GRANT_TYPE
from .models import ChainClient, ChainedGrant
from .settings import chain_grant_settings

_OAUTH_ERRORS = {
    "invalid_grant": errors.InvalidGrantError,
    "invalid_request": errors.InvalidRequestError,
    "invalid_scope": errors.InvalidScopeError,
    "unauthorized_client": errors.UnauthorizedClientError,
}


def oauth_error(exc: ChainError, request) -> errors.OAuth2Error:
    return _OAUTH_ERRORS.get(exc.error, errors.InvalidGrantError)(description=exc.description, request=request)


def client_may_chain(application) -> bool:
    """code_chain is for authorization-code clients that an operator enabled."""
    if not application.allows_grant_type(AbstractApplication.GRANT_AUTHORIZATION_CODE):
        return False
    if chain_grant_settings.ENABLE_FOR_ALL_CLIENTS:
        return not ChainClient.objects.filter(application=application, code_chain_enabled=False).exists()
    return ChainClient.objects.filter(application=application, code_chain_enabled=True).exists()


class _Lost(Exception):
    """This exchange lost the code: consumed, revoked or exchanged by another request."""


class ChainValidatorMixin:
    """Adds the code_chain grant, chained-code exchange and replay handling to a DOT
    validator. Put it first in the bases so its methods wrap the IdP's."""

    # -- the user step: authorize with code=<previous> ------------------------------------

    def save_authorization_code(self, client_id, code, request, *args, **kwargs):
        """With ``code=<previous>`` on the authorize request (see views.AuthorizationView),
        the new code is a ``user`` child of the previous step; otherwise DOT's."""
        parent_code = getattr(request, "chain_parent_code", None)
        if parent_code is None:
            return super().save_authorization_code(client_id, code, request, *args, **kwargs)
        if getattr(request, "chain_parent_code_count", 1) > 1:  # the GET refuses it; a crafted POST too
            raise errors.InvalidRequestError(description="Duplicate code parameter.", request=request)
        if not client_may_chain(request.client):
            raise errors.UnauthorizedClientError(description="This client may not continue chains.", request=request)
        try:  # the GET refuses it; DOT's form carries it in a hidden field
            chains.refuse_resource(getattr(request, "resource", None) or [])
        except ChainError as exc:
            raise errors.CustomOAuth2Error(exc.error, description=exc.description, request=request) from None
        save = super().save_authorization_code

        def save_grant():
            save(client_id, code, request, *args, **kwargs)
            return get_grant_model().objects.get(code=code["code"], application=request.client)

        try:
            chains.add_user_step(
                request.client, parent_code, request.user, save_grant, requested_scope=" ".join(request.scopes)
            )
        except ChainError as exc:
            raise errors.InvalidRequestError(
                description=f"{chains.PREVIOUS_CODE_REFUSED} {exc.description}", request=request
            ) from None

    # oauthlib asks these for prompt=none with scope openid; DOT 3.4.1 implements neither
    # (NotImplementedError: an HTTP 500 for any prompt=none OIDC request). The view
    # decides instead: DOT's handle_no_permission answers login_required, and
    # chain_grant's AuthorizationView answers consent_required where DOT would show a
    # page. An IdP's own implementation wins.
    def validate_silent_login(self, request):
        try:
            return super().validate_silent_login(request)
        except NotImplementedError:
            return True

    def validate_silent_authorization(self, request):
        try:
            return super().validate_silent_authorization(request)
        except NotImplementedError:
            return True

    # -- code_chain ------------------------------------------------------------------

    def validate_grant_type(self, client_id, grant_type, client, request, *args, **kwargs):
        if grant_type == GRANT_TYPE:
            # A hop is an authorization-code client's act: the IdP's own policy for
            # authorization_code (super()) must allow it too, then chain_grant's switch.
            return super().validate_grant_type(
                client_id, "authorization_code", client, request, *args, **kwargs
            ) and client_may_chain(request.client)
        return super().validate_grant_type(client_id, grant_type, client, request, *args, **kwargs)

    def get_chain_audiences(self, request) -> list[str]:
        """Accepted proof ``aud`` values: CHAIN_GRANT["PROOF_AUDIENCES"], else the issuer."""
        return list(chain_grant_settings.PROOF_AUDIENCES) or [oauth2_settings.oidc_issuer(request)]

    def advance_chain(self, request) -> dict:
        """Run one agent hop and return the token-endpoint response body."""
        try:
            step, code = chains.advance_by_agent(
                application=request.client,
                parent_code=request.authorization_code,
                proof=request.id_token,
                audiences=self.get_chain_audiences(request),
                scope=request.scope,
                code_challenge=getattr(request, "code_challenge", None),
                code_challenge_method=getattr(request, "code_challenge_method", None),
                pkce_required=self.is_pkce_required(request.client_id, request),
            )
        except ChainError as exc:
            raise oauth_error(exc, request) from None
        return {
            "authorization_code": code,
            "expires_in": chain_grant_settings.CODE_EXPIRE_SECONDS,
            "scope": step.scope,
            "chain_id": str(step.root_id),
            "depth": step.depth,
        }

    # -- exchanging a chained code (grant_type=authorization_code) -------------------

    def get_authorization_code_scopes(self, client_id, code, redirect_uri, request):
        # oauthlib's OIDC dispatcher asks this before validate_code; DOT would query
        # (and on PostgreSQL crash on) an implausible code such as one with a NUL byte.
        if not chains.plausible_code(code or ""):
            return []
        return super().get_authorization_code_scopes(client_id, code, redirect_uri, request)

    def validate_code(self, client_id, code, client, request, *args, **kwargs):
        if not chains.plausible_code(code):
            return False
        step = chains.find_step(code)
        if step is not None:
            if step.exchanged_at and step.application_id == client.pk:
                chains.handle_replay(step)
                return False
            try:
                chains.check_exchangeable(step, client)
            except ChainError:
                return False
            request.chain_step = step
        return super().validate_code(client_id, code, client, request, *args, **kwargs)

    # DOT re-reads the Grant in these; a parallel exchange may have consumed it since
    # validate_code (DoesNotExist, an HTTP 500). That request lost the race: a replay.
    def get_code_challenge(self, code, request):
        with self._consumed_is_replay(code, request):
            return super().get_code_challenge(code, request)

    def get_code_challenge_method(self, code, request):
        with self._consumed_is_replay(code, request):
            return super().get_code_challenge_method(code, request)

    def confirm_redirect_uri(self, client_id, code, redirect_uri, client, request, *args, **kwargs):
        with self._consumed_is_replay(code, request):
            return super().confirm_redirect_uri(client_id, code, redirect_uri, client, request, *args, **kwargs)

    @contextmanager
    def _consumed_is_replay(self, code, request):
        try:
            yield
        except get_grant_model().DoesNotExist:
            step = chains.find_step(code)
            if step is not None and step.exchanged_at:
                chains.handle_replay(step)
            raise errors.InvalidGrantError(request=request) from None

    def save_bearer_token(self, token, request, *args, **kwargs):
        if request.grant_type != "authorization_code":
            return super().save_bearer_token(token, request, *args, **kwargs)
        try:
            with transaction.atomic(using=router.db_for_write(ChainedGrant)):
                # Consume the code under a row lock, in the token's own transaction: one
                # token per code, and no hop can chain the code in between (the hop's
                # root_from_grant locks the same row).
                grant = (
                    get_grant_model().objects.select_for_update()
                    .filter(code=request.code, application=request.client).first()
                )
                if grant is None:
                    raise _Lost
                # A chained code's step was found by validate_code; a plain code may have
                # become a chain root since (a hop before our lock), so look again.
                step = getattr(request, "chain_step", None) or chains.find_step(request.code)
                result = super().save_bearer_token(token, request, *args, **kwargs)
                if step is not None and not chains.record_exchange(step, *self._issued(token)):
                    raise _Lost
                get_grant_model().objects.filter(pk=grant.pk).delete()
        except _Lost:
            self._discard_id_token(token)  # saved before us, now an orphan
            step = chains.find_step(request.code)
            if step is not None and step.exchanged_at:
                chains.handle_replay(step)
            raise errors.InvalidGrantError(request=request) from None
        request.chain_code_consumed = True
        return result

    def invalidate_authorization_code(self, client_id, code, request, *args, **kwargs):
        if getattr(request, "chain_code_consumed", False):
            return  # already consumed with the token, in save_bearer_token
        return super().invalidate_authorization_code(client_id, code, request, *args, **kwargs)

    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs):
        """DOT's check, plus: a refresh token issued from a revoked step is dead, even if
        a rotation raced the revocation."""
        if not super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            return False
        family = request.refresh_token_instance.token_family
        return not ChainedGrant.objects.filter(token_family=family, revoked_at__isnull=False).exists()

    def _load_application(self, client_id, request):
        # psycopg 3 raises DataError (not the ValueError DOT expects) for a NUL byte.
        if client_id and "\x00" in client_id:
            return None
        return super()._load_application(client_id, request)

    @staticmethod
    def _issued(token) -> tuple:
        """(access token pk, refresh token family) of the token just saved."""
        checksum = hashlib.sha256(token["access_token"].encode("utf-8")).hexdigest()
        return (
            get_access_token_model().objects.filter(token_checksum=checksum)
            .values_list("pk", "refresh_token__token_family").first()
        )

    def _discard_id_token(self, token) -> None:
        id_token = self._load_id_token(token["id_token"]) if token.get("id_token") else None
        if id_token is not None:
            id_token.delete()


class ChainOAuth2Validator(ChainValidatorMixin, OAuth2Validator):
    """DOT's OAuth2Validator with chain_grant added."""
