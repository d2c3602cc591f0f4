"""Celery tasks: thin wrappers around :mod:`chain_grant.core.retention`.

``acks_late``: a worker killed mid-task leaves the message to be redelivered, and
each batch is its own transaction, so a rerun completes the work without losing or
double-counting a step. Database errors are retried with backoff.
"""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError

from ..core import retention as housekeeping

TASK_OPTIONS = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (DatabaseError,),
    "retry_backoff": True,
    "retry_kwargs": {"max_retries": 5},
    "soft_time_limit": 240,
    "time_limit": 300,
    "ignore_result": True,
}


@shared_task(name="chain_grant.expire_steps", **TASK_OPTIONS)
def expire_steps(batch_size: int | None = None) -> dict:
    return vars(housekeeping.expire_steps(batch_size=batch_size))


@shared_task(name="chain_grant.purge_chains", **{**TASK_OPTIONS, "soft_time_limit": 3000, "time_limit": 3600})
def purge_chains(batch_size: int | None = None, retention_days: int | None = None) -> dict:
    return vars(housekeeping.purge_chains(batch_size=batch_size, retention_days=retention_days))


@shared_task(name="chain_grant.clear_dot_tokens", **TASK_OPTIONS)
def clear_dot_tokens() -> None:
    """DOT's own ``cleartokens`` (expired access/refresh tokens, grants, id tokens)."""
    from oauth2_provider.models import clear_expired

    clear_expired()
