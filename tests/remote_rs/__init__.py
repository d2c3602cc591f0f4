"""A remote resource server, in its own process: the README's ten lines (``urls.py``) on a
minimal Django project (``settings.py``) that knows nothing of chain_grant's models and
reads every token's chain by introspection at the IdP. ``serve.py`` migrates its own
database and serves it; tests/test_remote_resource_server.py starts it."""
