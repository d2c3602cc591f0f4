"""The agent SDK: what an agent process needs to take part in a chain.

It imports no Django (a test imports it with Django made unimportable), only the
standard library and jwcrypto::

    from chain_grant.client import load_private_key, sign_proof, pkce_pair, code_chain

    key = load_private_key("var/agents/planner.json")      # JWK or PEM
    proof = sign_proof(key, sub="planner", aud=issuer, code=previous_code, message=text)
    verifier, challenge = pkce_pair()
    hop = code_chain(token_url, client_id, client_secret, previous_code, proof,
                     code_challenge=challenge)

Modules: ``keys`` (key pairs, hop proofs), ``pkce``, ``http`` (the token endpoint),
``wallet`` (a headless SIOPv2 wallet), ``jose`` (base64url, digests, did:jwk).
"""

from .http import ChainClientError, ClientAuth, DPoPKey, PrivateKeyJWT, code_chain, exchange_code, token_exchange
from .keys import (
    CLIENT_ASSERTION_TYPE,
    DEFAULT_ALG,
    actor_token,
    client_assertion,
    dpop_proof,
    generate_key,
    load_private_key,
    message_digest,
    sign_proof,
)
from .pkce import pkce_pair

__all__ = [
    "actor_token",
    "token_exchange",
    "DPoPKey",
    "dpop_proof",
    "CLIENT_ASSERTION_TYPE",
    "DEFAULT_ALG",
    "client_assertion",
    "ChainClientError",
    "ClientAuth",
    "code_chain",
    "exchange_code",
    "generate_key",
    "load_private_key",
    "message_digest",
    "pkce_pair",
    "PrivateKeyJWT",
    "sign_proof",
]
