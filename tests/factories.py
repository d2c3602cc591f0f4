"""Building chains directly (no HTTP, no signatures), for size and query-count tests;
running requests together, for concurrency tests."""

import threading
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone
from oauth2_provider.models import get_grant_model

from chain_grant.core import steps, tree
from chain_grant.core.codes import code_digest
from chain_grant.models import ChainedGrant


def build_chain(app, user, size: int, fanout: int = 3, code_prefix: str = "c") -> ChainedGrant:
    """A root from a real DOT grant plus ``size - 1`` agent steps, ``fanout`` per parent;
    every step has its DOT grant row, as after real hops."""
    Grant = get_grant_model()
    expires = timezone.now() + timedelta(minutes=5)
    codes = [f"{code_prefix}-root"] + [f"{code_prefix}{i}" for i in range(size - 1)]
    grants = Grant.objects.bulk_create(
        # DOT's table keeps code digests with chain_grant plugged in (oauth.digest_codes).
        Grant(
            application=app,
            user=user,
            code=code_digest(code),
            redirect_uri="http://127.0.0.1/cb",
            expires=expires,
            scope="read",
        )
        for code in codes
    )
    # bulk_create returns pks on PostgreSQL and SQLite ≥ 3.35
    grant_ids = {code: g.pk for code, g in zip(codes, grants, strict=True)}
    with transaction.atomic():
        root = steps._root_from_grant(app, codes[0])
    nodes = [root]
    for i, code in enumerate(codes[1:]):
        parent = nodes[i // fanout]
        step = ChainedGrant(
            kind="agent",
            code_digest=code_digest(code),
            expires=expires,
            application=app,
            user=user,
            subject=f"agent{i}",
            scope="read",
            grant_id=grant_ids[code],
        )
        nodes.append(tree.append(step, parent))
    return root


def run_together(fn, args_list):
    """Run fn(*args) in one thread each, released at once (a barrier); return the
    results. Each thread closes its database connection (PostgreSQL concurrency tests)."""
    barrier = threading.Barrier(len(args_list))
    results = [None] * len(args_list)

    def worker(i, args):
        try:
            barrier.wait()
            results[i] = fn(*args)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results
