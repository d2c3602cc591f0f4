"""chain_grant settings: one ``CHAIN_GRANT`` dict, read through ``chain_grant_settings``.

Like DOT's ``oauth2_settings``: defaults below, user values from
``settings.CHAIN_GRANT``, cached, and reloaded on ``setting_changed`` (so tests can
use ``override_settings``). Every key is documented in the README's settings
reference.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    # Lifetime of a chained code (agent hop); the PoC uses 600 s.
    "CODE_EXPIRE_SECONDS": 600,
    # The key a hop's code is derived from (HMAC of the step id), so an identical
    # retried hop gets the same code back. Empty: SECRET_KEY. Changing it only makes
    # retries of hops made before the change fail (the codes themselves still work).
    "CODE_KEY": "",
    # How many children one step may have (1 = strictly linear chain).
    "MAX_CHILDREN": 3,
    # Deepest step allowed (root = 0).
    "MAX_DEPTH": 16,
    # Proof (agent id_token) limits.
    "MAX_PROOF_LIFETIME": 300,
    "PROOF_CLOCK_SKEW": 30,
    "PROOF_MAX_BYTES": 8192,
    # Asymmetric JWS algorithms an agent proof may use. "none" and HS* are refused
    # whatever this says (system check chain_grant.E003).
    "ALLOWED_ALGORITHMS": [
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    ],
    # Accepted proof `aud` values. Empty = this IdP's OIDC issuer (DOT's oidc_issuer()).
    "PROOF_AUDIENCES": [],
    # PoC compatibility: accept a self-asserted `jwk` header (did:jwk machine account)
    # and proofs without aud/jti/c_hash. Off by default; logged when used.
    "RELAXED_PROOFS": False,
    # Housekeeping (chain_grant.housekeeping, the Celery tasks and commands).
    # Whole chains whose every step ended more than RETENTION_DAYS ago are purged.
    "RETENTION_DAYS": 90,
    "EXPIRE_BATCH_SIZE": 1000,
    "PURGE_BATCH_SIZE": 200,
    # What disabling an actor does: deactivating an agent or one of its keys, a
    # person's account, or a client's chain switch. "revoke": revoke the steps they
    # acted in (and for), their subtrees and every token issued from them; "refuse":
    # only refuse new hops (codes and tokens already issued keep working).
    "ON_DISABLE": "revoke",
    # Introspection shows chain_id, chain_depth, chain_actors and act to the token's own client and
    # to these client_ids (resource servers that enforce chain requirements).
    "INTROSPECTION_RESOURCE_SERVERS": [],
    # Also record ordinary (never chained) codes when they are exchanged, as one-step
    # chains, so a replay of any code is detected and revokes what it issued (RFC 6749
    # §4.1.2). Off by default: it writes a row per exchange of the host's plain codes.
    "TRACK_PLAIN_CODES": False,
    # Anonymous requests to the chain's browser entry points, per client and IP:
    # [requests, seconds]; None = no limit. "wallet_request": authorize with
    # response_type=id_token; "chain_authorize": authorize with code=<previous>.
    "RATE_LIMITS": {"wallet_request": [300, 60], "chain_authorize": [600, 60]},
    "RATE_LIMIT_CACHE": "default",
    # Whether applications may use code_chain without a ChainClient row saying so.
    # False: an operator enables each client explicitly (safe default).
    "ENABLE_FOR_ALL_CLIENTS": False,
    # Browser steps (docs/architecture.md). WALLET_STEP: authorize with response_type=id_token is
    # the wallet step (turn off if your IdP serves the OIDC implicit flow there).
    "WALLET_STEP": True,
    # A wallet request (response_type=id_token) waits this
    # long for the wallet's answer and then for the browser to collect the code.
    "WALLET_REQUEST_SECONDS": 300,
    # Longest exp - iat accepted in a wallet's self-issued id_token (wallets commonly
    # sign for several minutes; agent proofs keep MAX_PROOF_LIFETIME).
    "WALLET_ID_TOKEN_LIFETIME": 600,
    # The signed record (core.record): a PEM private key (Ed25519, EC or RSA) that signs
    # every step, state event and chain head. Empty: an Ed25519 key derived from
    # SECRET_KEY. Its public half is served at <chain_grant.urls>/chain/jwks/.
    "RECORD_SIGNING_KEY": "",
    # Public JWKs of retired record keys, so records signed before a rotation still verify.
    "RECORD_VERIFY_KEYS": [],
    # Most additional parents one join (fan-in) hop may name in joined_codes.
    "MAX_JOINS": 8,
    # private_key_jwt (RFC 7523 §2.2) for clients with registered keys: the longest
    # assertion lifetime (exp - iat, or exp - now), seconds, and its JWS algorithms
    # (within ALLOWED_ALGORITHMS; never none or HS*).
    "CLIENT_ASSERTION_MAX_LIFETIME": 300,
    "CLIENT_ASSERTION_ALGORITHMS": ["RS256", "PS256", "ES256", "ES384", "EdDSA"],
    # DPoP (RFC 9449): proof algorithms, how old a proof's iat may be (seconds), and
    # the token endpoint's nonces: None = none required; N = a nonce rotated every N
    # seconds (resource servers do not require one).
    "DPOP_ALGORITHMS": ["ES256", "ES384", "RS256", "PS256", "EdDSA"],
    "DPOP_PROOF_WINDOW": 60,
    "DPOP_NONCE_SECONDS": None,
    # RFC 8693 token exchange: whether every actor_token must carry ``ath`` (base64url
    # SHA-256 of the subject_token), binding it to that one exchange, as c_hash binds a
    # hop proof to its code. False: checked when present (an actor token without one can
    # be spent on another subject token of the same client).
    "TOKEN_EXCHANGE_REQUIRE_ATH": True,
    # A remote resource server (chain_grant.oauth.chain_required) keeps the chain claims
    # of an introspection answer in this Django cache, as long as DOT keeps the token.
    "RESOURCE_SERVER_CACHE": "default",
}

# Algorithms that can never be allowed: no signature, or a shared secret.
FORBIDDEN_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})


class ChainGrantSettings:
    """Attribute access to CHAIN_GRANT with defaults; unknown keys are an error."""

    def __init__(self, defaults: dict[str, Any] | None = None):
        self.defaults = defaults or DEFAULTS
        self._cached: set[str] = set()

    @property
    def user_settings(self) -> dict[str, Any]:
        return getattr(settings, "CHAIN_GRANT", {}) or {}

    def __getattr__(self, attr: str) -> Any:
        if attr not in self.defaults:
            raise AttributeError(f"Invalid CHAIN_GRANT setting: {attr}")
        value = self.user_settings.get(attr, self.defaults[attr])
        self._cached.add(attr)
        setattr(self, attr, value)
        return value

    @property
    def allowed_algorithms(self) -> frozenset[str]:
        """ALLOWED_ALGORITHMS less what can never be allowed (``none``, HS*): the one
        place this is computed."""
        return frozenset(self.ALLOWED_ALGORITHMS) - FORBIDDEN_ALGORITHMS

    def reload(self) -> None:
        for attr in self._cached:
            delattr(self, attr)
        self._cached.clear()


chain_grant_settings = ChainGrantSettings(DEFAULTS)


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "CHAIN_GRANT":
        chain_grant_settings.reload()


setting_changed.connect(_reload)
