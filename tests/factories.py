"""Building chains directly (no HTTP, no signatures), for size and query-count tests."""

from datetime import timedelta

from django.utils import timezone
from oauth2_provider.models import get_grant_model

from chain_grant import chains
from chain_grant.models import ChainedGrant


def build_chain(app, user, size: int, fanout: int = 3, code_prefix: str = "c") -> ChainedGrant:
    """A root from a real DOT grant plus ``size - 1`` agent steps, ``fanout`` per parent."""
    grant = get_grant_model().objects.create(
        application=app, user=user, code=f"{code_prefix}-root", redirect_uri="http://127.0.0.1/cb",
        expires=timezone.now() + timedelta(minutes=5), scope="read",
    )
    root = chains.root_from_grant(app, grant.code)
    nodes = [root]
    for i in range(size - 1):
        parent = nodes[i // fanout]
        step = ChainedGrant(kind="agent", code_digest=chains.code_digest(f"{code_prefix}{i}"),
                            expires=parent.expires, application=app, user=user, subject=f"agent{i}",
                            scope="read")
        nodes.append(chains._insert_step(step, parent))
    return root
