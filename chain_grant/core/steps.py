"""Adding steps to a chain: the agent hop, a person's consent, a wallet's
presentation. Each adds one child under a locked parent, with the DOT ``Grant`` for
its new code, in one transaction; a replayed parent revokes its subtree.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone
from oauth2_provider.models import get_grant_model

from .. import signals
from ..models import Agent, ChainedGrant
from ..settings import chain_grant_settings
from . import handoff, proofs
from .agents import agent_keys_for, self_asserted_agent
from .codes import code_digest, derive_code, new_code, plausible_code
from .errors import ChainError
from .lifecycle import CodeReused, replay_revokes
from .locks import lock_chain, lock_chain_of
from .policy import attenuate_scope, check_code_verifier, check_pkce, poc_client
from .tree import append, root_step, step_for_grant

PREVIOUS_CODE_REFUSED = "The previous authorization code (code) cannot be continued."
UNKNOWN_CODE = "The authorization code is unknown, expired or was issued to another client."


@dataclass(frozen=True)
class ParentState:
    """What a parent's own row does not say, read with it: whether its code's DOT
    grant still exists, whether the person the chain acts for is active, and its
    code's RFC 8707 restriction (which a hop carries down)."""

    code_live: bool = True
    person_active: bool = True
    resource: tuple[str, ...] = ()
    code_challenge: str = ""
    code_challenge_method: str = ""


def check_can_extend(
    parent: ChainedGrant,
    application,
    state: ParentState,
    limits: handoff.Limits | None = None,
    *,
    by_token: bool = False,
) -> None:
    """The parent rules: ownership, state, fan-out, depth (the client's hand-off policy's
    limits, else the settings'; ``limits`` if the caller read them), the person.
    ``by_token``: the parent is named by the access token its code was exchanged for
    (RFC 8693 token exchange), whose own validity the caller checked, so its code's
    state does not count."""
    if parent.application_id != application.pk:
        raise ChainError(UNKNOWN_CODE)
    if parent.revoked_at:
        raise ChainError("The authorization code was revoked.")
    if chain_grant_settings.ON_DISABLE == "revoke" and parent.agent_id and not getattr(parent, "agent_active", True):
        # As lifecycle.check_exchangeable: an agent disabled without a signal passes nothing on.
        raise ChainError("The agent this code was handed to is disabled.")
    if not by_token:
        if parent.exchanged_at:
            raise CodeReused(parent)
        if parent.expires <= timezone.now() or not state.code_live:
            raise ChainError(UNKNOWN_CODE)
    limits = limits or handoff.limits(application)
    if parent.children_count >= limits.max_children:
        rule = "the hand-off policy's max_children" if limits.source else "MAX_CHILDREN"
        raise ChainError(f"The authorization code reached its fan-out limit ({rule}).")
    if parent.depth + 1 > limits.max_depth:
        rule = "the hand-off policy's max_depth" if limits.source else "MAX_DEPTH"
        raise ChainError(f"The chain reached its depth limit ({rule}).")
    if parent.user_id is None:
        raise ChainError("The person this chain acts for no longer exists.")
    if not state.person_active:
        raise ChainError("The person this chain acts for is disabled.")


def _with_state(steps):
    """Annotate steps with what ParentState needs (in the same query). The grant's
    ``code_challenge`` is never NULL in DOT's table, so its subquery being NULL says the
    grant is gone: no separate EXISTS."""
    Grant = get_grant_model()
    return steps.annotate(
        person_active=Exists(get_user_model().objects.filter(pk=OuterRef("user_id"), is_active=True)),
        agent_active=Exists(Agent.objects.filter(pk=OuterRef("agent_id"), is_active=True)),
        grant_resource=Subquery(
            Grant.objects.filter(pk=OuterRef("grant_id")).values("resource")[:1],
            output_field=Grant._meta.get_field("resource"),
        ),
        grant_challenge=Subquery(Grant.objects.filter(pk=OuterRef("grant_id")).values("code_challenge")[:1]),
        grant_challenge_method=Subquery(
            Grant.objects.filter(pk=OuterRef("grant_id")).values("code_challenge_method")[:1]
        ),
    )


def _state_of(step) -> ParentState:
    return ParentState(
        step.grant_challenge is not None,
        step.person_active,
        tuple(step.grant_resource or ()),
        step.grant_challenge or "",
        step.grant_challenge_method or "",
    )


# --- the tree ---------------------------------------------------------------------------


def _root_from_grant(application, code: str) -> ChainedGrant:
    """The root step for an ordinary DOT code, created from its ``Grant`` on first use.

    Raises ChainError if the code is unknown to this client or expired. Safe under
    concurrency: a second creator finds the first one's row.
    """
    digest = code_digest(code)
    # Locked: an exchange of this code (lifecycle.exchange) locks it too, so a code is
    # either chained first (and its root marked at exchange) or gone.
    grant = plausible_code(code) and (
        get_grant_model().objects.select_for_update().filter(code=digest, application=application).first()
    )
    if not grant or grant.is_expired():
        raise ChainError(UNKNOWN_CODE)
    step = root_step(grant, application)
    try:
        with transaction.atomic():
            return append(step, None)
    except IntegrityError:
        return ChainedGrant.objects.get(code_digest=digest)


def lock_parent(application, code: str, limits: handoff.Limits | None = None) -> tuple[ChainedGrant, ParentState]:
    """The step ``code`` names, locked (chain root first), and checked for extension
    (``limits``: the client's, if the caller read its policy). An ordinary DOT code
    becomes a chain root here, on first use."""
    digest = code_digest(code)
    if lock_chain_of(digest) is None:  # finds and locks the chain in one statement
        root = _root_from_grant(application, code)
        return lock_step(application, root.pk, root.root_id, limits)
    parent = _with_state(ChainedGrant.objects.select_for_update()).get(code_digest=digest)
    state = _state_of(parent)
    check_can_extend(parent, application, state, limits)
    return parent, state


def lock_step(
    application, pk, root_id, limits: handoff.Limits | None = None, *, by_token: bool = False
) -> tuple[ChainedGrant, ParentState]:
    """Lock a chain, then one of its steps, and check the step may be extended."""
    lock_chain(root_id)
    parent = _with_state(ChainedGrant.objects.select_for_update()).get(pk=pk)
    state = _state_of(parent)
    check_can_extend(parent, application, state, limits, by_token=by_token)
    return parent, state


JOINED_UNKNOWN = "A joined code (joined_codes) is unknown, expired, another client's or from another chain."


def check_join_request(parent_code: str, joined_codes: list[str], verifiers: list[str] | None) -> None:
    """The shape of a join (fan-in) request, before anything is read."""
    if len(joined_codes) > chain_grant_settings.MAX_JOINS:
        raise ChainError("Too many joined codes (MAX_JOINS).", "invalid_request")
    if len(set(joined_codes)) != len(joined_codes):
        raise ChainError("joined_codes names a code twice.", "invalid_request")
    if parent_code in joined_codes:
        raise ChainError("joined_codes repeats authorization_code.", "invalid_request")
    if verifiers is not None and len(verifiers) != len(joined_codes):
        raise ChainError("joined_code_verifiers must give one verifier per joined code.", "invalid_request")


def lock_joined(
    application,
    parent: ChainedGrant,
    state: ParentState,
    codes: list[str],
    verifiers: list[str] | None = None,
    limits: handoff.Limits | None = None,
) -> list[ChainedGrant]:
    """The steps a join's ``joined_codes`` name (the chain is locked; they are locked
    too, in primary-key order), each checked as a parent is: live, this client's, under
    its fan-out limit, in the same chain, for the same person, with the same resource,
    and (a public client) with its PKCE verifier among ``verifiers``, in order."""
    if not codes:
        return []
    digests = [code_digest(code) for code in codes]
    rows = _with_state(ChainedGrant.objects.select_for_update()).filter(code_digest__in=digests, root_id=parent.root_id)
    found = {row.code_digest: row for row in rows.order_by("pk")}
    limits = limits or handoff.limits(application)
    joined: list[ChainedGrant] = []
    for digest in digests:
        step = found.get(digest)
        if step is None:
            raise ChainError(JOINED_UNKNOWN)
        joined_state = _state_of(step)
        try:
            check_can_extend(step, application, joined_state, limits)
        except CodeReused:
            raise
        except ChainError as exc:
            raise ChainError(f"A joined code (joined_codes) cannot be continued: {exc}", exc.error) from None
        if step.user_id != parent.user_id:
            raise ChainError("A joined code acts for another person.")
        if set(joined_state.resource) != set(state.resource):
            raise ChainError("A joined code carries another resource restriction (RFC 8707).")
        verifier = verifiers[len(joined)] if verifiers else None
        check_code_verifier(
            verifier,
            joined_state.code_challenge,
            joined_state.code_challenge_method,
            required=application.client_type == application.CLIENT_PUBLIC,
        )
        joined.append(step)
    return joined


def check_dpop_binding(parents: list[ChainedGrant], jkt: str) -> None:
    """RFC 9449: a code bound to a DPoP key is continued only with a proof by that key."""
    for parent in parents:
        if parent.dpop_jkt and parent.dpop_jkt != jkt:
            raise ChainError("The previous code is bound to a DPoP key this request does not prove.")


def preview_parent(application, code: str) -> ChainedGrant:
    """The step ``code`` names, if this client may extend it now: what the consent and
    wallet pages show before anything is written. Reads only: an ordinary DOT code
    gives an unsaved root. Raises ChainError(invalid_request) otherwise; an exchanged
    code is refused here and treated as a replay only when a step is really added."""
    digest = code_digest(code)
    step = _with_state(ChainedGrant.objects.filter(code_digest=digest)).first()
    if step is not None:
        state = _state_of(step)
    else:
        grant = plausible_code(code) and (
            get_grant_model().objects.select_related("user").filter(code=digest, application=application).first()
        )
        if not grant or grant.is_expired():
            raise ChainError(PREVIOUS_CODE_REFUSED, "invalid_request")
        step = root_step(grant, application)
        state = ParentState(person_active=grant.user.is_active)
    try:
        check_can_extend(step, application, state)
    except ChainError as exc:
        raise ChainError(PREVIOUS_CODE_REFUSED + " " + str(exc), "invalid_request") from None
    return step


def continued_step(application, code: str) -> ChainedGrant:
    """The step ``code`` names, checked as :func:`preview_parent` does, written if it
    is an ordinary DOT code's root (so a pending wallet request can point at it). No
    lock is kept: the step that continues it locks it when it is added."""
    preview_parent(application, code)
    step = ChainedGrant.objects.filter(code_digest=code_digest(code)).first()
    if step is None:
        with transaction.atomic():
            step = _root_from_grant(application, code)
    return step


# --- issuing a code -----------------------------------------------------------------


def issue_code(
    application,
    *,
    user_id,
    redirect_uri: str,
    scope: str,
    lifetime: int,
    code_challenge: str = "",
    code_challenge_method: str = "",
    nonce: str = "",
    resource=(),
    step_id=None,
):
    """A new code and DOT's ``Grant`` for it, so DOT's own exchange, PKCE and expiry
    apply. Returns (grant, code). With ``step_id`` the code is derived from it
    (:func:`~chain_grant.core.codes.derive_code`), so a retried hop can be answered
    again. (A person's consent step gets its grant from DOT's authorize flow
    instead, through the IdP's own validator.)"""
    code = derive_code(step_id) if step_id is not None else new_code()
    grant = get_grant_model().objects.create(
        application=application,
        user_id=user_id,
        code=code_digest(code),  # DOT's table keeps the digest, as chain_grant's (oauth.digest_codes)
        expires=timezone.now() + timedelta(seconds=lifetime),
        redirect_uri=redirect_uri,
        scope=scope,
        code_challenge=code_challenge,
        code_challenge_method=code_challenge_method,
        nonce=nonce,
        claims="{}",
        resource=list(resource),
    )
    return grant, code


# --- the agent hop --------------------------------------------------------------------


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
    code_verifier: str | None = None,
    joined_codes: list[str] | None = None,
    joined_code_verifiers: list[str] | None = None,
    dpop_jkt: str = "",
) -> tuple[ChainedGrant, str]:
    """An agent hop (``grant_type=code_chain``): verify, then add one child step and the
    DOT grant for its new code, atomically, with the parent row locked.

    With ``joined_codes`` the hop is a join (fan-in): the step has those parents too
    (same chain, client and person), its scope is within every parent's, and its proof
    names each by ``joined_c_hashes``. A public client gives each one's PKCE verifier
    in ``joined_code_verifiers``.

    ``dpop_jkt``: the key of the request's DPoP proof (checked by the caller); the new
    code is bound to it, and a parent bound to a key needs a proof by that key.

    Returns the new step and its code.
    """
    joined_codes = joined_codes or []
    check_join_request(parent_code, joined_codes, joined_code_verifiers)
    challenge, method = check_pkce(code_challenge, code_challenge_method, pkce_required)
    verified = proofs.verify_agent_proof(
        proof,
        code=parent_code,
        audiences=audiences,
        find_keys=agent_keys_for(application),
        relaxed=chain_grant_settings.RELAXED_PROOFS,
        poc=poc_client(application),
        joined_codes=joined_codes,
    )
    try:
        with replay_revokes(), transaction.atomic():
            agent = verified.key.agent if verified.key else self_asserted_agent(verified, application)
            policy = handoff.policy_for(application)  # read once: limits, edges, fresh consent
            limits = handoff.limits(application, policy)
            parent, state = lock_parent(application, parent_code, limits)
            check_code_verifier(
                code_verifier,
                state.code_challenge,
                state.code_challenge_method,
                required=application.client_type == application.CLIENT_PUBLIC,
            )
            joined = lock_joined(application, parent, state, joined_codes, joined_code_verifiers, limits)
            check_dpop_binding([parent, *joined], dpop_jkt)
            shared = [s for s in parent.scope.split() if all(s in other.scope.split() for other in joined)]
            granted = attenuate_scope(" ".join(shared), agent.scope_set, scope)
            decision = handoff.check(application, parent, agent.identifier, granted, joined, policy)
            step_id = uuid.uuid4()
            grant, code = issue_code(
                application,
                user_id=parent.user_id,
                redirect_uri=parent.redirect_uri,
                scope=granted,
                lifetime=chain_grant_settings.CODE_EXPIRE_SECONDS,
                code_challenge=challenge,
                code_challenge_method=method,
                resource=state.resource,  # an RFC 8707 restriction carries down the chain
                step_id=step_id,
            )
            step = agent_step(
                application,
                grant,
                verified,
                id=step_id,
                agent=agent,
                requested_scope=normalised_scope(scope) if scope is not None else granted,
                dpop_jkt=dpop_jkt,
                policy_decision=decision,
            )
            append_once(step, parent, joined)
    except CodeReused:
        raise
    except ChainError:
        # The same request again (its response was lost): the same step and code.
        retried = _retried_hop(application, parent_code, verified, scope, challenge, method, joined_codes)
        if retried is None:
            raise
        return retried
    signals.step_created.send(sender=ChainedGrant, step=step)
    return step, code


def agent_step(application, grant, verified: proofs.VerifiedProof, **fields) -> ChainedGrant:
    """The (unsaved) step of a hand-off to ``fields["agent"]``, recording its verified proof."""
    return step_for_grant(
        ChainedGrant.Kind.AGENT,
        application,
        grant,
        subject=fields["agent"].identifier,
        proof_jti=verified.jti,
        proof_claims=verified.claims,
        proof_digest=verified.digest,
        message_digest=verified.message_digest,
        agent_key_thumbprint=verified.thumbprint,
        **fields,
    )


def append_once(step: ChainedGrant, parent: ChainedGrant, joined=(), reused: str = "Proof jti was already used."):
    """Append an agent's step; ChainError(``reused``) if its proof's jti was used before
    (the ``(agent, proof_jti)`` constraint)."""
    try:
        with transaction.atomic():
            append(step, parent, joined)
    except IntegrityError:
        if step.proof_jti and ChainedGrant.objects.filter(agent=step.agent, proof_jti=step.proof_jti).exists():
            raise ChainError(reused) from None
        raise


def normalised_scope(scope: str) -> str:
    """A requested scope as a step records it: each scope once, in the order asked."""
    return " ".join(dict.fromkeys(scope.split()))


def _retried_hop(
    application, parent_code, verified, scope, challenge, method, joined_codes=()
) -> tuple[ChainedGrant, str] | None:
    """The step an identical earlier request made (same client, previous code, proof,
    scope and code_challenge), if its code is still live: a retry after a lost
    response. PKCE binds the code, so a replayed request without the verifier gets
    nothing usable; anything different is not a retry."""
    if not verified.jti:
        return None
    step = (
        ChainedGrant.objects.select_related("parent")
        .filter(agent__identifier=verified.subject, proof_jti=verified.jti, application=application)
        .first()
    )
    if step is None or step.proof_digest != verified.digest or step.state != "live":
        return None
    if step.parent is None or step.parent.code_digest != code_digest(parent_code):
        return None
    if _joined_digests(step) != [code_digest(code) for code in joined_codes]:
        return None
    if step.requested_scope != (normalised_scope(scope) if scope is not None else step.scope):
        return None
    grant = get_grant_model().objects.filter(pk=step.grant_id, application=application).first()
    if grant is None or (grant.code_challenge, grant.code_challenge_method) != (challenge, method):
        return None
    return step, derive_code(step.pk)


def _joined_digests(step: ChainedGrant) -> list[str]:
    if not step.joined:
        return []
    digests = dict(
        ChainedGrant.objects.filter(pk__in=[j["step"] for j in step.joined]).values_list("pk", "code_digest")
    )
    return [digests.get(uuid.UUID(j["step"]), "") for j in step.joined]


# --- browser steps --------------------------------------------------------------------


def add_browser_step(
    *,
    kind: str,
    application,
    parent: ChainedGrant | None,
    grant,
    subject: str,
    requested_scope: str,
    presentation: proofs.VerifiedPresentation | None = None,
    dpop_jkt: str = "",
) -> ChainedGrant:
    """Record a user (consent) or wallet step for ``grant``, the DOT grant just created
    for its code. Call inside the caller's transaction, with ``parent`` locked by
    :func:`lock_parent` (or None for a wallet root). The person who acted (the
    grant's user) becomes the person the chain acts for from this step on; the scope
    is what they granted."""
    if parent is not None and parent.dpop_jkt and parent.dpop_jkt != dpop_jkt:
        # RFC 9449 §10: the new code must stay bound to the key the previous one was,
        # so a code stolen on its way through the browser yields nothing usable.
        raise ChainError("The previous code is DPoP-bound: dpop_jkt must name the same key.", "invalid_request")
    step = step_for_grant(
        kind,
        application,
        grant,
        subject=subject,
        requested_scope=normalised_scope(requested_scope),
        dpop_jkt=dpop_jkt,
        policy_decision=handoff.person_decision(application) if parent is not None else {},
    )
    if presentation is not None:
        step.proof_jti = presentation.jti[:255]
        step.proof_claims = presentation.claims
        step.proof_digest = presentation.digest
    return append(step, parent)


def add_user_step(
    application, parent_code: str, user, save_grant, requested_scope: str, dpop_jkt: str = ""
) -> ChainedGrant:
    """A person's consent step (authorize with ``code=<previous>``): lock the parent,
    let ``save_grant()`` create DOT's grant for the new code in the same transaction,
    and add a ``user`` child. A replayed (exchanged) parent revokes its subtree."""
    with replay_revokes(), transaction.atomic():
        parent, _ = lock_parent(application, parent_code)
        grant = save_grant()
        step = add_browser_step(
            kind=ChainedGrant.Kind.USER,
            application=application,
            parent=parent,
            grant=grant,
            subject=str(user.pk),
            requested_scope=requested_scope,
            dpop_jkt=dpop_jkt,
        )
    signals.step_created.send(sender=ChainedGrant, step=step)
    return step
