"""The chain's rules, as plain functions: no HTTP, no oauthlib, no DRF, no Celery.

``steps`` (adding steps), ``lifecycle`` (exchange, replay, revocation), ``integrity``
(link hashes), ``lineage`` (ancestors, ``act``), ``proofs`` (verifying agent proofs
and wallet id_tokens), ``wallet_step`` (SIOPv2 direct_post), ``policy`` (who may do
what), ``agents`` (the registry), ``retention`` (expiry and purge), ``locks`` (the
one lock order). Every refusal is a :class:`~chain_grant.core.errors.ChainError`.
"""
