"""The rules of a chain, as plain functions: no HTTP, no oauthlib, no Celery.

Views, the oauthlib grant, the validator, commands and (later) tasks and admin
actions translate their inputs and call these. Every refusal is a
:class:`~chain_grant.errors.ChainError` carrying the OAuth error code.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from jwcrypto import jwk
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model
from oauth2_provider.scopes import get_scopes_backend
from oauth2_provider.settings import oauth2_settings

from . import proofs, signals
from .errors import ChainError
from .models import Agent, AgentKey, ChainedGrant
from .settings import chain_grant_settings

PKCE_METHODS = ("S256", "plain")
_PKCE_CHALLENGE = re.compile(r"[A-Za-z0-9._~-]{43,128}")


def code_digest(code: str) -> str:
    """How a code is stored and looked up in chain_grant's tables."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def plausible_code(code: str) -> bool:
    """Could this be a code DOT stored? (Printable ASCII, ≤ 255 characters.) Checked
    before querying DOT's table, where a NUL byte would be a database error."""
    return 0 < len(code) <= 255 and code.isascii() and code.isprintable()


def new_code() -> str:
    """A fresh authorization code: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


# --- integrity ------------------------------------------------------------------------

_LINKED_FIELDS = (
    "id", "parent_id", "root_id", "depth", "path", "code_digest", "kind", "application_id",
    "user_id", "agent_id", "subject", "scope", "requested_scope", "proof_jti", "proof_claims",
    "proof_digest", "message_digest", "redirect_uri", "created", "expires",
)


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if value is None or isinstance(value, (int, str, dict, list, bool)):
        return value
    return str(value)  # UUIDs


def compute_link_hash(step: ChainedGrant, parent_link_hash: str) -> str:
    """SHA-256 over the parent's link_hash and this step's immutable fields."""
    fields = {name: _canonical(getattr(step, name)) for name in _LINKED_FIELDS}
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((parent_link_hash + "\n" + blob).encode("utf-8")).hexdigest()


@dataclass
class Verification:
    ok: bool
    checked: int
    first_bad_step: Any = None  # id of the first step whose link_hash does not match


def verify_chain(chain_id) -> Verification:
    """Recompute every link_hash of a chain (root first) against the stored values."""
    return verify_steps(ChainedGrant.objects.chain(chain_id).order_by("depth", "created").iterator(chunk_size=2000))


def verify_steps(steps) -> Verification:
    """verify_chain over steps already loaded, ordered parents first (depth, created)."""
    stored: dict[Any, str] = {}
    checked = 0
    principal = None  # the person a user-rooted chain acts for, as its root recorded it
    for step in steps:
        if step.parent_id is None and step.kind == ChainedGrant.Kind.USER:
            principal = _user_pk(step.subject)
        parent_hash = stored.get(step.parent_id, "") if step.parent_id else ""
        if step.parent_id and step.parent_id not in stored:
            return Verification(False, checked, step.id)
        if not _link_matches(step, parent_hash, principal):
            return Verification(False, checked, step.id)
        stored[step.id] = step.link_hash
        checked += 1
    return Verification(checked > 0, checked, None)


def _link_matches(step: ChainedGrant, parent_hash: str, principal) -> bool:
    if compute_link_hash(step, parent_hash) == step.link_hash:
        return True
    if step.user_id is None and principal is not None:
        # Deleting the person nulls user_id (SET_NULL): not an edit. Check the hash
        # against the person the root recorded.
        step.user_id = principal
        try:
            return compute_link_hash(step, parent_hash) == step.link_hash
        finally:
            step.user_id = None
    return False


def _user_pk(subject: str):
    try:
        return get_user_model()._meta.pk.to_python(subject)
    except ValidationError:
        return None


# --- creating steps ---------------------------------------------------------------------


def _insert_step(step: ChainedGrant, parent: ChainedGrant | None) -> ChainedGrant:
    step.parent = parent
    step.root_id = parent.root_id if parent else step.id
    step.depth = parent.depth + 1 if parent else 0
    step.path = (parent.path if parent else "") + step.id.hex + "/"
    step.created = timezone.now()
    step.link_hash = compute_link_hash(step, parent.link_hash if parent else "")
    step.save(force_insert=True)
    return step


def _root_step(grant, application, digest: str) -> ChainedGrant:
    """The (unsaved) root step describing an ordinary DOT code's grant."""
    return ChainedGrant(
        kind=ChainedGrant.Kind.USER,
        code_digest=digest,
        expires=grant.expires,
        redirect_uri=grant.redirect_uri,
        application=application,
        user_id=grant.user_id,
        subject=str(grant.user_id),
        scope=grant.scope,
        requested_scope=grant.scope,
        grant_id=grant.pk,
    )


def root_from_grant(application, code: str) -> ChainedGrant:
    """The root step for an ordinary DOT code, created from its ``Grant`` on first use.

    Raises ChainError if the code is unknown to this client or expired. Safe under
    concurrency: a second creator finds the first one's row.
    """
    digest = code_digest(code)
    # Locked: an exchange of this code (ChainValidatorMixin.save_bearer_token) locks it
    # too, so a code is either chained first (and its root marked at exchange) or gone.
    grant = plausible_code(code) and (
        get_grant_model().objects.select_for_update().filter(code=code, application=application).first()
    )
    if not grant or grant.is_expired():
        raise ChainError("The authorization code is unknown, expired or was issued to another client.")
    step = _root_step(grant, application, digest)
    try:
        with transaction.atomic():
            return _insert_step(step, None)
    except IntegrityError:
        return ChainedGrant.objects.get(code_digest=digest)


class CodeReused(ChainError):
    """An exchanged code was presented as a parent: a replay (handled after rollback)."""

    def __init__(self, step: ChainedGrant):
        super().__init__("The authorization code was already exchanged.")
        self.step = step


def check_can_extend(parent: ChainedGrant, application) -> None:
    """The parent rules of DESIGN §5.2 (ownership, state, fan-out, depth)."""
    if parent.application_id != application.pk:
        raise ChainError("The authorization code is unknown, expired or was issued to another client.")
    if parent.revoked_at:
        raise ChainError("The authorization code was revoked.")
    if parent.exchanged_at:
        raise CodeReused(parent)
    if parent.expires <= timezone.now() or not getattr(parent, "code_live", True):
        raise ChainError("The authorization code is unknown, expired or was issued to another client.")
    if parent.children_count >= chain_grant_settings.MAX_CHILDREN:
        raise ChainError("The authorization code reached its fan-out limit (MAX_CHILDREN).")
    if parent.depth + 1 > chain_grant_settings.MAX_DEPTH:
        raise ChainError("The chain reached its depth limit (MAX_DEPTH).")
    if parent.user_id is None:
        raise ChainError("The person this chain acts for no longer exists.")
    if getattr(parent, "person_active", True) is False:
        raise ChainError("The person this chain acts for is disabled.")


def lock_chain(root_id) -> None:
    """Lock a chain's root row. Hops and revocations take it first, so a revocation
    never misses a child committed while it runs (READ COMMITTED snapshots)."""
    list(ChainedGrant.objects.select_for_update().filter(pk=root_id).values_list("pk", flat=True))


def lock_parent(application, code: str) -> ChainedGrant:
    """Find (or create, for an ordinary DOT code) the parent step; lock the chain, then
    the parent row; check it may be extended. ``code_live``: its DOT grant still exists."""
    found = ChainedGrant.objects.filter(code_digest=code_digest(code)).values_list("pk", "root_id").first()
    if found is None:
        root = root_from_grant(application, code)
        found = (root.pk, root.root_id)
    return lock_step(application, *found)


def lock_step(application, pk, root_id) -> ChainedGrant:
    """Lock a chain, then one of its steps, and check the step may be extended."""
    lock_chain(root_id)
    Grant = get_grant_model()
    parent = (
        ChainedGrant.objects.select_for_update()
        .annotate(
            code_live=Exists(Grant.objects.filter(pk=OuterRef("grant_id"))),
            person_active=Exists(get_user_model().objects.filter(pk=OuterRef("user_id"), is_active=True)),
            # Its code's RFC 8707 restriction, which a hop carries down (read in this query).
            grant_resource=Subquery(
                Grant.objects.filter(pk=OuterRef("grant_id")).values("resource")[:1],
                output_field=Grant._meta.get_field("resource"),
            ),
        )
        .get(pk=pk)
    )
    check_can_extend(parent, application)
    return parent


def attenuate_scope(parent_scope: str, allowed: set[str], requested: str | None) -> str:
    """Agents only narrow: the result is ⊆ parent ∩ allowed (default: all of that)."""
    parent_scopes = parent_scope.split()
    available = [s for s in parent_scopes if s in allowed]
    if requested is None:
        return " ".join(available)
    wanted = requested.split()
    extra = set(wanted) - set(available)
    if extra:
        raise ChainError(
            "Requested scope exceeds the previous step's scope or the agent's allowed scopes: "
            + " ".join(sorted(extra)),
            "invalid_scope",
        )
    return " ".join(dict.fromkeys(wanted))


def check_pkce(code_challenge: str | None, method: str | None, required: bool) -> tuple[str, str]:
    if not code_challenge:
        if method:
            raise ChainError("code_challenge_method without code_challenge.", "invalid_request")
        if required:
            raise ChainError("Code challenge required.", "invalid_request")
        return "", ""
    method = method or "plain"  # RFC 7636 §4.3
    if method not in PKCE_METHODS:
        raise ChainError("Unsupported code_challenge_method.", "invalid_request")
    if method == "plain" and oauth2_settings.COMPLIANT_BCP_RFC9700_PKCE_METHOD:
        raise ChainError('Unsupported "plain" code_challenge_method; use "S256".', "invalid_request")
    if not _PKCE_CHALLENGE.fullmatch(code_challenge):
        raise ChainError("code_challenge must be 43 to 128 unreserved characters (RFC 7636).", "invalid_request")
    return code_challenge, method


def agent_keys_for(application):
    """A ``find_keys(sub)`` for proofs.verify_agent_proof: the active keys of an active
    agent registered for this client, each with its agent loaded (one query)."""

    def find_keys(sub: str):
        return AgentKey.objects.select_related("agent").filter(
            agent__identifier=sub,
            agent__is_active=True,
            agent__applications=application,
            is_active=True,
        )

    return find_keys


def self_asserted_agent(verified: proofs.VerifiedProof, application) -> Agent:
    """Relaxed (PoC) mode: the did:jwk machine account for a self-asserted key.

    Never for public clients (a stolen code plus a fresh key would bypass the code's
    PKCE), never a registered agent, and never a key the account no longer has active.
    """
    if application.client_type == application.CLIENT_PUBLIC:
        raise ChainError("Self-asserted agent keys are not accepted from public clients.")
    public = verified.self_asserted_jwk
    thumbprint = jwk.JWK(**public).thumbprint()
    agent, created = Agent.objects.get_or_create(
        identifier=verified.subject,
        defaults={
            "name": "self-asserted " + verified.subject[:40],
            "self_asserted": True,
            "allowed_scopes": " ".join(get_scopes_backend().get_available_scopes(application=application)),
        },
    )
    if created:
        agent.keys.create(kid=thumbprint, jwk=public)
    elif not (agent.self_asserted and agent.is_active and agent.keys.filter(kid=thumbprint, is_active=True).exists()):
        raise ChainError("Proof sub is not an active agent registered for this client.")
    agent.applications.add(application)
    return agent


def advance_by_agent(
    *,
    application,
    parent_code: str,
    proof: str,
    audiences: list[str],
    scope: str | None = None,
    code_challenge: str | None = None,
    code_challenge_method: str | None = None,
    pkce_required: bool = True,
) -> tuple[ChainedGrant, str]:
    """An agent hop (``grant_type=code_chain``): verify, then add one child step and the
    DOT grant for its new code, atomically, with the parent row locked.

    Returns the new step and its code (the only place the code exists in clear).
    """
    relaxed = chain_grant_settings.RELAXED_PROOFS
    challenge, method = check_pkce(code_challenge, code_challenge_method, pkce_required)
    verified = proofs.verify_agent_proof(
        proof, code=parent_code, audiences=audiences, find_keys=agent_keys_for(application), relaxed=relaxed
    )
    try:
        step, code = _add_agent_step(application, parent_code, verified, scope, challenge, method)
    except CodeReused as exc:
        handle_replay(exc.step)
        raise
    signals.step_created.send(sender=ChainedGrant, step=step)
    return step, code


def _add_agent_step(application, parent_code, verified, scope, challenge, method) -> tuple[ChainedGrant, str]:
    with transaction.atomic():
        agent = verified.key.agent if verified.key else self_asserted_agent(verified, application)
        parent = lock_parent(application, parent_code)
        granted = attenuate_scope(parent.scope, agent.scope_set, scope)
        code = new_code()
        expires = timezone.now() + timedelta(seconds=chain_grant_settings.CODE_EXPIRE_SECONDS)
        grant = get_grant_model().objects.create(
            resource=parent.grant_resource or [],  # an RFC 8707 restriction carries down the chain
            application=application,
            user_id=parent.user_id,
            code=code,
            expires=expires,
            redirect_uri=parent.redirect_uri,
            scope=granted,
            code_challenge=challenge,
            code_challenge_method=method,
            claims="{}",
        )
        step = ChainedGrant(
            kind=ChainedGrant.Kind.AGENT,
            code_digest=code_digest(code),
            expires=expires,
            redirect_uri=parent.redirect_uri,
            application=application,
            user_id=parent.user_id,
            agent=agent,
            subject=agent.identifier,
            scope=granted,
            requested_scope=" ".join(dict.fromkeys(scope.split())) if scope is not None else granted,
            proof_jti=verified.jti,
            proof_claims=verified.claims,
            proof_digest=verified.digest,
            message_digest=verified.message_digest,
            grant_id=grant.pk,
        )
        try:
            with transaction.atomic():
                _insert_step(step, parent)
        except IntegrityError:
            if verified.jti and ChainedGrant.objects.filter(agent=agent, proof_jti=verified.jti).exists():
                raise ChainError("Proof jti was already used.") from None
            raise
        ChainedGrant.objects.filter(pk=parent.pk).update(children_count=F("children_count") + 1)
    return step, code


# --- browser steps (DESIGN §6) ---------------------------------------------------------


def preview_parent(application, code: str) -> ChainedGrant:
    """The step ``code`` names, if this client may extend it now: what the consent and
    wallet pages show before anything is written. Reads only: an ordinary DOT code
    gives an unsaved root. Raises ChainError(invalid_request) otherwise; an exchanged
    code is refused here and treated as a replay only when a step is really added."""
    digest = code_digest(code)
    step = (
        ChainedGrant.objects.annotate(code_live=Exists(get_grant_model().objects.filter(pk=OuterRef("grant_id"))))
        .filter(code_digest=digest)
        .first()
    )
    if step is None:
        grant = plausible_code(code) and get_grant_model().objects.filter(code=code, application=application).first()
        if not grant or grant.is_expired():
            raise ChainError(PREVIOUS_CODE_REFUSED, "invalid_request")
        step = _root_step(grant, application, digest)
    try:
        check_can_extend(step, application)
    except ChainError as exc:
        raise ChainError(PREVIOUS_CODE_REFUSED + " " + str(exc), "invalid_request") from None
    return step


PREVIOUS_CODE_REFUSED = "The previous authorization code (code) cannot be continued."


def refuse_resource(resource: list[str]) -> None:
    """RFC 8707 ``resource`` on a browser step (consent or wallet): refused. The step's
    code would not carry it, nor would the agent hops after it, so the token would
    silently be valid at every resource server instead of the one the client asked."""
    if resource:
        raise ChainError("Resource indicators (resource) are not supported on chain steps.", "invalid_target")


def chain_so_far(step: ChainedGrant) -> list[ChainedGrant]:
    """The steps from the root down to ``step`` with their actors loaded (one query),
    for a consent or wallet page. An unsaved root (ordinary DOT code) is alone."""
    if step._state.adding:
        return [step]
    ids = [seg for seg in step.path.split("/") if seg]
    rows = ChainedGrant.objects.filter(pk__in=ids).select_related("agent", "user")
    return sorted(rows, key=lambda s: s.depth)


def add_browser_step(
    *,
    kind: str,
    application,
    parent: ChainedGrant | None,
    grant,
    user,
    subject: str,
    requested_scope: str,
    presentation: proofs.VerifiedPresentation | None = None,
) -> ChainedGrant:
    """Record a user (consent) or wallet step for ``grant``, the DOT grant just created
    for its code. Call inside the caller's transaction, with ``parent`` locked by
    :func:`lock_parent` (or None for a wallet root). The person who acted becomes the
    person the chain acts for from this step on; the scope is what they granted."""
    step = ChainedGrant(
        kind=kind,
        code_digest=code_digest(grant.code),
        expires=grant.expires,
        redirect_uri=grant.redirect_uri,
        application=application,
        user=user,
        subject=subject,
        scope=grant.scope,
        requested_scope=" ".join(dict.fromkeys(requested_scope.split())),
        grant_id=grant.pk,
    )
    if presentation is not None:
        step.proof_jti = presentation.jti[:255]
        step.proof_claims = presentation.claims
        step.proof_digest = presentation.digest
    _insert_step(step, parent)
    if parent is not None:
        ChainedGrant.objects.filter(pk=parent.pk).update(children_count=F("children_count") + 1)
    return step


def add_user_step(application, parent_code: str, user, save_grant, requested_scope: str) -> ChainedGrant:
    """A person's consent step (authorize with ``code=<previous>``): lock the parent,
    let ``save_grant()`` create DOT's grant for the new code in the same transaction,
    and add a ``user`` child. A replayed (exchanged) parent revokes its subtree."""
    try:
        with transaction.atomic():
            parent = lock_parent(application, parent_code)
            grant = save_grant()
            step = add_browser_step(
                kind=ChainedGrant.Kind.USER, application=application, parent=parent, grant=grant,
                user=user, subject=str(user.pk), requested_scope=requested_scope,
            )
    except CodeReused as exc:
        handle_replay(exc.step)
        raise
    signals.step_created.send(sender=ChainedGrant, step=step)
    return step


# --- exchange, replay, revocation ---------------------------------------------------


def find_step(code: str) -> ChainedGrant | None:
    return ChainedGrant.objects.filter(code_digest=code_digest(code)).first()


def check_exchangeable(step: ChainedGrant, application) -> None:
    """Refuse exchanging a chained code that is revoked, expired or another client's.
    (An exchanged code is a replay: see :func:`handle_replay`.)"""
    if step.application_id != application.pk or step.revoked_at or step.expires <= timezone.now():
        raise ChainError("The authorization code is invalid, expired or revoked.")


def record_exchange(step: ChainedGrant, access_token_id, token_family) -> bool:
    """Mark a step exchanged and link the token; False if it already was (a replay)
    or was revoked meanwhile. One conditional UPDATE, so exactly one exchange wins."""
    now = timezone.now()
    return bool(
        ChainedGrant.objects.filter(
            pk=step.pk, exchanged_at__isnull=True, revoked_at__isnull=True, expires__gt=now
        ).update(exchanged_at=now, ended_at=now, access_token_id=access_token_id, token_family=token_family)
    )


def handle_replay(step: ChainedGrant) -> int:
    """An exchanged code came back: revoke the step's subtree and every token issued
    from it (RFC 6749 §4.1.2, RFC 9700 §4.2.4)."""
    count = revoke_subtree(step, reason="authorization code replay")
    signals.replay_detected.send(sender=ChainedGrant, step=step)
    return count


def revoke_subtree(step: ChainedGrant, reason: str = "revoked") -> int:
    """Revoke a step and all its descendants: the steps, their DOT grants and every
    access/refresh token issued from them, in a constant number of queries whatever
    the subtree's size. Returns how many steps were newly revoked."""
    AccessToken = get_access_token_model()
    RefreshToken = get_refresh_token_model()
    subtree = ChainedGrant.objects.subtree_of(step)
    now = timezone.now()
    with transaction.atomic():
        lock_chain(step.root_id)
        count = subtree.filter(revoked_at__isnull=True).update(
            revoked_at=now, revoked_reason=reason[:255], ended_at=Coalesce("ended_at", Value(now))
        )
        get_grant_model().objects.filter(pk__in=subtree.filter(grant_id__isnull=False).values("grant_id")).delete()
        families = subtree.filter(token_family__isnull=False).values("token_family")
        RefreshToken.objects.filter(token_family__in=families, revoked__isnull=True).update(
            revoked=now, updated=now
        )
        # One DELETE, not the ORM collector (which loads every token and deletes in
        # batches of 100): DOT's revoke is a delete, and the only reference to these
        # tokens, RefreshToken.access_token, is cleared next (constraints are deferred).
        doomed = AccessToken.objects.filter(
            Q(pk__in=subtree.filter(access_token__isnull=False).values("access_token_id"))
            | Q(pk__in=RefreshToken.objects.filter(token_family__in=families).values("access_token_id"))
        )
        doomed._raw_delete(doomed.db)
        RefreshToken.objects.filter(token_family__in=families, access_token__isnull=False).update(access_token=None)
    if count:
        signals.chain_revoked.send(sender=ChainedGrant, step=step, count=count, reason=reason)
    return count


# --- reading a chain ---------------------------------------------------------------------


def step_for_token(access_token) -> ChainedGrant | None:
    """The step an access token was issued from, directly or through its refresh
    token family (tokens issued by refreshing keep their step). Indexed lookups only:
    a plain DOT token costs two small queries, whatever the table's size."""
    steps = ChainedGrant.objects.only("id", "root_id", "depth", "path", "subject", "revoked_at").order_by()
    step = steps.filter(access_token_id=access_token.pk).first()
    if step is not None:
        return step
    related = Q(access_token_id=access_token.pk)
    if access_token.source_refresh_token_id:
        related |= Q(pk=access_token.source_refresh_token_id)
    families = list(
        get_refresh_token_model().objects.filter(related, token_family__isnull=False)
        .values_list("token_family", flat=True)
    )
    return steps.filter(token_family__in=families).first() if families else None


def ancestors(step: ChainedGrant) -> list[ChainedGrant]:
    """The steps from the root down to ``step`` (inclusive), in one query."""
    ids = [seg for seg in step.path.split("/") if seg]
    rows = ChainedGrant.objects.filter(pk__in=ids).only("id", "subject", "kind", "depth")
    return sorted(rows, key=lambda s: s.depth)


def actor_claim(step: ChainedGrant) -> dict[str, Any] | None:
    """RFC 8693 §4.1 ``act``: the actors from this step up to (not including) the
    root, outermost = the current actor. The root's actor is the token's subject."""
    act: dict[str, Any] | None = None
    for node in ancestors(step)[1:]:
        act = {"sub": node.subject, **({"act": act} if act else {})}
    return act
