"""The OAuth glue on DOT and oauthlib: the server class, the ``code_chain`` grant,
the validator mixins, the backend, and the views at DOT's endpoints. Each
translates an OAuth request into a call to :mod:`chain_grant.core` and its
ChainError back into an OAuth error."""
