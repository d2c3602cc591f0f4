"""The demo web wallet page (a wallet kept in the browser, for demos and tests).

path("wallet/", include("chain_grant.wallet_urls")),
"""

from django.urls import path

from .oauth import wallet_views

app_name = "chain_grant_wallet"

urlpatterns = [path("", wallet_views.DemoWalletView.as_view(), name="demo")]
