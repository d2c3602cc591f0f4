"""A drop-in replacement for ``oauth2_provider.urls`` (same namespace and names) with
chain_grant's introspection and discovery views. Trailing slashes are optional so
clients written for Boruta's PoC (``/oauth/authorize``, ``/oauth/token``) work too.

    path("oauth/", include("chain_grant.urls")),
"""

from django.urls import path, re_path
from oauth2_provider import urls as dot_urls
from oauth2_provider import views as dot_views

from .oauth import views, wallet_views
from .oauth.views import SECRET_PARAMS  # noqa: F401  (public: never in error reports)

app_name = "oauth2_provider"

_REPLACED = {
    "authorize",
    "token",
    "revoke-token",
    "introspect",
    "device-authorization",
    "user-info",
    "oidc-connect-discovery-info",
}

urlpatterns = [
    re_path(r"^authorize/?$", views.AuthorizationView.as_view(), name="authorize"),
    # The wallet step (SIOPv2 / OpenID4VP direct_post); see chain_grant.core.wallet_step.
    re_path(r"^wallet/response/?$", wallet_views.DirectPostView.as_view(), name="chain-wallet-response"),
    path("wallet/requests/<uuid:request_id>/status", wallet_views.StatusView.as_view(), name="chain-wallet-status"),
    path(
        "wallet/requests/<uuid:request_id>/complete", wallet_views.CompleteView.as_view(), name="chain-wallet-complete"
    ),
    path("wallet/requests/<uuid:request_id>/cancel", wallet_views.CancelView.as_view(), name="chain-wallet-cancel"),
    re_path(r"^token/?$", views.TokenView.as_view(), name="token"),
    re_path(r"^revoke_token/?$", views.RevokeTokenView.as_view(), name="revoke-token"),
    re_path(r"^revoke/?$", views.RevokeTokenView.as_view()),
    re_path(r"^introspect/?$", views.IntrospectTokenView.as_view(), name="introspect"),
    path("device-authorization/", views.DeviceAuthorizationView.as_view(), name="device-authorization"),
    re_path(r"^userinfo/?$", dot_views.UserInfoView.as_view(), name="user-info"),
    re_path(
        r"^\.well-known/openid-configuration/?$",
        views.ConnectDiscoveryInfoView.as_view(),
        name="oidc-connect-discovery-info",
    ),
] + [p for p in dot_urls.urlpatterns if getattr(p, "name", None) not in _REPLACED]
