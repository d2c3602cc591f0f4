"""Celery's ``autodiscover_tasks()`` imports ``chain_grant.tasks``; the tasks live in
:mod:`chain_grant.housekeeping.tasks`."""

from .housekeeping.tasks import clear_dot_tokens, expire_steps, purge_chains

__all__ = ["clear_dot_tokens", "expire_steps", "purge_chains"]
