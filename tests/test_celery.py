"""Housekeeping through Celery: a real worker against the real Redis runs the tasks
from the queue; the beat schedule is what settings say; a worker killed mid-batch
loses and doubles nothing; with Redis down the IdP still serves and refuses stale
codes. Redis: 127.0.0.1:6379 (.ci/run starts it), databases 14 and 15 of it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from kombu.exceptions import OperationalError
from oauth2_provider.models import get_access_token_model, get_grant_model

from chain_grant import tasks
from chain_grant.models import ChainedGrant
from idp_project.celery import app as celery_app
from tests.factories import build_chain

REPO = Path(__file__).resolve().parent.parent
BROKER = "redis://127.0.0.1:6379/15"
KILL_BROKER = "redis://127.0.0.1:6379/14"


def wait_for(predicate, timeout=60, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def use_broker(url, **options):
    """Point the app at another broker, dropping connections cached for the old one."""
    celery_app.conf.update(broker_url=url, **options)
    if celery_app._pool is not None:
        celery_app._pool.force_close_all()
        celery_app._pool = None
    celery_app.amqp._producer_pool = None


def due_chain(app, user, size, prefix):
    root = build_chain(app, user, size, code_prefix=prefix)
    ChainedGrant.objects.chain(root.pk).update(expires=timezone.now() - timedelta(seconds=1))
    return root


@pytest.fixture
def worker():
    """An in-process Celery worker consuming from Redis."""
    use_broker(BROKER, broker_transport_options={"visibility_timeout": 60})
    with celery_app.connection_for_write() as conn:
        conn.default_channel.client.flushdb()
    with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=30):
        yield celery_app
    use_broker(
        django_settings.CELERY_BROKER_URL, broker_transport_options=django_settings.CELERY_BROKER_TRANSPORT_OPTIONS
    )


@pytest.mark.django_db(transaction=True)
def test_worker_runs_expire_purge_and_dot_cleanup_from_the_queue(worker, app, alice):
    stale = due_chain(app, alice, 6, "stale")
    old = build_chain(app, alice, 4, code_prefix="old")
    ChainedGrant.objects.chain(old.pk).update(ended_at=timezone.now() - timedelta(days=120))
    AccessToken = get_access_token_model()
    AccessToken.objects.create(
        user=alice, application=app, token="t", scope="read", expires=timezone.now() - timedelta(days=30)
    )

    tasks.expire_steps.delay(batch_size=4)
    wait_for(
        lambda: ChainedGrant.objects.chain(stale.pk).filter(ended_at__isnull=False).count() == 6, what="expire_steps"
    )
    assert not get_grant_model().objects.filter(pk__in=ChainedGrant.objects.chain(stale.pk).values("grant_id"))

    tasks.purge_chains.delay()
    wait_for(lambda: not ChainedGrant.objects.chain(old.pk).exists(), what="purge_chains")
    assert ChainedGrant.objects.chain(stale.pk).count() == 6  # ended just now: kept

    tasks.clear_dot_tokens.delay()
    wait_for(lambda: not AccessToken.objects.exists(), what="clear_dot_tokens")


def test_beat_schedule_holds_what_settings_say():
    schedule = django_settings.CELERY_BEAT_SCHEDULE
    assert schedule["chain-grant-expire-steps"]["task"] == "chain_grant.expire_steps"
    assert schedule["chain-grant-expire-steps"]["schedule"] == 60.0
    purge = schedule["chain-grant-purge-chains"]
    assert purge["task"] == "chain_grant.purge_chains"
    assert (purge["schedule"].hour, purge["schedule"].minute) == ({3}, {17})  # daily
    assert schedule["dot-clear-expired-tokens"]["task"] == "chain_grant.clear_dot_tokens"
    celery_app.loader.import_default_modules()
    assert {entry["task"] for entry in schedule.values()} <= set(celery_app.tasks)
    assert celery_app.conf.beat_schedule == schedule  # the app reads the CELERY_ namespace


def test_tasks_are_late_acked_and_retry_database_errors():
    for task in (tasks.expire_steps, tasks.purge_chains, tasks.clear_dot_tokens):
        assert task.acks_late and task.reject_on_worker_lost
        assert task.time_limit and task.soft_time_limit
        assert "DatabaseError" in {e.__name__ for e in task.autoretry_for}


@pytest.mark.django_db
def test_redis_down_the_idp_still_serves_and_refuses_stale_codes(flow, alice, planner, settings):
    use_broker("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        with pytest.raises(OperationalError):
            tasks.expire_steps.apply_async(retry=False)  # the broker really is unreachable
        root_code, _ = flow.authorize(alice)
        code, verifier, _ = flow.advance(root_code, planner)
        assert flow.exchange(code, verifier).status_code == 200
        stale_root, _ = flow.authorize(alice)
        stale, stale_verifier, _ = flow.advance(stale_root, planner)
        ChainedGrant.objects.filter(depth=1).update(expires=timezone.now() - timedelta(seconds=1))
        assert flow.exchange(stale, stale_verifier).json()["error"] == "invalid_grant"
    finally:
        use_broker(django_settings.CELERY_BROKER_URL)


def _worker_process(tmp_path):
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.celery_worker_settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": KILL_BROKER,
        "IDP_VAR_DIR": str(tmp_path),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "idp_project",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _blocked_backends(dbname):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'", [dbname]
        )
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_batch_then_rerun_completes(app, alice, tmp_path):
    import psycopg

    root = due_chain(app, alice, 25, "kill")
    dbname = connection.settings_dict["NAME"]
    producer = celery_app.connection_for_write(KILL_BROKER)
    producer.default_channel.client.flushdb()
    db = connection.settings_dict
    locker = psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=dbname)
    first = second = None
    try:
        # Hold DOT's grant table so the worker's first batch stops after marking its steps,
        # inside its transaction: that is where we kill it.
        locker.execute(f"LOCK TABLE {get_grant_model()._meta.db_table} IN ACCESS EXCLUSIVE MODE")
        tasks.expire_steps.apply_async(kwargs={"batch_size": 10}, connection=producer)
        first = _worker_process(tmp_path)
        wait_for(lambda: _blocked_backends(dbname) >= 1, what="the worker to block mid-batch")
        first.kill()
        first.wait(30)
        locker.rollback()
        wait_for(lambda: _blocked_backends(dbname) == 0, what="the killed worker's transaction to end")
        assert not ChainedGrant.objects.filter(ended_at__isnull=False).exists()  # its batch rolled back

        second = _worker_process(tmp_path)  # the unacknowledged task comes back to it
        wait_for(
            lambda: ChainedGrant.objects.chain(root.pk).filter(ended_at__isnull=False).count() == 25,
            timeout=90,
            what="the rerun to complete",
        )
    finally:
        locker.close()
        producer.release()
        for proc in (first, second):
            if proc and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    steps = ChainedGrant.objects.chain(root.pk)
    assert all(s.expired_at in (None, s.ended_at) for s in steps)  # marked once, by one run
    assert {s.state for s in steps} <= {"expired", "handed_off"}
    assert not get_grant_model().objects.filter(pk__in=steps.values("grant_id")).exists()
