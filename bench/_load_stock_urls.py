"""DOT's own endpoints, as a host without chain_grant mounts them."""

from django.urls import include, path

urlpatterns = [path("oauth/", include("oauth2_provider.urls"))]
