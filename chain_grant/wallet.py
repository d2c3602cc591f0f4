"""Deprecated alias of :mod:`chain_grant.client.wallet` (the headless wallet moved
into the agent SDK in 0.2); import from there."""

from .client.wallet import HeadlessWallet, check_response_uri, parse_request_url, request_url_from_html

__all__ = ["HeadlessWallet", "check_response_uri", "parse_request_url", "request_url_from_html"]
