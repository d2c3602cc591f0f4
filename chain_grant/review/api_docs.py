"""The review API's OpenAPI schema and its HTML reference (drf-spectacular's views),
served by ``chain_grant.api_urls`` itself: the IdP sets no DRF or drf-spectacular
setting for them, and the schema holds chain_grant's endpoints only, whatever else the
IdP's URLconf serves."""

from __future__ import annotations

from django.conf import settings
from django.urls import NoReverseMatch, reverse
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from .. import __version__
from .api import READ_SCOPE, REVOKE_SCOPE, BaseView


def only_chain_grant(endpoints, **kwargs):
    """drf-spectacular preprocessing hook: keep the review API's own views."""
    return [e for e in endpoints if isinstance(getattr(e[3], "cls", None), type) and issubclass(e[3].cls, BaseView)]


def _url(name: str) -> str:
    try:
        return reverse(f"oauth2_provider:{name}")
    except NoReverseMatch:  # DOT mounted elsewhere: the flows still name the scopes
        return ""


class SchemaView(SpectacularAPIView):
    """``GET schema/``: OpenAPI 3 (YAML; ``?format=json`` for JSON)."""

    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        flow = {
            "authorizationUrl": _url("authorize"),
            "tokenUrl": _url("token"),
            "refreshUrl": _url("token"),
            "scopes": {READ_SCOPE: "Review chains (staff)", REVOKE_SCOPE: "Revoke steps (staff)"},
        }
        self.custom_settings = {
            "TITLE": "chain_grant review API",
            "DESCRIPTION": "Find, read, verify, export and revoke authorization code chains.",
            "VERSION": __version__,
            "PREPROCESSING_HOOKS": ["chain_grant.review.api_docs.only_chain_grant"],
            # The schemes the operations' security requirements name (api.READ_AUTH, REVOKE_AUTH).
            "APPEND_COMPONENTS": {
                "securitySchemes": {
                    "oauth2": {"type": "oauth2", "flows": {"authorizationCode": flow}},
                    "cookieAuth": {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME},
                }
            },
        }
        return super().get(request, *args, **kwargs)


class ReferenceView(SpectacularRedocView):
    """``GET docs/``: the HTML API reference (ReDoc, read-only: no "try it" button that
    could revoke). Its script comes from drf-spectacular's REDOC_DIST (a CDN by default;
    'SIDECAR' with drf-spectacular-sidecar serves it from the IdP)."""

    url_name = "chain_grant_api:schema"
    title = "chain_grant review API"
