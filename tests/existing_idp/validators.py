"""An "existing IdP's" own OAuth2Validator, and the same validator with chain_grant
composed in, as the chain_grant docs tell an IdP to do::

    class MyValidator(ChainValidatorMixin, MyOAuth2Validator): ...

``AcmeValidator`` knows nothing about chain_grant. It customises DOT the ways real
IdPs do: an extra OIDC claim, a scope policy, something added to token responses,
and a client policy in ``validate_grant_type``. ``CALLS`` counts its hooks so the
tests can tell they still run when the mixin wraps them.
"""

from __future__ import annotations

from collections import Counter

from oauth2_provider.oauth2_validators import OAuth2Validator

from chain_grant.validators import ChainValidatorMixin

CALLS: Counter[str] = Counter()

TENANT = "acme"
FORBIDDEN_SCOPE = "forbidden"
SUSPENDED_PREFIX = "suspended-"


class AcmeValidator(OAuth2Validator):
    # The custom claim is released with the openid scope (DOT drops claims that
    # have no entry here).
    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "acme_tenant": "openid"}

    def get_additional_claims(self, request):
        CALLS["get_additional_claims"] += 1
        return {"acme_tenant": TENANT}

    def validate_scopes(self, client_id, scopes, client, request, *args, **kwargs):
        CALLS["validate_scopes"] += 1
        if FORBIDDEN_SCOPE in scopes:
            return False
        return super().validate_scopes(client_id, scopes, client, request, *args, **kwargs)

    def validate_grant_type(self, client_id, grant_type, client, request, *args, **kwargs):
        CALLS["validate_grant_type"] += 1
        if request.client.client_id.startswith(SUSPENDED_PREFIX):
            return False
        return super().validate_grant_type(client_id, grant_type, client, request, *args, **kwargs)

    def validate_code(self, client_id, code, client, request, *args, **kwargs):
        CALLS["validate_code"] += 1
        return super().validate_code(client_id, code, client, request, *args, **kwargs)

    def save_bearer_token(self, token, request, *args, **kwargs):
        CALLS["save_bearer_token"] += 1
        result = super().save_bearer_token(token, request, *args, **kwargs)
        token["acme_tenant"] = TENANT  # oauthlib serialises this dict as the response body
        return result


class AcmeChainValidator(ChainValidatorMixin, AcmeValidator):
    """The IdP's validator with chain_grant added (the mixin first, so it wraps)."""
