"""Housekeeping: Celery tasks and the management commands' shared shape, thin
shells over :mod:`chain_grant.core.retention`."""
