from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView

from idp_project import health

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    # DOT's endpoints with chain_grant's introspection and discovery (drop-in for oauth2_provider.urls).
    path("oauth/", include("chain_grant.urls")),
    # The demo web wallet (SIOPv2 self-issued id_tokens from a key kept in the browser).
    path("wallet/", include("chain_grant.wallet_urls")),
    # The demo's resource: answers published with a chain token (scope email).
    path("api/answers/", include("idp_project.answers")),
    # The auditors' REST API and its OpenAPI schema.
    path("api/", include("chain_grant.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Probes and Prometheus (idp_project.health.ProbeMiddleware answers these first; see docs/deploy.md).
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
]
