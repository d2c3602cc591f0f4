"""DOT views with the chain added: introspection shows the actor chain, and OIDC
discovery lists the grant types (including ``code_chain``)."""

from __future__ import annotations

import hashlib
import json

from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from oauth2_provider import views as dot_views
from oauth2_provider.models import get_access_token_model
from oauth2_provider.settings import oauth2_settings

from . import chains

# Never in error reports (DEBUG pages, mail_admins, Sentry): codes, proofs, secrets.
SECRET_PARAMS = ("client_secret", "code", "authorization_code", "id_token", "code_verifier", "refresh_token")


def chain_claims(access_token) -> dict:
    """``chain_id``, ``chain_depth`` and ``act`` for a token issued from a chain step."""
    step = chains.step_for_token(access_token)
    if step is None:
        return {}
    claims = {"chain_id": str(step.root_id), "chain_depth": step.depth}
    act = chains.actor_claim(step)
    if act:
        claims["act"] = act
    return claims


@method_decorator(sensitive_post_parameters("token"), name="dispatch")
class IntrospectTokenView(dot_views.IntrospectTokenView):
    """RFC 7662 introspection (DOT's) plus ``chain_id``, ``chain_depth`` and ``act``."""

    @staticmethod
    def get_token_response(token_value=None):
        response = dot_views.IntrospectTokenView.get_token_response(token_value)
        if response.status_code != 200:
            return response
        data = json.loads(response.content)
        if not data.get("active"):
            return response
        checksum = hashlib.sha256(token_value.encode("utf-8")).hexdigest()
        token = get_access_token_model().objects.filter(token_checksum=checksum).first()
        extra = chain_claims(token) if token else {}
        if not extra:
            return response
        data.update(extra)
        response.content = json.dumps(data)
        return response


class ConnectDiscoveryInfoView(dot_views.ConnectDiscoveryInfoView):
    """OIDC discovery (DOT's) plus ``grant_types_supported``, introspection and
    revocation endpoints, so agents can find ``code_chain``."""

    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        data = json.loads(response.content)
        data["grant_types_supported"] = list(oauth2_settings.OAUTH2_GRANT_TYPES_SUPPORTED)
        for key, name in (("introspection_endpoint", "introspect"), ("revocation_endpoint", "revoke-token")):
            url = self._get_endpoint_url(request, name)
            if url:
                data[key] = url
        response.content = json.dumps(data)
        return response


class TokenView(dot_views.TokenView):
    """DOT's token endpoint with codes, proofs, verifiers and refresh tokens hidden from
    error reports. DOT marks only ``password`` and ``client_secret``, on an inner method,
    which overwrites any ``sensitive_post_parameters`` wrapped around the view; so the
    full list is set here, after DOT's decorator ran."""

    def create_token_response(self, request):
        request.sensitive_post_parameters = ("password", *SECRET_PARAMS)
        return super().create_token_response(request)


@method_decorator(sensitive_post_parameters("token"), name="dispatch")
class RevokeTokenView(dot_views.RevokeTokenView):
    """RFC 7009 revocation (DOT's), with the token hidden from error reports."""
