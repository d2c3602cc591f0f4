"""The auditors' REST API: ``path("api/", include("chain_grant.api_urls"))``."""

from django.urls import path

from .review import api

app_name = "chain_grant_api"

urlpatterns = [
    path("chains/", api.ChainListView.as_view(), name="chain-list"),
    path("chains/<str:chain_id>/", api.ChainTreeView.as_view(), name="chain-tree"),
    path("chains/<str:chain_id>/verify/", api.ChainVerifyView.as_view(), name="chain-verify"),
    path("chains/<str:chain_id>/evidence/", api.ChainEvidenceView.as_view(), name="chain-evidence"),
    path("steps/<str:step_id>/revoke/", api.StepRevokeView.as_view(), name="step-revoke"),
]
