"""Public names: ``MIDDLEWARE = ["chain_grant.middleware.RequestGuardMiddleware", ...]`` and,
in wsgi.py, ``application = guard_wsgi(get_wsgi_application())`` (optional, recommended)."""

from .oauth.middleware import RequestGuardMiddleware, guard_wsgi

__all__ = ["RequestGuardMiddleware", "guard_wsgi"]
