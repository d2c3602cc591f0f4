"""Documented hooks for operators. Receivers must not raise."""

from django.dispatch import Signal

# A step was added to a chain. Arguments: step (ChainedGrant).
step_created = Signal()

# A step and its subtree were revoked. Arguments: step (ChainedGrant), count (int,
# steps newly revoked), reason (str).
chain_revoked = Signal()

# An exchanged code was presented again; its subtree was revoked. Arguments: step.
replay_detected = Signal()

# The expiry job marked a batch of steps expired. Arguments: count (int). Sent once
# per batch.
steps_expired = Signal()

# The purge job deleted a whole chain. Arguments: chain_id (UUID of the root).
chain_purged = Signal()
