"""What the database holds of one chain, as JSON on stdout::

    python -m tests.harness.inspect_chain <chain id>

scripts/cluster.py runs it in the cluster's environment (DJANGO_SETTINGS_MODULE,
DATABASE_URL of the throw-away database) after the agent chat: every step with its
parent, kind, actor, code digest prefix, lifetimes and state, the integrity check, how
many steps exist at all and how many DOT grants of expired steps are left.
"""

from __future__ import annotations

import json
import sys
import time


def inspect(chain_id: str) -> dict:
    from oauth2_provider.models import get_grant_model

    from chain_grant.core.integrity import verify_chain
    from chain_grant.models import ChainedGrant

    verification = verify_chain(chain_id)
    rows = ChainedGrant.objects.chain(chain_id).select_related("agent").order_by("depth", "created")
    steps = [
        {
            "id": str(s.id),
            "parent": str(s.parent_id) if s.parent_id else None,
            "depth": s.depth,
            "kind": s.kind,
            "actor": s.agent.identifier if s.agent_id else s.subject,
            "digest8": s.code_digest[:8],
            "created": s.created.timestamp(),
            "expires": s.expires.timestamp(),
            "expired_at": s.expired_at.timestamp() if s.expired_at else None,
            "ended_at": s.ended_at.timestamp() if s.ended_at else None,  # expiry marks it; handed-off steps too
            "state": s.state,
            "exchanged": s.exchanged_at is not None,
            "revoked": s.revoked_at is not None,
            "grant_id": s.grant_id,
        }
        for s in rows
    ]
    grant_ids = [s["grant_id"] for s in steps if s["ended_at"] and not s["exchanged"] and s["grant_id"]]
    return {
        "verification": {
            "ok": verification.ok,
            "checked": verification.checked,
            "first_bad_step": str(verification.first_bad_step) if verification.first_bad_step else None,
            "problems": verification.problems,
        },
        "steps": steps,
        "all_steps": ChainedGrant.objects.count(),
        "grants_of_expired_steps": get_grant_model().objects.filter(pk__in=grant_ids).count(),
        "now": time.time(),
    }


def main(argv: list[str] | None = None) -> int:
    import django

    (chain_id,) = sys.argv[1:] if argv is None else argv
    django.setup()
    print(json.dumps(inspect(chain_id)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
