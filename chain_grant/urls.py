"""A drop-in replacement for ``oauth2_provider.urls``: DOT's URL paths and names, in
DOT's groups, with chain_grant's views where the chain needs them (authorize, token,
revocation, introspection, both discovery documents) and the wallet step's endpoints.

    path("o/", include("chain_grant.urls")),          # everything DOT's urls has

or, like DOT, only the groups the IdP serves (leaving out the management pages)::

    from chain_grant import urls as chain_urls
    path("o/", include((chain_urls.base_urlpatterns + chain_urls.oidc_urlpatterns, "oauth2_provider")))

``poc_urlpatterns`` (opt-in) adds the paths clients of Boruta's proof of concept call,
without the trailing slash (``/oauth/authorize``, ``/oauth/token``, ``/oauth/revoke``);
they carry no names, so ``reverse()`` and discovery keep DOT's paths.
"""

from django.urls import URLPattern, path
from oauth2_provider import urls as dot_urls
from oauth2_provider import views as dot_views

from .oauth import views, wallet_views
from .oauth.views import SECRET_PARAMS  # noqa: F401  (public: never in error reports)

app_name = "oauth2_provider"

# DOT's name -> chain_grant's view for it; every other pattern is DOT's, unchanged.
_VIEWS = {
    "authorize": views.AuthorizationView,
    "token": views.TokenView,
    "revoke-token": views.RevokeTokenView,
    "introspect": views.IntrospectTokenView,
    "device-authorization": views.DeviceAuthorizationView,
    "oidc-connect-discovery-info": views.ConnectDiscoveryInfoView,
    "oauth-server-metadata": views.OAuthServerMetadataView,
    "oauth-server-metadata-issuer": views.OAuthServerMetadataView,
}


def _ours(patterns):
    """DOT's patterns (the same route object, the same name), each served by chain_grant's
    view where it has one."""
    return [
        URLPattern(p.pattern, _VIEWS[p.name].as_view(), p.default_args, p.name) if p.name in _VIEWS else p
        for p in patterns
    ]


# The wallet step (SIOPv2 / OpenID4VP direct_post); see chain_grant.core.wallet_step.
wallet_urlpatterns = [
    path("wallet/response/", wallet_views.DirectPostView.as_view(), name="chain-wallet-response"),
    path("wallet/requests/<uuid:request_id>/status", wallet_views.StatusView.as_view(), name="chain-wallet-status"),
    path(
        "wallet/requests/<uuid:request_id>/complete", wallet_views.CompleteView.as_view(), name="chain-wallet-complete"
    ),
    path("wallet/requests/<uuid:request_id>/cancel", wallet_views.CancelView.as_view(), name="chain-wallet-cancel"),
]

# The public keys that verify the chain's signed record (core.record).
record_urlpatterns = [path("chain/jwks/", views.RecordKeysView.as_view(), name="chain-record-jwks")]

metadata_urlpatterns = _ours(dot_urls.metadata_urlpatterns)
base_urlpatterns = _ours(dot_urls.base_urlpatterns) + wallet_urlpatterns + record_urlpatterns
management_urlpatterns = list(dot_urls.management_urlpatterns)
oidc_urlpatterns = _ours(dot_urls.oidc_urlpatterns)
dcr_urlpatterns = list(dot_urls.dcr_urlpatterns)

poc_urlpatterns = [
    path("authorize", views.AuthorizationView.as_view()),
    path("token", views.TokenView.as_view()),
    path("revoke", views.RevokeTokenView.as_view()),
    path("revoke_token", views.RevokeTokenView.as_view()),
    path("introspect", views.IntrospectTokenView.as_view()),
    path("userinfo", dot_views.UserInfoView.as_view()),
    path("wallet/response", wallet_views.DirectPostView.as_view()),
]

# The same groups, in the same order, as oauth2_provider.urls.urlpatterns.
urlpatterns = metadata_urlpatterns + base_urlpatterns + management_urlpatterns + oidc_urlpatterns + dcr_urlpatterns
