from django.urls import include, path

from tests.dot_idp.resources import documents

urlpatterns = [
    path("accounts/", include("django.contrib.auth.urls")),
    path("o/", include("chain_grant.urls")),  # chain_grant
    path("api/", include("chain_grant.api_urls")),  # chain_grant
    path("documents/", documents),
]
