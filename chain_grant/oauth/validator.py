"""``ChainValidatorMixin``: the chain's hooks in a DOT validator. A thin adapter:
each hook calls :mod:`chain_grant.core` and turns a ChainError into an OAuth error.

    class MyValidator(ChainValidatorMixin, MyOAuth2Validator): ...   # mixin first
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oauth2_provider.models import get_application_model, get_grant_model
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.settings import oauth2_settings
from oauthlib.oauth2.rfc6749 import errors

from ..core import lifecycle, policy, steps
from ..core.errors import ChainError
from ..models import ChainedGrant
from ..settings import chain_grant_settings
from .digest_codes import DigestCodesMixin, stored
from .errors import oauth_error
from .grant import GRANT_TYPE
from .hardening import DOTHardeningMixin


class ChainValidatorMixin(DOTHardeningMixin, DigestCodesMixin):
    """Adds the code_chain grant, chain steps at authorize, chained-code exchange and
    replay handling to a DOT validator. Put it first in the bases."""

    is_pkce_required: Callable[[str, Any], bool]  # the DOT validator's (the mixin's partner)

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

    def save_authorization_code(self, client_id, code, request, *args, **kwargs):
        """With ``code=<previous>`` (see views.AuthorizationView) the new code is a
        ``user`` child of the previous step; otherwise DOT's (the IdP's) own."""
        parent_code = getattr(request, "chain_parent_code", None)
        if parent_code is None:
            return super().save_authorization_code(client_id, code, request, *args, **kwargs)
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
                steps.add_user_step(request.client, parent_code, request.user, save_grant, " ".join(request.scopes))
            except ChainError as exc:
                raise ChainError(f"{steps.PREVIOUS_CODE_REFUSED} {exc.description}", "invalid_request") from None
        except ChainError as exc:
            raise oauth_error(exc, request) from None

    def validate_grant_type(self, client_id, grant_type, client, request, *args, **kwargs):
        if grant_type == GRANT_TYPE:
            # A hop is an authorization-code client's act: the IdP's own policy for
            # authorization_code (super()) must allow it too, then chain_grant's switch.
            return super().validate_grant_type(
                client_id, "authorization_code", client, request, *args, **kwargs
            ) and policy.client_may_chain(request.client)
        return super().validate_grant_type(client_id, grant_type, client, request, *args, **kwargs)

    def get_chain_audiences(self, request) -> list[str]:
        """Accepted proof ``aud`` values: CHAIN_GRANT["PROOF_AUDIENCES"], else the issuer."""
        configured = chain_grant_settings.PROOF_AUDIENCES
        if isinstance(configured, str):  # a misconfiguration (chain_grant.E110), never a list of characters
            configured = [configured]
        return list(configured) or [oauth2_settings.oidc_issuer(request)]

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
            )
        except ChainError as exc:
            raise oauth_error(exc, request) from None

    # -- exchanging a chained code (grant_type=authorization_code) -------------------

    def validate_code(self, client_id, code, client, request, *args, **kwargs):
        try:
            request.chain_step = lifecycle.step_for_exchange(code, client)
        except ChainError:
            return False
        return super().validate_code(client_id, code, client, request, *args, **kwargs)

    def save_bearer_token(self, token, request, *args, **kwargs):
        if request.grant_type != "authorization_code":
            return super().save_bearer_token(token, request, *args, **kwargs)
        save = super().save_bearer_token
        try:
            result = lifecycle.exchange(
                request.client,
                request.code,
                getattr(request, "chain_step", None),
                lambda: save(token, request, *args, **kwargs),
                token["access_token"],
            )
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

    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs):
        """DOT's check, plus: a refresh token issued from a revoked step is dead, even if
        a rotation raced the revocation."""
        if not super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            return False
        family = request.refresh_token_instance.token_family
        return not ChainedGrant.objects.filter(token_family=family, revoked_at__isnull=False).exists()


class ChainOAuth2Validator(ChainValidatorMixin, OAuth2Validator):
    """DOT's OAuth2Validator with chain_grant added (for new IdPs; compose the mixin
    into your own validator otherwise)."""


def _listed(value) -> list[str]:
    """A space-separated request parameter (``joined_codes``) as a list."""
    return value.split() if isinstance(value, str) else []
