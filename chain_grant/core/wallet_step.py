"""The wallet step (SIOPv2 over OpenID4VP direct_post) as plain functions: a pending request, the wallet's
self-issued id_token (SIOPv2 over OpenID4VP ``direct_post``), and the browser
collecting the new code. No HTTP here; ``wallet_views`` translates.

Lifecycle of a :class:`~chain_grant.models.WalletRequest`::

    pending --(wallet posts a valid id_token)--> verified --(browser collects)--> done
       \\--(browser cancels)--> cancelled          (any state past ``expires``: expired)

The code is created only when the browser collects it, with the poll token the
request page holds (cross-device: the page polls) or the response code the wallet
was given (same device: the wallet opens it in the browser). Both are single-use
secrets stored as digests, so no table holds a usable code. A refused answer does
not end the request (whoever saw the QR code could otherwise cancel it): it is
recorded, shown to the browser, and the wallet may answer again until expiry.
"""

from __future__ import annotations

import hmac
import json
import secrets
from datetime import timedelta
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from oauth2_provider.oauth2_backends import _add_iss_to_redirect
from oauth2_provider.settings import oauth2_settings

from .. import signals
from ..client.jose import sha256_hex, strict_json
from ..models import ChainedGrant, Wallet, WalletRequest
from ..settings import chain_grant_settings
from . import proofs
from .errors import ChainError
from .lifecycle import CodeReused, replay_revokes
from .policy import client_may_chain
from .steps import add_browser_step, continued_step, issue_code, lock_step

MAX_CLIENT_METADATA = 4096
SUBJECT_SYNTAX_TYPES = ["did:jwk", "urn:ietf:params:oauth:jwk-thumbprint"]


def _matches(secret: str | None, digest: str) -> bool:
    return bool(secret and digest and hmac.compare_digest(sha256_hex(secret), digest))


def parse_client_metadata(raw: str | None) -> dict:
    """The PoC's ``client_metadata`` parameter: a JSON object (kept with the request)."""
    if raw is None or raw == "":
        return {}
    if len(raw) > MAX_CLIENT_METADATA:
        raise ChainError("client_metadata is too large.", "invalid_request")
    try:
        value = strict_json(raw)
    except (ValueError, RecursionError):
        raise ChainError("client_metadata must be a JSON object.", "invalid_request") from None
    if not isinstance(value, dict):
        raise ChainError("client_metadata must be a JSON object.", "invalid_request")
    return value


def check_prompt(prompt: str) -> None:
    """``prompt=none`` asks for no page at all (OIDC Core 3.1.2.1), and a wallet step is
    always one: the holder must present (3.1.2.6 ``interaction_required``)."""
    if "none" in prompt.split():
        raise ChainError("prompt=none, and a wallet presentation needs the holder.", "interaction_required")


def start_request(
    application,
    *,
    redirect_uri: str,
    verifier_id: str,
    scope: str,
    client_state: str = "",
    client_metadata: dict | None = None,
    code_challenge: str = "",
    code_challenge_method: str = "",
    oidc_nonce: str = "",
    parent_code: str | None = None,
) -> tuple[WalletRequest, str]:
    """Store a pending wallet request; return it and the browser's poll token.

    With ``parent_code`` the wallet step will be a child of that step, which must be
    live and this client's (an ordinary DOT code gets its root step now)."""
    parent = continued_step(application, parent_code) if parent_code is not None else None
    poll_token = secrets.token_urlsafe(32)
    now = timezone.now()
    wallet_request = WalletRequest.objects.create(
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        verifier_id=verifier_id,
        poll_digest=sha256_hex(poll_token),
        application=application,
        redirect_uri=redirect_uri,
        client_state=client_state,
        scope=scope,
        client_metadata=client_metadata or {},
        code_challenge=code_challenge,
        code_challenge_method=code_challenge_method,
        oidc_nonce=oidc_nonce[:255],
        parent=parent,
        created=now,
        expires=now + timedelta(seconds=chain_grant_settings.WALLET_REQUEST_SECONDS),
    )
    return wallet_request, poll_token


def request_parameters(wallet_request: WalletRequest, response_uri: str) -> dict[str, str]:
    """What the ``openid://`` link and QR code carry (SIOPv2 / OpenID4VP direct_post)."""
    metadata = {
        "subject_syntax_types_supported": SUBJECT_SYNTAX_TYPES,
        "id_token_signing_alg_values_supported": sorted(chain_grant_settings.allowed_algorithms),
    }
    return {
        "response_type": "id_token",
        "response_mode": "direct_post",
        "client_id": wallet_request.verifier_id,
        "response_uri": response_uri,
        "scope": "openid",
        "nonce": wallet_request.nonce,
        "state": wallet_request.state,
        "client_metadata": json.dumps(metadata, separators=(",", ":")),
    }


def request_url(wallet_request: WalletRequest, response_uri: str) -> str:
    return "openid://?" + urlencode(request_parameters(wallet_request, response_uri))


def _is_expired(wallet_request: WalletRequest) -> bool:
    return wallet_request.expires <= timezone.now()


def accept_presentation(state: str, id_token: str) -> tuple[WalletRequest, str]:
    """The wallet's ``direct_post``: verify its id_token against the pending request
    named by ``state``; return the request and a single-use response code for the
    wallet's ``redirect_uri``. Raises ChainError (the wallet gets it as error JSON)."""
    if not state or len(state) > 64:
        raise ChainError("Unknown or missing state.", "invalid_request")
    with transaction.atomic():
        wallet_request = WalletRequest.objects.select_for_update().filter(state=state).first()
        if wallet_request is None:
            raise ChainError("Unknown or missing state.", "invalid_request")
        if wallet_request.status != WalletRequest.Status.PENDING:
            raise ChainError("This wallet request was already answered (the nonce is single-use).", "invalid_request")
        if _is_expired(wallet_request):
            raise ChainError("The wallet request has expired.", "invalid_request")
        try:
            presentation = proofs.verify_self_issued_id_token(
                id_token, audience=wallet_request.verifier_id, nonce=wallet_request.nonce
            )
        except ChainError as exc:
            wallet_request.last_error = exc.description
            wallet_request.save(update_fields=["last_error"])  # committed: the browser page shows it
            refused: ChainError | None = exc
        else:
            refused = None
            response_code = secrets.token_urlsafe(32)
            wallet_request.wallet = wallet_for(presentation)
            wallet_request.status = WalletRequest.Status.VERIFIED
            wallet_request.presentation_claims = presentation.claims
            wallet_request.presentation_digest = presentation.digest
            wallet_request.response_code_digest = sha256_hex(response_code)
            wallet_request.last_error = ""
            wallet_request.save()
    if refused is not None:
        raise refused
    return wallet_request, response_code


def wallet_for(presentation: proofs.VerifiedPresentation) -> Wallet:
    """The holder's wallet record and account, created on first presentation."""
    wallet = Wallet.objects.filter(thumbprint=presentation.thumbprint).select_related("user").first()
    if wallet is None:
        User = get_user_model()
        user = User(**{User.USERNAME_FIELD: "wallet-" + presentation.thumbprint[:40]})
        user.set_unusable_password()
        try:
            with transaction.atomic():
                user.save()
                wallet = Wallet.objects.create(
                    thumbprint=presentation.thumbprint,
                    subject=presentation.subject,
                    public_jwk=presentation.public_jwk,
                    user=user,
                )
        except IntegrityError:  # a concurrent first presentation of the same key, or an account
            wallet = Wallet.objects.select_related("user").filter(thumbprint=presentation.thumbprint).first()
            wallet = wallet or _relink(presentation, user.get_username())  # whose wallet record was deleted
    else:
        Wallet.objects.filter(pk=wallet.pk).update(subject=presentation.subject, last_presented=timezone.now())
    return wallet


def _relink(presentation: proofs.VerifiedPresentation, username: str) -> Wallet:
    """The account made for this key earlier (its name is the key's thumbprint), after an
    admin deleted its wallet record; never an account someone can log in to or has used
    (SSO and social sign-ups have no usable password either, and the name is public)."""
    User = get_user_model()
    user = User.objects.filter(**{User.USERNAME_FIELD: username}, chain_wallet__isnull=True).first()
    if user is None or not _machine_account(user):
        raise ChainError("The account name for this wallet is taken by another account.", "invalid_request")
    try:
        with transaction.atomic():
            return Wallet.objects.create(
                thumbprint=presentation.thumbprint,
                subject=presentation.subject,
                public_jwk=presentation.public_jwk,
                user=user,
            )
    except IntegrityError:  # relinked concurrently
        return Wallet.objects.select_related("user").get(thumbprint=presentation.thumbprint)


def _machine_account(user) -> bool:
    """What wallet_for makes: no usable password, never logged in, no admin rights."""
    return not (
        user.has_usable_password()
        or getattr(user, "last_login", None)
        or getattr(user, "is_staff", False)
        or getattr(user, "is_superuser", False)
    )


def client_redirect(wallet_request: WalletRequest, params: dict[str, str], issuer: str | None) -> str:
    """The client's redirect_uri with ``params``, its ``state`` and (RFC 9207) ``iss``."""
    params = dict(params)
    if wallet_request.client_state:
        params["state"] = wallet_request.client_state
    separator = "&" if "?" in wallet_request.redirect_uri else "?"
    url = wallet_request.redirect_uri + separator + urlencode(params)
    if issuer and oauth2_settings.COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS:
        url = _add_iss_to_redirect(url, issuer)  # DOT's: one iss, even if the registered URI had one
    return url


class RequestEnded(ChainError):
    """The request cannot give a code any more; ``redirect`` (if set) tells the client."""

    def __init__(self, description: str, redirect: str | None = None):
        super().__init__(description, "access_denied")
        self.redirect = redirect


def _error_redirect(
    wallet_request: WalletRequest, description: str, issuer: str | None, error: str = "access_denied"
) -> str:
    return client_redirect(wallet_request, {"error": error, "error_description": description}, issuer)


def complete(
    request_id, *, poll_token: str | None = None, response_code: str | None = None, issuer: str | None = None
) -> tuple[ChainedGrant, str]:
    """The browser collects the result: create the wallet step and its code, and
    return the step and the client redirect (``code``, ``state``). Exactly once.

    Raises RequestEnded (with an error redirect for the client when the request is
    over: expired or cancelled) or ChainError (not yet answered, wrong secret)."""
    try:
        with replay_revokes(), transaction.atomic():
            wallet_request = (
                # of=self: PostgreSQL refuses FOR UPDATE on the nullable side of the wallet join
                WalletRequest.objects.select_for_update(of=("self",))
                .select_related("application", "wallet__user", "parent")
                .filter(pk=request_id)
                .first()
            )
            if wallet_request is None or not (
                _matches(poll_token, wallet_request.poll_digest)
                or _matches(response_code, wallet_request.response_code_digest)
            ):
                raise ChainError("Unknown wallet request.", "invalid_request")
            status = wallet_request.status
            if status == WalletRequest.Status.DONE:
                raise RequestEnded("The code for this wallet request was already delivered.")
            if status == WalletRequest.Status.CANCELLED:
                raise RequestEnded("The wallet request was cancelled.")
            if _is_expired(wallet_request):
                raise RequestEnded(
                    "The wallet request expired.",
                    _error_redirect(wallet_request, "The wallet request expired.", issuer),
                )
            if status == WalletRequest.Status.PENDING:
                raise ChainError("The wallet has not answered yet.", "authorization_pending")
            if not client_may_chain(wallet_request.application):  # an operator turned it off meanwhile
                description = "This client may not use the wallet step."
                raise RequestEnded(
                    description, _error_redirect(wallet_request, description, issuer, "unauthorized_client")
                )
            if wallet_request.wallet is None:  # the holder's account was deleted meanwhile
                description = "The wallet's account no longer exists."
                raise RequestEnded(description, _error_redirect(wallet_request, description, issuer))
            if not wallet_request.wallet.user.is_active:  # an admin blocked it, as one blocks a person
                description = "The wallet's account is disabled."
                raise RequestEnded(description, _error_redirect(wallet_request, description, issuer))
            parent = None
            if wallet_request.parent is not None:
                try:
                    parent, _ = lock_step(
                        wallet_request.application, wallet_request.parent_id, wallet_request.parent.root_id
                    )
                except CodeReused:
                    raise
                except ChainError as exc:
                    raise RequestEnded(
                        exc.description, _error_redirect(wallet_request, exc.description, issuer)
                    ) from None
            step, code = _issue(wallet_request, parent)
    except CodeReused:  # the previous code was exchanged meanwhile: a replay, revoked
        assert wallet_request is not None  # CodeReused comes after the lookup
        description = "The previous authorization code was already exchanged."
        raise RequestEnded(description, _error_redirect(wallet_request, description, issuer)) from None
    redirect = client_redirect(wallet_request, {"code": code}, issuer)
    signals.step_created.send(sender=ChainedGrant, step=step)
    return step, redirect


def _issue(wallet_request: WalletRequest, parent: ChainedGrant | None) -> tuple[ChainedGrant, str]:
    wallet = wallet_request.wallet
    assert wallet is not None  # complete() checked it
    grant, code = issue_code(
        wallet_request.application,
        user_id=wallet.user_id,
        redirect_uri=wallet_request.redirect_uri,
        scope=wallet_request.scope,
        lifetime=oauth2_settings.AUTHORIZATION_CODE_EXPIRE_SECONDS,
        code_challenge=wallet_request.code_challenge,
        code_challenge_method=wallet_request.code_challenge_method,
        nonce=wallet_request.oidc_nonce,
    )
    presentation = proofs.VerifiedPresentation(
        subject=wallet.subject,
        public_jwk=wallet.public_jwk,
        thumbprint=wallet.thumbprint,
        claims=wallet_request.presentation_claims,
        digest=wallet_request.presentation_digest,
        jti=str(wallet_request.presentation_claims.get("jti", "")),
    )
    step = add_browser_step(
        kind=ChainedGrant.Kind.WALLET,
        application=wallet_request.application,
        parent=parent,
        grant=grant,
        subject=wallet_request.presentation_claims.get("sub", wallet.subject),
        requested_scope=wallet_request.scope,
        presentation=presentation,
    )
    wallet_request.status = WalletRequest.Status.DONE
    wallet_request.step = step
    wallet_request.completed_at = timezone.now()
    wallet_request.save(update_fields=["status", "step", "completed_at"])
    return step, code


def cancel(request_id, poll_token: str, issuer: str | None = None) -> str:
    """The person gave up on the wallet page: end the request; the client's error redirect."""
    with transaction.atomic():
        wallet_request = WalletRequest.objects.select_for_update().filter(pk=request_id).first()
        if wallet_request is None or not _matches(poll_token, wallet_request.poll_digest):
            raise ChainError("Unknown wallet request.", "invalid_request")
        if wallet_request.status == WalletRequest.Status.DONE:
            raise RequestEnded("The code for this wallet request was already delivered.")
        wallet_request.status = WalletRequest.Status.CANCELLED
        wallet_request.completed_at = timezone.now()
        wallet_request.save(update_fields=["status", "completed_at"])
    return _error_redirect(wallet_request, "The person cancelled the wallet presentation.", issuer)


def status(request_id, poll_token: str) -> dict[str, str]:
    """What the waiting browser page polls: pending, verified, done, cancelled or expired."""
    wallet_request = (
        WalletRequest.objects.filter(pk=request_id).only("status", "poll_digest", "expires", "last_error").first()
    )
    if wallet_request is None or not _matches(poll_token, wallet_request.poll_digest):
        raise ChainError("Unknown wallet request.", "invalid_request")
    state = wallet_request.status
    if state in (WalletRequest.Status.PENDING, WalletRequest.Status.VERIFIED) and _is_expired(wallet_request):
        state = "expired"
    result = {"status": state}
    if wallet_request.last_error and state == WalletRequest.Status.PENDING:
        result["last_error"] = wallet_request.last_error
    return result
