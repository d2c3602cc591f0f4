"""chain_grant's tables: registered agents and their keys, per-client switches, and
the chain itself (one ``ChainedGrant`` row per step).

None of these rows holds a secret: codes are stored as SHA-256 digests, agent keys
are public JWKs. ``ChainedGrant`` never has a CASCADE foreign key to DOT's rows, so
the audit record survives DOT deleting a grant on exchange or ``cleartokens``.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from oauth2_provider.settings import oauth2_settings


class Agent(models.Model):
    """A registered machine actor.

    * ``identifier`` is the ``sub`` the agent signs its proofs with.
    * ``applications`` are the clients that may hand codes to this agent.
    * ``allowed_scopes`` caps what any hop to this agent may carry (agents only narrow).
    * ``allowed_algorithms`` narrows ``CHAIN_GRANT["ALLOWED_ALGORITHMS"]`` (empty = all of them).
    * ``self_asserted`` marks a did:jwk machine account created in relaxed (PoC) mode.
    * ``groups``: names the hand-off policy's edges may use (``group:<name>``).
    """

    # TextField: a did:jwk of an RSA key (relaxed mode) is over 500 characters.
    identifier = models.TextField(_("identifier"), unique=True, help_text=_("The `sub` this agent signs proofs with."))
    name = models.CharField(_("name"), max_length=255, blank=True)
    applications: models.ManyToManyField[Any, Any] = models.ManyToManyField(  # a swappable model: no static type
        oauth2_settings.APPLICATION_MODEL,
        related_name="chain_agents",
        blank=True,
        verbose_name=_("applications"),
        help_text=_("Clients allowed to hand chained codes to this agent."),
    )
    allowed_scopes = models.TextField(
        _("allowed scopes"), blank=True, help_text=_("Space-separated; a hop to this agent never carries more.")
    )
    allowed_algorithms = models.JSONField(
        _("allowed algorithms"),
        default=list,
        blank=True,
        help_text=_("JWS algorithms accepted from this agent; empty = the global allow-list."),
    )
    is_active = models.BooleanField(_("active"), default=True)
    self_asserted = models.BooleanField(
        _("self-asserted"), default=False, help_text=_("Created from a proof's own `jwk` header (relaxed mode).")
    )
    groups = models.JSONField(
        _("groups"),
        default=list,
        blank=True,
        help_text=_('Group names for the hand-off policy (an edge names one as "group:<name>").'),
    )
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("agent")
        verbose_name_plural = _("agents")
        ordering = ("identifier",)

    def __str__(self) -> str:
        return self.name or self.identifier

    @property
    def scope_set(self) -> set[str]:
        return set(self.allowed_scopes.split())


class AgentKey(models.Model):
    """One public key of an agent. Rotation = add a key, then deactivate the old one."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="keys", verbose_name=_("agent"))
    kid = models.CharField(_("key id"), max_length=255, help_text=_("Defaults to the RFC 7638 thumbprint."))
    jwk = models.JSONField(_("public JWK"))
    is_active = models.BooleanField(_("active"), default=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    disabled_at = models.DateTimeField(_("disabled at"), null=True, blank=True)

    class Meta:
        verbose_name = _("agent key")
        verbose_name_plural = _("agent keys")
        constraints = [models.UniqueConstraint(fields=("agent", "kid"), name="chain_grant_agentkey_agent_kid")]

    def __str__(self) -> str:
        return f"{self.agent} / {self.kid}"


class ChainClient(models.Model):
    """Per-application switches: may this client use chains (``grant_type=code_chain``
    and the browser steps), and is ``response_type=id_token`` at authorize its wallet
    step (otherwise DOT's OIDC implicit flow, unchanged)?"""

    application = models.OneToOneField(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="chain_client",
        verbose_name=_("application"),
    )
    code_chain_enabled = models.BooleanField(_("code_chain enabled"), default=True)
    wallet_step = models.BooleanField(
        _("wallet step"),
        default=True,
        help_text=_(
            "response_type=id_token at authorize starts this client's wallet step; off: DOT's OIDC implicit flow."
        ),
    )
    poc_compatible = models.BooleanField(
        _("PoC compatible"),
        default=False,
        help_text=_(
            "With CHAIN_GRANT['RELAXED_PROOFS'] on: accept the requests of Boruta's proof of concept from this "
            "client (PKCE optional, a self-asserted key named by its thumbprint, one-hour proofs). Never in production."
        ),
    )

    # RFC 7523 §2.2 client authentication, named as DOT's upcoming Application fields
    # (DOT #1762: ``token_endpoint_auth_method``, ``client_jwks``) so they map onto them.
    class AuthMethod(models.TextChoices):
        SECRET = "", _("the client's DOT secret (and its registered keys, if any)")
        PRIVATE_KEY_JWT = "private_key_jwt", _("private_key_jwt only: the secret is refused")

    token_endpoint_auth_method = models.CharField(
        _("token endpoint auth method"), max_length=32, choices=AuthMethod.choices, default="", blank=True
    )
    client_jwks = models.JSONField(
        _("client JWKS"),
        default=dict,
        blank=True,
        help_text=_("Public keys (a JWK Set) that verify this client's private_key_jwt assertions."),
    )

    dpop_required = models.BooleanField(
        _("DPoP required"),
        default=False,
        help_text=_("Every hop and code exchange of this client must carry a DPoP proof (RFC 9449)."),
    )

    class Meta:
        verbose_name = _("chain client")
        verbose_name_plural = _("chain clients")

    def __str__(self) -> str:
        return str(self.application)


# A step is in exactly one of these states (the admin, the API, evidence, housekeeping
# and metrics all read them from here):
#   revoked     revoked (itself, an ancestor, or by a replay); ``revoked_reason`` says why
#   exchanged   its code was exchanged for a token
#   handed_off  its code is past its expiry, unexchanged, and it has children: the
#               chain went on from it (a success, not a failure)
#   expired     its code is past its expiry, unexchanged, unused
#   live        its code can still be exchanged or continued
# ``ended`` is every state but live.
STEP_STATES = ("live", "handed_off", "exchanged", "expired", "revoked")


class ChainedGrantQuerySet(models.QuerySet):
    def live(self) -> ChainedGrantQuerySet:
        return self.filter(exchanged_at__isnull=True, revoked_at__isnull=True, expires__gt=timezone.now())

    def revoked(self) -> ChainedGrantQuerySet:
        return self.filter(revoked_at__isnull=False)

    def exchanged(self) -> ChainedGrantQuerySet:
        return self.filter(exchanged_at__isnull=False, revoked_at__isnull=True)

    def _past_unused(self) -> ChainedGrantQuerySet:
        return self.filter(exchanged_at__isnull=True, revoked_at__isnull=True, expires__lte=timezone.now())

    def handed_off(self) -> ChainedGrantQuerySet:
        return self._past_unused().filter(children_count__gt=0)

    def expired(self) -> ChainedGrantQuerySet:
        return self._past_unused().filter(children_count=0)

    def ended(self) -> ChainedGrantQuerySet:
        return self.exclude(pk__in=self.live().values("pk"))

    def in_state(self, state: str) -> ChainedGrantQuerySet:
        """One of STEP_STATES (or ``ended``), by name."""
        if state not in (*STEP_STATES, "ended"):
            raise ValueError(f"unknown step state {state!r}")
        return getattr(self, state)()

    def due_to_end(self, now=None) -> ChainedGrantQuerySet:
        """Past ``expires`` and not yet marked ended: what the expiry job marks."""
        return self.filter(ended_at__isnull=True, expires__lte=now or timezone.now())

    def chain(self, root_id) -> ChainedGrantQuerySet:
        return self.filter(root_id=root_id)

    def subtree_of(self, step: ChainedGrant) -> ChainedGrantQuerySet:
        """The step and all its descendants."""
        return self.filter(root_id=step.root_id, path__startswith=step.path)


class ChainedGrant(models.Model):
    """One step of an authorization code chain (a node of the tree).

    * ``parent``/``root``/``depth``/``path``: the tree. A root points at itself, so one
      indexed query (``root=<id>``) returns a whole chain; clients see the root id as
      ``chain_id``. ``path`` (hex ids from the root, ``/``-terminated) makes a subtree one
      prefix query and the ancestors one primary-key query, whatever the chain's size.
    * ``code_digest``: SHA-256 hex of the step's code (the code itself is never stored).
    * ``kind`` + ``agent``/``subject``: the actor of this step. ``user`` is the person the
      chain acts for (DOT's ``Grant.user``/``AccessToken.user``), set on every step.
    * ``scope``: what this step's code grants; ``requested_scope``: what was asked.
    * proof evidence: ``proof_jti``, verified ``proof_claims``, ``proof_digest`` (SHA-256
      of the raw JWS) and ``message_digest`` (the agent's ``msg_sha256`` claim).
    * state: ``exchanged_at`` + ``access_token``/``token_family`` (what was issued from
      it), ``revoked_at``/``revoked_reason``, ``expired_at`` (marked by the expiry job),
      ``ended_at`` (the first of those: what retention counts from), ``children_count``
      (fan-out limit).
    * ``grant_id``: pk of the DOT ``Grant`` holding the live code; a plain integer, not a
      foreign key, so DOT deleting its grant never touches this row.
    * ``actor``: the actor as it was at the step (identifier, name, key; username, sub,
      auth time, scope changes; DID); readers show it, never the live ``Agent`` or user.
    * ``link_hash``: SHA-256 over the parent's link_hash and this step's immutable fields
      (``hash_version`` says which: 2 covers ``actor`` and the key thumbprint).
    """

    class Kind(models.TextChoices):
        WALLET = "wallet", _("wallet")
        USER = "user", _("user")
        AGENT = "agent", _("agent")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    parent = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="children", verbose_name=_("parent")
    )
    root = models.ForeignKey("self", on_delete=models.PROTECT, related_name="+", verbose_name=_("chain root"))
    depth = models.PositiveIntegerField(_("depth"), default=0)
    path = models.TextField(_("path"), help_text=_("Ids from the root to this step; a subtree is one prefix query."))

    code_digest = models.CharField(_("code digest"), max_length=64, unique=True)
    expires = models.DateTimeField(_("expires"))
    redirect_uri = models.TextField(_("redirect URI"), blank=True)

    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices)
    application = models.ForeignKey(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.PROTECT,
        related_name="chained_grants",
        verbose_name=_("application"),
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="chained_grants",
        verbose_name=_("user"),
        help_text=_("The person the chain acts for."),
    )
    agent = models.ForeignKey(
        Agent, on_delete=models.PROTECT, null=True, blank=True, related_name="steps", verbose_name=_("agent")
    )
    subject = models.TextField(_("actor subject"), help_text=_("`sub` of the actor: user pk, wallet DID or agent id."))

    scope = models.TextField(_("scope"), blank=True)
    requested_scope = models.TextField(_("requested scope"), blank=True)

    proof_jti = models.CharField(_("proof jti"), max_length=255, blank=True)
    proof_claims = models.JSONField(_("verified proof claims"), default=dict, blank=True)
    proof_digest = models.CharField(_("proof digest"), max_length=64, blank=True)
    message_digest = models.CharField(_("message digest"), max_length=128, blank=True)
    agent_key_thumbprint = models.CharField(
        _("agent key thumbprint"),
        max_length=64,
        blank=True,
        help_text=_("RFC 7638 thumbprint of the key that signed the agent's proof (what disabling a key revokes)."),
    )
    # What the actor was when it acted, never a pointer to a row that can change (an
    # agent renamed later, a person's new username): see core.tree.recorded_actor.
    actor = models.JSONField(
        _("actor as recorded"),
        default=dict,
        blank=True,
        help_text=_("Who acted, as they were at this step (agent identifier, name and key; person; wallet DID)."),
    )
    hash_version = models.PositiveSmallIntegerField(
        _("link hash version"),
        default=5,
        help_text=_(
            "Which fields link_hash covers: 1 = before the recorded actor, 2 = with it, 3 = with joins, "
            "the DOT grant's PKCE and resource, and a signed record; 4 = with the DPoP key binding; "
            "5 = with the hand-off policy's decision."
        ),
    )
    # A join (fan-in): the other parents this step combines, in the order the hop named
    # them, each with its link_hash as it was (covered by this step's link_hash).
    joined = models.JSONField(
        _("joined parents"), default=list, blank=True, help_text=_("[{step, link_hash}] of the joined parents.")
    )
    grant_digest = models.CharField(
        _("DOT grant digest"),
        max_length=64,
        blank=True,
        help_text=_("SHA-256 of the code's PKCE challenge and resource, compared with DOT's Grant at exchange."),
    )
    dpop_jkt = models.CharField(
        _("DPoP key thumbprint"),
        max_length=64,
        blank=True,
        help_text=_("The key this step's code is bound to (RFC 9449): its exchange needs a proof by that key."),
    )
    # Which hand-off policy rule let this step through, as it was (core.handoff); {} = no policy.
    policy_decision = models.JSONField(
        _("policy decision"),
        default=dict,
        blank=True,
        help_text=_("The hand-off policy rule that allowed this step (policy, edge, fresh consent), as it was."),
    )
    record_jws = models.TextField(
        _("signed record"), blank=True, help_text=_("JWS by the IdP's record key over this step's link hash.")
    )

    created = models.DateTimeField(_("created"), default=timezone.now)
    grant_id = models.BigIntegerField(_("DOT grant id"), null=True, blank=True)
    exchanged_at = models.DateTimeField(_("exchanged at"), null=True, blank=True)
    # No database constraint and DO_NOTHING: revoking deletes the token, and the
    # audit record keeps which token this step issued.
    access_token = models.ForeignKey(
        oauth2_settings.ACCESS_TOKEN_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("access token issued"),
    )
    token_family = models.UUIDField(_("refresh token family"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    revoked_reason = models.CharField(_("revoked reason"), max_length=255, blank=True)
    expired_at = models.DateTimeField(
        _("marked expired at"),
        null=True,
        blank=True,
        help_text=_("Set by the expiry job; expiry itself is enforced at use time from `expires`."),
    )
    ended_at = models.DateTimeField(
        _("ended at"),
        null=True,
        blank=True,
        help_text=_("When the step first stopped being live (exchanged, revoked or marked expired)."),
    )
    children_count = models.PositiveIntegerField(_("children"), default=0)

    link_hash = models.CharField(_("link hash"), max_length=64)

    objects = ChainedGrantQuerySet.as_manager()

    class Meta:
        verbose_name = _("chained grant")
        verbose_name_plural = _("chained grants")
        ordering = ("root_id", "depth", "created")
        indexes = [
            models.Index(fields=("root", "depth"), name="chain_grant_root_depth"),
            models.Index(fields=("expires",), name="chain_grant_expires"),
            models.Index(fields=("ended_at", "expires"), name="chain_grant_ended_expires"),
            models.Index(fields=("ended_at",), condition=Q(depth=0), name="chain_grant_root_ended"),
            models.Index(fields=("access_token",), name="chain_grant_access_token"),
            models.Index(fields=("token_family",), name="chain_grant_token_family"),
        ]
        permissions = [("revoke_chainedgrant", _("Can revoke a step and its subtree"))]
        constraints = [
            models.UniqueConstraint(
                fields=("agent", "proof_jti"),
                condition=Q(agent__isnull=False) & ~Q(proof_jti=""),
                name="chain_grant_agent_jti_unique",
            ),
        ]

    def __str__(self) -> str:
        # Never the code: only the kind, actor and a short digest prefix.
        return f"{self.kind} step {self.subject} ({self.code_digest[:8]}…)"

    @property
    def chain_id(self):
        return self.root_id

    @property
    def state(self) -> str:
        """One of STEP_STATES, as the querysets of the same names define them."""
        if self.revoked_at:
            return "revoked"
        if self.exchanged_at:
            return "exchanged"
        if self.expires <= timezone.now():
            return "handed_off" if self.children_count else "expired"
        return "live"


_ChainManagerBase = models.Manager.from_queryset(ChainedGrantQuerySet)  # named: mypy needs it for the base


class ChainManager(_ChainManagerBase):
    def get_queryset(self):
        return super().get_queryset().filter(depth=0)


class Chain(ChainedGrant):
    """A whole chain, seen through its root step (the admin's "Chains" list)."""

    objects: ClassVar[ChainManager] = ChainManager()

    class Meta:
        proxy = True
        verbose_name = _("chain")
        verbose_name_plural = _("chains")
        ordering = ("-created",)


class HandoffPolicy(models.Model):
    """The hand-off policy of one client, or the global default (``application`` empty):
    data read by ``core.handoff``, edited in the admin or imported as JSON.

    * ``edges``: ``"from -> to"`` strings; empty = any actor may hand off to any agent.
    * ``fresh_consent``: ``{scope: {"hops": N, "minutes": M}}``, a person's consent step
      that granted the scope must be that close.
    * ``max_depth`` / ``max_children``: override ``MAX_DEPTH`` / ``MAX_CHILDREN``; empty =
      the setting.

    A client's policy replaces the default as a whole (docs/policy.md).
    """

    application = models.OneToOneField(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="handoff_policy",
        verbose_name=_("application"),
        help_text=_("Empty: the default policy, for every client without its own."),
    )
    edges = models.JSONField(
        _("edges"),
        default=list,
        blank=True,
        help_text=_('Who may hand off to whom: ["person -> planner", "planner -> group:research", "* -> critic"].'),
    )
    fresh_consent = models.JSONField(
        _("fresh consent"),
        default=dict,
        blank=True,
        help_text=_('Scopes a person must have granted recently: {"email": {"hops": 1, "minutes": 30}}.'),
    )
    max_depth = models.PositiveIntegerField(
        _("max depth"), null=True, blank=True, help_text=_("Deepest step allowed; empty = MAX_DEPTH.")
    )
    max_children = models.PositiveIntegerField(
        _("max children"), null=True, blank=True, help_text=_("Children one step may have; empty = MAX_CHILDREN.")
    )
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("hand-off policy")
        verbose_name_plural = _("hand-off policies")
        constraints = [
            # One default: NULLs are distinct in a unique column, so compare them as 0.
            models.UniqueConstraint(
                Coalesce("application", Value(0)),
                name="chain_grant_handoffpolicy_one_per_client",
                violation_error_message=_("This client (or the default) already has a hand-off policy."),
            ),
        ]

    def __str__(self) -> str:
        return f"hand-off policy of {self.application}" if self.application_id else "default hand-off policy"


class UsedJti(models.Model):
    """A ``jti`` already used (a client assertion, a DPoP proof), kept until the JWT
    it came from expires: one row per use, so a replay is refused on any replica
    (the unique digest), failing closed. Purged by housekeeping."""

    digest = models.CharField(_("digest"), max_length=64, unique=True, help_text=_("SHA-256 of kind, issuer, jti."))
    expires = models.DateTimeField(_("expires"), db_index=True)

    class Meta:
        verbose_name = _("used jti")
        verbose_name_plural = _("used jtis")


class DPoPBinding(models.Model):
    """An access or refresh token, or a DOT authorization code, bound to a DPoP key
    (RFC 9449 ``cnf.jkt``; ``dpop_jkt`` at authorize, §10). DOT's tables have no place
    for it; the token or code is named by its SHA-256 (as DOT's ``token_checksum`` and
    chain_grant's code digests), so this table holds nothing usable."""

    class Kind(models.TextChoices):
        ACCESS = "access", _("access token")
        REFRESH = "refresh", _("refresh token")
        CODE = "code", _("authorization code (dpop_jkt at authorize)")

    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices)
    token_checksum = models.CharField(_("token checksum"), max_length=64, unique=True)
    jkt = models.CharField(_("key thumbprint"), max_length=64)
    expires = models.DateTimeField(_("expires"), db_index=True)

    class Meta:
        verbose_name = _("DPoP binding")
        verbose_name_plural = _("DPoP bindings")


class ChainJoin(models.Model):
    """One joined parent of a join step (besides its primary ``parent``): what makes
    revoking any parent reach the join, and the tree a DAG. Mirrors ``joined``."""

    root = models.ForeignKey(ChainedGrant, on_delete=models.CASCADE, related_name="+", verbose_name=_("chain root"))
    step = models.ForeignKey(ChainedGrant, on_delete=models.CASCADE, related_name="joins", verbose_name=_("join step"))
    parent = models.ForeignKey(
        ChainedGrant, on_delete=models.CASCADE, related_name="joined_into", verbose_name=_("joined parent")
    )
    position = models.PositiveSmallIntegerField(_("position"))

    class Meta:
        verbose_name = _("chain join")
        verbose_name_plural = _("chain joins")
        ordering = ("step", "position")
        constraints = [models.UniqueConstraint(fields=("step", "parent"), name="chain_grant_join_step_parent")]


class StepEvent(models.Model):
    """An append-only, signed change of a step's state: ``exchanged`` (with the token's
    checksum) or ``revoked`` (a subtree, and why). Events of a chain are numbered and
    hash-linked (``hash`` covers the previous one), and the chain's head counts them, so
    clearing a state column or deleting an event is caught (core.record)."""

    class Kind(models.TextChoices):
        EXCHANGED = "exchanged", _("exchanged")
        REVOKED = "revoked", _("revoked")

    root = models.ForeignKey(ChainedGrant, on_delete=models.CASCADE, related_name="+", verbose_name=_("chain root"))
    step = models.ForeignKey(ChainedGrant, on_delete=models.CASCADE, related_name="events", verbose_name=_("step"))
    seq = models.PositiveIntegerField(_("number in the chain"))
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    data = models.JSONField(_("data"), default=dict, blank=True)
    at = models.DateTimeField(_("at"))
    hash = models.CharField(_("hash"), max_length=64)
    jws = models.TextField(_("signed"), blank=True)

    class Meta:
        verbose_name = _("step event")
        verbose_name_plural = _("step events")
        ordering = ("root", "seq")
        constraints = [models.UniqueConstraint(fields=("root", "seq"), name="chain_grant_event_root_seq")]


class ChainHead(models.Model):
    """A chain's signed head: how many steps and events it has, an order-free hash of
    its leaves' link hashes and the last event's hash. Updated (and signed) on every
    hop and event, so a deleted leaf, subtree or event, or a rollback to an earlier
    exported head, is caught."""

    root = models.OneToOneField(
        ChainedGrant, on_delete=models.CASCADE, primary_key=True, related_name="head", verbose_name=_("chain root")
    )
    steps = models.PositiveIntegerField(_("steps"), default=0)
    leaves = models.CharField(_("leaves digest"), max_length=64, default="")
    events = models.PositiveIntegerField(_("events"), default=0)
    event_hash = models.CharField(_("last event hash"), max_length=64, blank=True)
    jws = models.TextField(_("signed head"), blank=True)
    updated = models.DateTimeField(_("updated"), default=timezone.now)

    class Meta:
        verbose_name = _("chain head")
        verbose_name_plural = _("chain heads")


class Wallet(models.Model):
    """A wallet holder seen through a self-issued id_token (SIOPv2).

    The holder's key is their identity: ``thumbprint`` (RFC 7638) is stable whatever
    subject syntax the wallet uses (did:jwk or a JWK thumbprint URI). Each wallet gets
    an account (``user``, no usable password) so codes from a wallet step are DOT
    grants like any other, and the chain acts for that account until a person's
    consent step.
    """

    thumbprint = models.CharField(_("key thumbprint"), max_length=64, unique=True)
    subject = models.TextField(_("subject"), help_text=_("The `sub` the wallet last presented (did:jwk or URI)."))
    public_jwk = models.JSONField(_("public JWK"))
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chain_wallet", verbose_name=_("account")
    )
    created = models.DateTimeField(_("created"), auto_now_add=True)
    last_presented = models.DateTimeField(_("last presented"), default=timezone.now)

    class Meta:
        verbose_name = _("wallet")
        verbose_name_plural = _("wallets")

    def __str__(self) -> str:
        return f"wallet {self.thumbprint[:12]}…"


class WalletRequest(models.Model):
    """A pending wallet step (``response_type=id_token``): what the authorize request
    asked, the nonce the wallet must sign, and how far it got.

    Kept in the database, never in a process, so any web replica can take the
    wallet's answer or the browser's poll. The browser's poll token and the
    wallet's response code are stored as SHA-256 digests; the new code is created
    only when one of them is presented, so this table never holds a usable secret.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("waiting for the wallet")
        VERIFIED = "verified", _("presented, waiting for the browser")
        DONE = "done", _("code issued")
        CANCELLED = "cancelled", _("cancelled")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    state = models.CharField(_("request state"), max_length=64, unique=True)
    nonce = models.CharField(_("nonce"), max_length=64)
    verifier_id = models.TextField(_("verifier client_id"), help_text=_("The `aud` the id_token must carry."))
    poll_digest = models.CharField(_("browser poll token digest"), max_length=64)
    response_code_digest = models.CharField(_("response code digest"), max_length=64, blank=True)

    application = models.ForeignKey(
        oauth2_settings.APPLICATION_MODEL, on_delete=models.CASCADE, related_name="+", verbose_name=_("application")
    )
    redirect_uri = models.TextField(_("redirect URI"))
    client_state = models.TextField(_("client state"), blank=True)
    scope = models.TextField(_("scope"), blank=True)
    client_metadata = models.JSONField(_("client metadata"), default=dict, blank=True)
    code_challenge = models.CharField(_("code challenge"), max_length=128, blank=True)
    code_challenge_method = models.CharField(_("code challenge method"), max_length=10, blank=True)
    oidc_nonce = models.CharField(_("OIDC nonce"), max_length=255, blank=True)
    parent = models.ForeignKey(
        ChainedGrant, on_delete=models.CASCADE, null=True, blank=True, related_name="+", verbose_name=_("previous step")
    )

    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PENDING)
    last_error = models.TextField(_("last refused answer"), blank=True)
    wallet = models.ForeignKey(Wallet, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    presentation_claims = models.JSONField(_("verified id_token claims"), default=dict, blank=True)
    presentation_digest = models.CharField(_("id_token digest"), max_length=64, blank=True)
    step = models.ForeignKey(
        ChainedGrant, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", verbose_name=_("step issued")
    )
    created = models.DateTimeField(_("created"), default=timezone.now)
    expires = models.DateTimeField(_("expires"))
    completed_at = models.DateTimeField(_("completed at"), null=True, blank=True)

    class Meta:
        verbose_name = _("wallet request")
        verbose_name_plural = _("wallet requests")
        indexes = [models.Index(fields=("expires",), name="chain_grant_walletreq_expires")]

    def __str__(self) -> str:
        return f"wallet request {self.id} ({self.status})"
