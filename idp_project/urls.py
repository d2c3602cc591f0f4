from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.urls import URLPattern, include, path
from django.views.generic import TemplateView

from chain_grant import urls as chain_urls
from idp_project import health

# DOT's groups as chain_grant serves them, plus the PoC's slashless paths (/oauth/token);
# DOT's client-management pages (applications/, authorized_tokens/) are for staff only.
oauth_urlpatterns = (
    chain_urls.metadata_urlpatterns
    + chain_urls.base_urlpatterns
    + [URLPattern(p.pattern, staff_member_required(p.callback), name=p.name) for p in chain_urls.management_urlpatterns]
    + chain_urls.oidc_urlpatterns
    + chain_urls.poc_urlpatterns
)

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    # DOT's endpoints with chain_grant's introspection and discovery (drop-in for oauth2_provider.urls).
    path("oauth/", include((oauth_urlpatterns, "oauth2_provider"))),
    # The demo web wallet (SIOPv2 self-issued id_tokens from a key kept in the browser).
    path("wallet/", include("chain_grant.wallet_urls")),
    # The demo's resource: answers published with a chain token (scope email).
    path("api/answers/", include("idp_project.answers")),
    # The auditors' REST API, its OpenAPI schema (api/schema/) and reference (api/docs/).
    path("api/", include("chain_grant.api_urls")),
    # Probes and Prometheus (idp_project.health.ProbeMiddleware answers these first; see docs/deploy.md).
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
]
