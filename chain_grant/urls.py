"""A drop-in replacement for ``oauth2_provider.urls`` (same namespace and names) with
chain_grant's introspection and discovery views. Trailing slashes are optional so
clients written for Boruta's PoC (``/oauth/authorize``, ``/oauth/token``) work too.

    path("oauth/", include("chain_grant.urls")),
"""

from django.urls import re_path
from oauth2_provider import urls as dot_urls
from oauth2_provider import views as dot_views

from . import views
from .views import SECRET_PARAMS  # noqa: F401  (public: never in error reports)

app_name = "oauth2_provider"

_REPLACED = {"authorize", "token", "revoke-token", "introspect", "user-info", "oidc-connect-discovery-info"}

urlpatterns = [
    re_path(r"^authorize/?$", dot_views.AuthorizationView.as_view(), name="authorize"),
    re_path(r"^token/?$", views.TokenView.as_view(), name="token"),
    re_path(r"^revoke_token/?$", views.RevokeTokenView.as_view(), name="revoke-token"),
    re_path(r"^revoke/?$", views.RevokeTokenView.as_view()),
    re_path(r"^introspect/?$", views.IntrospectTokenView.as_view(), name="introspect"),
    re_path(r"^userinfo/?$", dot_views.UserInfoView.as_view(), name="user-info"),
    re_path(
        r"^\.well-known/openid-configuration/?$",
        views.ConnectDiscoveryInfoView.as_view(),
        name="oidc-connect-discovery-info",
    ),
] + [p for p in dot_urls.urlpatterns if getattr(p, "name", None) not in _REPLACED]
