"""A URLconf that mounts DOT's own urls (the likely mistake chain_grant.W006 reports)."""

from django.urls import include, path

urlpatterns = [path("o/", include("oauth2_provider.urls"))]
