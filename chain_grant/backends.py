"""Public name: ``OAUTH2_PROVIDER["OAUTH2_BACKEND_CLASS"] = "chain_grant.backends.ChainOAuthLibCore"``."""

from .oauth.backend import ChainOAuthLibCore

__all__ = ["ChainOAuthLibCore"]
