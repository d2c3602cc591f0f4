"""The auditors' REST API: ``path("api/", include("chain_grant.api_urls"))``, with its
OpenAPI schema (``schema/``) and HTML reference (``docs/``). Needs the ``[api]`` extra
and ``rest_framework`` and ``drf_spectacular`` in INSTALLED_APPS (chain_grant.E008)."""

from django.urls import path

from .review import api, api_docs

app_name = "chain_grant_api"

urlpatterns = [
    path("chains/", api.ChainListView.as_view(), name="chain-list"),
    path("chains/<str:chain_id>/", api.ChainTreeView.as_view(), name="chain-tree"),
    path("chains/<str:chain_id>/verify/", api.ChainVerifyView.as_view(), name="chain-verify"),
    path("chains/<str:chain_id>/evidence/", api.ChainEvidenceView.as_view(), name="chain-evidence"),
    path("steps/<str:step_id>/revoke/", api.StepRevokeView.as_view(), name="step-revoke"),
    path("schema/", api_docs.SchemaView.as_view(), name="schema"),
    path("docs/", api_docs.ReferenceView.as_view(), name="docs"),
]
