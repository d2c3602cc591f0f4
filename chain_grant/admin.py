"""Django's admin autodiscovery imports ``chain_grant.admin``; the screens live in
:mod:`chain_grant.review.admin`."""

from .review import admin  # noqa: F401  (registers the model admins)
