"""The scale-out, proven on this machine: two gunicorn instances (deploy/gunicorn.conf.py),
a Celery worker and one beat, on the real PostgreSQL and Redis (database 13), a
throw-away database ``chain_cluster_<pid>``. The agent chat example runs through both
instances in turn; one instance is SIGKILLed after step 4 and the run completes through
the other with no duplicated or lost step; the chain verifies; the worker expires what
passed its ``expires`` and nothing else. The scenario lives in scripts/cluster.py (also
runnable by hand, it prints the figures); it drives the example's conversation through
the test harness (tests/harness/: the AddressPool over the instances, the observed
chat, ``python -m tests.harness.inspect_chain`` for the database's side). Only the
cluster run itself needs PostgreSQL."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from chain_grant.redaction import REDACTED, SECRET_PARAMS

REPO = Path(__file__).resolve().parent.parent


def load_cluster_module():
    spec = importlib.util.spec_from_file_location("cluster_under_test", REPO / "scripts" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.mark.postgres
def test_two_instances_worker_and_beat_survive_losing_an_instance(capsys):
    cluster_module = load_cluster_module()
    cluster = cluster_module.Cluster(os.environ["DATABASE_URL"])
    with cluster:
        assert cluster.db_name == f"chain_cluster_{os.getpid()}"
        assert all(web.alive for web in cluster.webs) and cluster.worker.alive and cluster.beat.alive
        assert len(set(cluster.urls)) == 2
        report = cluster_module.run_scenario(cluster, kill_after=4, kill_index=0)
        survivors = [web.name for web in cluster.webs if web.alive]
        processes = [cluster.webs[1], cluster.worker, cluster.beat]

    # The example's whole conversation: wallet root, 7 agent hops (fan-out 3, one join), alice's consent.
    assert report["steps"] == 9 and report["kinds"] == {"wallet": 1, "agent": 7, "user": 1}
    assert report["killed"]["after_step"] == 4 and survivors == ["web1"]
    assert set(report["requests_by_address"]) == set(cluster.urls)  # the pool's view: both served
    assert report["db_verification"] == {"ok": True, "checked": 9, "first_bad_step": None, "problems": []}
    assert report["api_verification"]["ok"] is True
    assert report["token_requests_by_instance"]["web0"] >= 1  # before the kill: round-robin
    assert report["token_requests_by_instance"]["web1"] > report["token_requests_by_instance"]["web0"]
    # The writer's code was exchanged (the answer was published); every other code expired
    # untouched, and the worker marked all eight: beat every 2 s, codes living 20 s.
    assert report["exchanged"] == 1 and report["expired_by_worker"] == 8
    assert report["lifetimes_s"] == [20]
    assert report["redacted_params_in_logs"] >= 2  # code= of the consent step, response_code= of the wallet
    success = sum(v for labels, v in report["survivor_handoff_metrics"].items() if 'result="success"' in labels)
    assert 1 <= success < 7  # the survivor's share of the seven hand-offs (web0's died with it)

    # Everything stopped, the database is gone, Redis database 13 is empty.
    assert not any(process.alive for process in processes)
    assert not cluster.workdir.exists()
    maintenance = urlsplit(os.environ["DATABASE_URL"])._replace(scheme="postgresql", path="/postgres").geturl()
    with psycopg.connect(maintenance) as connection:
        assert (
            connection.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (cluster.db_name,)).fetchone()[0]
            == 0
        )
    assert redis.Redis.from_url(cluster_module.DEFAULT_REDIS_URL).dbsize() == 0

    with capsys.disabled():  # the figures, in the CI log
        print(
            f"\ncluster: {report['steps']} steps in {report['run_s']} s through {len(cluster.urls)} instances "
            f"(web0 SIGKILLed {report['killed']['at']:.1f} s in, after step 4); "
            f"setup {cluster.timings['setup_s']:.1f} s, boot {cluster.timings['boot_s']:.1f} s; "
            f"{report['expired_by_worker']} steps expired by the worker in {report['expiry_wait_s']} s; "
            f"token requests {report['token_requests_by_instance']}"
        )


def test_cluster_script_refuses_sqlite():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "cluster.py"), "--database-url", "sqlite:///x.db"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "needs PostgreSQL" in result.stderr


def test_the_log_check_knows_every_secret_parameter():
    """The cluster's leak check takes its list from chain_grant.redaction: every
    credential-bearing parameter, plain or percent-encoded in ?next=, unless redacted."""
    leak = load_cluster_module()._UNREDACTED
    for name in SECRET_PARAMS:
        assert leak.search(f"GET /oauth/authorize?state=s&{name}=abc123"), name
        assert leak.search(f"GET /accounts/login/?next=/oauth/authorize%3F{name}%3Dabc123"), name
        assert not leak.search(f"GET /oauth/authorize?{name}={REDACTED}&state=s"), name
    assert not leak.search("GET /oauth/authorize?code_challenge=abc&state=s&nonce=n")
