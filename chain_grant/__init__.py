"""chain_grant: an auditable authorization code chain for django-oauth-toolkit IdPs."""

__version__ = "0.1.0"
