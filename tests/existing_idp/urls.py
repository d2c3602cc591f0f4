"""The existing IdP's URLs: its own accounts pages (idp_project's templates, which
this IdP inherits, link to login/logout) and chain_grant mounted where DOT's docs
mount DOT, under ``o/``, instead of idp_project's ``oauth/``."""

from django.urls import include, path

urlpatterns = [
    path("accounts/", include("django.contrib.auth.urls")),
    path("o/", include("chain_grant.urls")),
]
