"""Public name: ``OAUTH2_PROVIDER["OAUTH2_SERVER_CLASS"] = "chain_grant.server.ChainServer"``."""

from .oauth.server import ERROR_HEADERS, ChainServer

__all__ = ["ERROR_HEADERS", "ChainServer"]
