"""Corp's OAuth2Validator: the claims its apps read, and two policies of its own."""

from oauth2_provider.oauth2_validators import OAuth2Validator

from chain_grant.validators import ChainValidatorMixin  # chain_grant

ADMIN_CONSOLE = "corp-console"  # the one client that may ask for the admin scope
SUSPENDED = "(suspended)"  # an Application whose name ends so gets no token


class CorpValidator(ChainValidatorMixin, OAuth2Validator):  # chain_grant
    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "department": "profile"}

    def get_additional_claims(self, request):
        user = request.user
        return {"email": user.email, "name": user.get_full_name(), "department": "research"}

    def validate_scopes(self, client_id, scopes, client, request, *args, **kwargs):
        if "admin" in scopes and client_id != ADMIN_CONSOLE:
            return False
        return super().validate_scopes(client_id, scopes, client, request, *args, **kwargs)

    def validate_grant_type(self, client_id, grant_type, client, request, *args, **kwargs):
        if request.client.name.endswith(SUSPENDED):
            return False
        return super().validate_grant_type(client_id, grant_type, client, request, *args, **kwargs)
