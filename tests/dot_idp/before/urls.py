from django.urls import include, path

from tests.dot_idp.resources import documents

urlpatterns = [
    path("accounts/", include("django.contrib.auth.urls")),
    path("o/", include("oauth2_provider.urls")),
    path("documents/", documents),
]
