"""Housekeeping functions (chain_grant.housekeeping): expire and purge, batched,
idempotent, safe under live traffic, with counts. Run on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from oauth2_provider.models import get_grant_model, get_refresh_token_model

from chain_grant import signals
from chain_grant.core import lifecycle
from chain_grant.core import retention as housekeeping
from chain_grant.models import ChainedGrant
from tests.factories import build_chain
from tests.helpers import Flow

pytestmark = pytest.mark.django_db
Grant = get_grant_model()


def age(chain_root, *, expires_ago=None, ended_ago=None):
    """Move a whole chain's timestamps into the past."""
    steps = ChainedGrant.objects.chain(chain_root.pk)
    now = timezone.now()
    if expires_ago is not None:
        steps.update(expires=now - expires_ago)
    if ended_ago is not None:
        steps.update(ended_at=now - ended_ago, expired_at=now - ended_ago)


def live_grants(root):
    return Grant.objects.filter(pk__in=ChainedGrant.objects.chain(root.pk).values("grant_id")).count()


@pytest.fixture
def received(request):
    got = []

    def on_expired(sender, count, **kwargs):
        got.append(("expired", count))

    def on_purged(sender, chain_id, **kwargs):
        got.append(("purged", chain_id))

    signals.steps_expired.connect(on_expired)
    signals.chain_purged.connect(on_purged)
    yield got
    signals.steps_expired.disconnect(on_expired)
    signals.chain_purged.disconnect(on_purged)


# --- expire ----------------------------------------------------------------------------


def test_expire_marks_due_steps_and_deletes_their_grants(app, alice, received):
    stale = build_chain(app, alice, 7, code_prefix="stale")
    fresh = build_chain(app, alice, 4, code_prefix="fresh")
    age(stale, expires_ago=timedelta(seconds=1))

    result = housekeeping.expire_steps(batch_size=3)

    assert (result.steps, result.grants, result.batches) == (7, 7, 3)
    assert ChainedGrant.objects.chain(stale.pk).filter(ended_at__isnull=False).count() == 7
    # Honest states: the two steps the chain went on from were handed off, not expired.
    assert ChainedGrant.objects.chain(stale.pk).handed_off().count() == 2
    assert ChainedGrant.objects.chain(stale.pk).filter(expired_at__isnull=False).count() == 5
    assert ChainedGrant.objects.chain(stale.pk).expired().count() == 5
    assert live_grants(stale) == 0
    assert ChainedGrant.objects.chain(fresh.pk).filter(ended_at__isnull=True).count() == 4
    assert live_grants(fresh) == 4
    assert received == [("expired", 3), ("expired", 3), ("expired", 1)]  # once per batch


def test_expire_is_idempotent_and_keeps_ended_steps(app, alice):
    root = build_chain(app, alice, 5)
    exchanged = ChainedGrant.objects.get(subject="agent0")
    ChainedGrant.objects.filter(pk=exchanged.pk).update(exchanged_at=timezone.now(), ended_at=timezone.now())
    age(root, expires_ago=timedelta(minutes=1))
    assert housekeeping.expire_steps().steps == 4  # the exchanged step ended already
    assert housekeeping.expire_steps().steps == 0
    assert ChainedGrant.objects.get(pk=exchanged.pk).expired_at is None


def test_expire_dry_run_counts_only(app, alice):
    root = build_chain(app, alice, 5)
    age(root, expires_ago=timedelta(seconds=1))
    result = housekeeping.expire_steps(dry_run=True)
    assert (result.steps, result.grants) == (5, 5)
    assert not ChainedGrant.objects.filter(ended_at__isnull=False).exists()


def test_expired_steps_are_refused_whether_or_not_marked(flow, alice, planner, make_agent):
    """Expiry is enforced at use time; marking changes state, not the answer."""
    researcher = make_agent("researcher", scopes="read")
    root_code, _ = flow.authorize(alice)
    code, verifier, _ = flow.advance(root_code, planner)
    ChainedGrant.objects.update(expires=timezone.now() - timedelta(seconds=1))
    assert flow.hop(code, researcher.proof(code)).json()["error"] == "invalid_grant"
    housekeeping.expire_steps()
    assert flow.hop(code, researcher.proof(code)).json()["error"] == "invalid_grant"
    assert flow.exchange(code, verifier).json()["error"] == "invalid_grant"


def test_a_batch_killed_midway_is_redone_without_loss_or_double_count(app, alice, monkeypatch):
    """A crash inside a batch rolls that batch back; the next run completes the work.
    Steps of committed batches keep their first marking."""
    root = build_chain(app, alice, 9)
    age(root, expires_ago=timedelta(seconds=1))
    real = housekeeping.get_grant_model
    calls = {"n": 0}

    class Crash(BaseException):
        pass

    class CrashingManager:
        def __init__(self):
            self.objects = self

        def filter(self, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise Crash("worker killed")
            return real().objects.filter(**kwargs)

    monkeypatch.setattr(housekeeping, "get_grant_model", CrashingManager)
    with pytest.raises(Crash):
        housekeeping.expire_steps(batch_size=3)
    first = dict(ChainedGrant.objects.filter(ended_at__isnull=False).values_list("pk", "ended_at"))
    assert len(first) == 3  # batch 1 committed, batch 2 rolled back

    monkeypatch.setattr(housekeeping, "get_grant_model", real)
    assert housekeeping.expire_steps(batch_size=3).steps == 6
    marked = dict(ChainedGrant.objects.filter(ended_at__isnull=False).values_list("pk", "ended_at"))
    assert len(marked) == 9
    assert all(marked[pk] == when for pk, when in first.items())


# --- purge -----------------------------------------------------------------------------


def test_purge_deletes_whole_old_chains_only(app, alice, received):
    old = build_chain(app, alice, 6, code_prefix="old")
    recent = build_chain(app, alice, 3, code_prefix="recent")
    live = build_chain(app, alice, 3, code_prefix="live")
    age(old, ended_ago=timedelta(days=91))
    age(recent, ended_ago=timedelta(days=10))
    age(live, ended_ago=timedelta(days=91))
    ChainedGrant.objects.filter(subject="agent1", root=live).update(ended_at=None, expired_at=None)

    result = housekeeping.purge_chains(retention_days=90)

    assert (result.chains, result.steps) == (1, 6)
    assert not ChainedGrant.objects.chain(old.pk).exists()  # no orphans
    assert ChainedGrant.objects.chain(recent.pk).count() == 3
    assert ChainedGrant.objects.chain(live.pk).count() == 3
    assert received == [("purged", old.pk)]
    assert housekeeping.purge_chains(retention_days=90).chains == 0  # idempotent


def test_purge_in_batches_and_dry_run(app, alice):
    roots = [build_chain(app, alice, 4, code_prefix=f"b{i}") for i in range(5)]
    for root in roots:
        age(root, ended_ago=timedelta(days=100))
    dry = housekeeping.purge_chains(retention_days=90, dry_run=True, batch_size=2)
    assert (dry.chains, dry.steps) == (5, 20)
    assert ChainedGrant.objects.count() == 20
    result = housekeeping.purge_chains(retention_days=90, batch_size=2)
    assert (result.chains, result.steps, result.batches) == (5, 20, 3)
    assert not ChainedGrant.objects.exists()


def test_retention_counts_from_the_last_step_to_end(app, alice):
    root = build_chain(app, alice, 4)
    age(root, ended_ago=timedelta(days=200))
    ChainedGrant.objects.filter(subject="agent2").update(ended_at=timezone.now() - timedelta(days=30))
    assert housekeeping.purge_chains(retention_days=90).chains == 0
    assert housekeeping.purge_chains(retention_days=7).chains == 1


def test_exchange_and_revoke_set_ended_at(flow, alice, planner, make_agent):
    researcher = make_agent("researcher", scopes="read")
    root_code, _ = flow.authorize(alice)
    code, verifier, _ = flow.advance(root_code, planner)
    r_code, _, _ = flow.advance(code, researcher)
    assert flow.exchange(code, verifier).status_code == 200
    planner_step = lifecycle.find_step(code)
    assert planner_step.ended_at == planner_step.exchanged_at
    lifecycle.revoke_subtree(planner_step, "test")
    planner_step.refresh_from_db()
    assert planner_step.ended_at == planner_step.exchanged_at  # the first end counts
    assert lifecycle.find_step(r_code).ended_at == lifecycle.find_step(r_code).revoked_at


# --- commands --------------------------------------------------------------------------


def test_commands_print_counts(app, alice):
    root = build_chain(app, alice, 5)
    age(root, expires_ago=timedelta(seconds=1))
    out = io.StringIO()
    call_command("chain_grant_expire", "--dry-run", stdout=out)
    assert "would mark 5 step(s) expired; 5 DOT grant row(s) deleted" in out.getvalue()
    call_command("chain_grant_expire", "--batch-size", "2", stdout=out)
    assert "marked 5 step(s) expired; 5 DOT grant row(s) deleted in 3 batch(es)" in out.getvalue()
    ChainedGrant.objects.update(ended_at=timezone.now() - timedelta(days=400))
    call_command("chain_grant_purge", "--dry-run", stdout=out)
    assert "would delete 1 chain(s), 5 step(s)" in out.getvalue()
    call_command("chain_grant_purge", "--retention-days", "365", stdout=out)
    assert "deleted 1 chain(s), 5 step(s)" in out.getvalue()
    assert not ChainedGrant.objects.exists()


def test_commands_refuse_a_bad_batch_size():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("chain_grant_expire", "--batch-size", "0")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_purge_running_while_agents_advance_never_touches_a_live_chain(app, alice, make_agent):
    """Agents keep advancing live chains in another thread while purge sweeps in small
    batches: every old chain goes, every live step stays."""
    import threading

    from django.db import connection
    from django.test import Client

    planner, worker = make_agent("planner"), make_agent("worker", scopes="read")
    old = [build_chain(app, alice, 4, code_prefix=f"old{i}") for i in range(12)]
    for root in old:
        age(root, ended_ago=timedelta(days=120))
    flow = Flow(Client(), app)
    root_code, _ = flow.authorize(alice, scope="openid read")
    code, _, first = flow.advance(root_code, planner)
    live_chain = first["chain_id"]
    stop, hops, errors = threading.Event(), [], []

    def advance():
        nonlocal code
        try:
            thread_flow = Flow(Client(), app)
            while not stop.is_set() and len(hops) < 10:
                response = thread_flow.hop(code, worker.proof(code))
                if response.status_code != 200:
                    errors.append(response.content)
                    return
                code = response.json()["authorization_code"]
                hops.append(code)
        finally:
            connection.close()

    thread = threading.Thread(target=advance)
    thread.start()
    purged = 0
    while thread.is_alive():
        purged += housekeeping.purge_chains(retention_days=90, batch_size=2).chains
    thread.join()
    stop.set()
    purged += housekeeping.purge_chains(retention_days=90, batch_size=2).chains

    assert not errors and len(hops) == 10
    assert purged == 12 and not ChainedGrant.objects.filter(root_id__in=[r.pk for r in old]).exists()
    assert ChainedGrant.objects.chain(live_chain).count() == 12  # root, planner and 10 hops


def _wallet_request(app, *, expires, parent=None, step=None):
    from chain_grant.models import WalletRequest

    return WalletRequest.objects.create(
        state=f"s{WalletRequest.objects.count()}",
        nonce="n",
        verifier_id="http://testserver/oauth",
        poll_digest="0" * 64,
        application=app,
        redirect_uri="http://127.0.0.1/cb",
        expires=expires,
        parent=parent,
        step=step,
    )


def test_expire_deletes_wallet_requests_a_day_after_they_expire(app, alice):
    from chain_grant.models import WalletRequest

    now = timezone.now()
    stale = _wallet_request(app, expires=now - timedelta(days=1, minutes=1))
    recent = _wallet_request(app, expires=now - timedelta(hours=2))
    pending = _wallet_request(app, expires=now + timedelta(minutes=5))
    result = housekeeping.expire_steps()
    assert result.wallet_requests == 1
    assert set(WalletRequest.objects.values_list("pk", flat=True)) == {recent.pk, pending.pk}
    assert not WalletRequest.objects.filter(pk=stale.pk).exists()


def test_purge_removes_wallet_requests_pointing_into_a_purged_chain(app, alice):
    """A raw delete of a chain must not trip over wallet requests referencing its steps
    (PostgreSQL checks the foreign keys at commit)."""
    from chain_grant.models import WalletRequest

    old = build_chain(app, alice, 3, code_prefix="wr")
    leaf = ChainedGrant.objects.chain(old.pk).order_by("-depth").first()
    # Not yet a day past expiry, so only the purge can remove them.
    soon = timezone.now() + timedelta(minutes=5)
    _wallet_request(app, expires=soon, parent=old)
    _wallet_request(app, expires=soon, step=leaf)
    kept = _wallet_request(app, expires=soon)
    age(old, ended_ago=timedelta(days=91))
    result = housekeeping.purge_chains(retention_days=90)
    assert (result.chains, result.steps) == (1, 3)
    assert list(WalletRequest.objects.values_list("pk", flat=True)) == [kept.pk]


def test_purge_keeps_a_chain_whose_refresh_token_still_lives(flow, alice, planner):
    """A step ends when its code is exchanged, but its refresh token keeps acting: the
    chain's record stays until that token is revoked, so tokens refreshed from it keep
    their act and revoke_subtree still reaches them."""
    root, _ = flow.authorize(alice, scope="openid read")
    code, verifier, _ = flow.advance(root, planner)
    tokens = flow.exchange(code, verifier).json()
    step = ChainedGrant.objects.get(subject="planner")
    ChainedGrant.objects.filter(root_id=step.root_id).update(
        ended_at=timezone.now() - timedelta(days=91), expired_at=None
    )
    assert housekeeping.purge_chains(retention_days=90).chains == 0
    refreshed = flow.refresh(tokens["refresh_token"]).json()
    assert flow.introspect(refreshed["access_token"])["act"] == {"sub": "planner"}
    get_refresh_token_model().objects.update(revoked=timezone.now())
    assert housekeeping.purge_chains(retention_days=90).chains == 1
