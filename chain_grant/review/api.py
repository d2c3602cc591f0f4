"""A REST API for auditors (Django REST framework), mounted by ``chain_grant.api_urls``.

Authentication: an OAuth access token (DOT's DRF integration) with scope
``chains:read`` (``chains:revoke`` to revoke) issued to a *staff* user, or a staff
session. Errors are one JSON shape: ``{"error": ..., "error_description": ...}``.
"""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any

from django.db.models import Count, Exists, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from oauth2_provider.settings import oauth2_settings
from rest_framework import exceptions, pagination, parsers, serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from ..core import integrity, lifecycle
from ..models import STEP_STATES, Chain, ChainedGrant
from . import evidence as review

try:  # OpenAPI descriptions, when drf-spectacular is installed
    from drf_spectacular.openapi import AutoSchema
    from drf_spectacular.utils import OpenApiParameter
    from drf_spectacular.utils import extend_schema as _extend_schema

    def extend_schema(**kwargs):
        """drf-spectacular's, built on its AutoSchema whatever the IdP's DRF
        DEFAULT_SCHEMA_CLASS says (extend_schema otherwise extends that class)."""

        def decorate(method):
            method.schema = AutoSchema
            return _extend_schema(**kwargs)(method)

        return decorate

except ImportError:  # pragma: no cover
    OpenApiParameter = None  # type: ignore[assignment, misc]  # drf-spectacular absent
    AutoSchema = None  # type: ignore[assignment, misc]

    def extend_schema(**kwargs):  # its no-op stand-in
        return lambda view: view


READ_SCOPE = "chains:read"
REVOKE_SCOPE = "chains:revoke"
REVOKE_PERMISSION = "chain_grant.revoke_chainedgrant"
# Any: drf-spectacular annotates extend_schema(auth=) as Sequence[str], but it takes the
# operation's security requirements (dicts, what its get_auth returns).
READ_AUTH: Any = [{"oauth2": [READ_SCOPE]}, {"cookieAuth": []}]
REVOKE_AUTH: Any = [{"oauth2": [REVOKE_SCOPE]}, {"cookieAuth": []}]


class ChainsPermission(BasePermission):
    """Token: the view's scope, for a staff user. Session: staff; revoking also needs
    the ``revoke_chainedgrant`` permission (tokens need the user to have it too)."""

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            return False
        scope = getattr(view, "required_scope", READ_SCOPE)
        if scope == REVOKE_SCOPE and not user.has_perm(REVOKE_PERMISSION):
            return False
        token = request.auth
        if isinstance(request.successful_authenticator, OAuth2Authentication):
            return token is not None and token.is_valid([scope])
        return True


def error_handler(exc, context):
    """Every API error as ``{"error": code, "error_description": text}``."""
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(response.data, dict) and set(response.data) == {"error", "error_description"}:
        response.data = {key: str(value) for key, value in response.data.items()}  # already this shape
        return response
    codes = {
        400: "invalid_request",
        401: "invalid_token",
        403: "insufficient_scope",
        404: "not_found",
        405: "method_not_allowed",
        429: "throttled",
    }
    detail = response.data.get("detail") if isinstance(response.data, dict) else None
    response.data = {
        "error": codes.get(response.status_code, "server_error"),
        "error_description": str(detail) if detail else _flatten(response.data),
    }
    return response


def _flatten(data) -> str:
    if isinstance(data, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in data.items())
    if isinstance(data, list):
        return " ".join(_flatten(v) for v in data)
    return str(data)


class ChainPagination(pagination.LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


class ChainSummarySerializer(serializers.Serializer):
    chain_id = serializers.UUIDField(source="pk")
    kind = serializers.CharField()
    actor = serializers.SerializerMethodField()
    application = serializers.CharField(source="application.client_id")
    user = serializers.SerializerMethodField()
    scope = serializers.CharField()
    steps = serializers.IntegerField()
    live_steps = serializers.IntegerField()
    state = serializers.SerializerMethodField()
    created = serializers.DateTimeField()

    def get_actor(self, obj) -> str:
        return review.actor_label(obj)

    def get_user(self, obj) -> str | None:
        return obj.user.get_username() if obj.user_id else None

    def get_state(self, obj) -> str:
        """A chain is live while any step is; otherwise revoked or ended."""
        if obj.live_steps:
            return "live"
        return "revoked" if obj.revoked_at else "ended"


class StepSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    parent = serializers.UUIDField(allow_null=True)  # type: ignore[assignment]  # the stubs see Field.parent; the metaclass pops it
    depth = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=ChainedGrant.Kind.choices)
    actor = serializers.CharField()
    subject = serializers.CharField()
    agent = serializers.CharField(allow_null=True)
    user = serializers.CharField(allow_null=True)
    application = serializers.CharField()
    scope = serializers.CharField()
    requested_scope = serializers.CharField()
    scope_narrowed = serializers.ListField(child=serializers.CharField())
    scope_added = serializers.ListField(child=serializers.CharField())
    proof = serializers.JSONField(allow_null=True, help_text="jti, verified claims and SHA-256 of the raw proof")
    message_digest = serializers.CharField(allow_null=True)
    code_digest_prefix = serializers.CharField()
    link_hash = serializers.CharField()
    state = serializers.ChoiceField(choices=list(STEP_STATES))
    created = serializers.DateTimeField()
    expires = serializers.DateTimeField()
    exchanged_at = serializers.DateTimeField(allow_null=True)
    access_token_id = serializers.IntegerField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    revoked_reason = serializers.CharField(allow_null=True)
    children = serializers.ListField(child=serializers.UUIDField())
    joined = serializers.ListField(child=serializers.UUIDField(), help_text="a join's other parents")
    dpop_jkt = serializers.CharField(allow_null=True, help_text="the DPoP key its code is bound to (RFC 9449)")
    recorded_actor = serializers.JSONField(help_text="the actor as it was at the step")
    hash_version = serializers.IntegerField(help_text="which fields link_hash covers")
    policy_decision = serializers.JSONField(help_text="the hand-off policy rule that allowed the step")


class ProblemSerializer(serializers.Serializer):
    step = serializers.UUIDField(allow_null=True, help_text="the step it is about (null: the whole chain)")
    problem = serializers.CharField()


class VerificationSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    checked = serializers.IntegerField()
    first_bad_step = serializers.UUIDField(allow_null=True)
    problems = ProblemSerializer(many=True)


class HeadSerializer(serializers.Serializer):
    steps = serializers.IntegerField()
    leaves = serializers.CharField(help_text="sum of the leaves' link hashes mod 2**256 (hex)")
    events = serializers.IntegerField()
    event_hash = serializers.CharField()
    jws = serializers.CharField(help_text="the record key's JWS over the head (see /chain/jwks/)")


class ChainTreeSerializer(serializers.Serializer):
    chain_id = serializers.UUIDField()
    steps = StepSerializer(many=True)
    head = HeadSerializer(allow_null=True)
    verification = VerificationSerializer()


class EvidenceSerializer(serializers.Serializer):
    evidence = serializers.JSONField(help_text="iss, iat, typ and the chain tree")
    jws = serializers.CharField(help_text="Compact JWS (RS256, the OIDC key) whose payload is `evidence`")


class RevokeResultSerializer(serializers.Serializer):
    step = serializers.UUIDField()
    chain_id = serializers.UUIDField()
    revoked = serializers.IntegerField(help_text="steps newly revoked")


class JSONParser(parsers.JSONParser):
    """DRF's, reading JSON as UTF-8 (RFC 8259 §8.1) whatever charset is declared, and
    answering nesting past Python's recursion limit as a parse error: DRF catches
    ValueError only, so such a body was a RecursionError (a 500) for anyone, since DOT's
    OAuth2Authentication reads the body before the permission check."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = {**(parser_context or {}), "encoding": "utf-8"}
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None


class BaseView(APIView):
    authentication_classes = [OAuth2Authentication, SessionAuthentication]
    parser_classes = [JSONParser, parsers.FormParser, parsers.MultiPartParser]
    permission_classes = [ChainsPermission]
    required_scope = READ_SCOPE
    if AutoSchema is not None:  # whatever the IdP's DEFAULT_SCHEMA_CLASS says
        schema = AutoSchema()

    def get_exception_handler(self):
        # The API's own error shape, whatever the IdP's global DRF EXCEPTION_HANDLER says.
        return error_handler


class ChainListView(BaseView):
    """List chains (roots), newest first. Filters: ``application`` (client_id),
    ``agent`` (identifier), ``user`` (username), ``state`` (live | ended | revoked),
    ``created_after`` / ``created_before`` (ISO 8601)."""

    pagination_class = ChainPagination

    @extend_schema(
        operation_id="chains_list",
        auth=READ_AUTH,
        responses=ChainSummarySerializer(many=True),
        parameters=[
            OpenApiParameter(name, str, description=text)
            for name, text in (
                ("application", "client_id"),
                ("agent", "agent identifier"),
                ("user", "username"),
                ("state", "live | ended | revoked"),
                ("created_after", "ISO 8601"),
                ("created_before", "ISO 8601"),
            )
        ]
        if OpenApiParameter is not None
        else None,
    )
    def get(self, request):
        qs = self._filter(self._queryset(), request.query_params)
        page = self.pagination_class()
        rows = page.paginate_queryset(qs, request, view=self)
        return page.get_paginated_response(ChainSummarySerializer(rows, many=True).data)

    @staticmethod
    def _queryset():
        members = ChainedGrant.objects.filter(root_id=OuterRef("pk"))
        step_count = members.order_by().values("root_id").annotate(n=Count("pk")).values("n")
        live_count = members.live().order_by().values("root_id").annotate(n=Count("pk")).values("n")
        return (
            Chain.objects.select_related("application", "user", "agent")
            .annotate(
                steps=Coalesce(Subquery(step_count, output_field=IntegerField()), 0),
                live_steps=Coalesce(Subquery(live_count, output_field=IntegerField()), 0),
            )
            .order_by("-created")
        )

    @staticmethod
    def _filter(qs, params):
        if any("\x00" in v for _, values in params.lists() for v in values):
            raise exceptions.ValidationError({"filters": "NUL characters are not allowed"})
        members = ChainedGrant.objects.filter(root_id=OuterRef("pk"))
        if params.get("application"):
            qs = qs.filter(application__client_id=params["application"])
        if params.get("user"):
            qs = qs.filter(user__username=params["user"])
        if params.get("agent"):
            qs = qs.filter(Exists(members.filter(agent__identifier=params["agent"])))
        state = params.get("state")
        if state == "live":
            qs = qs.filter(Exists(members.live()))
        elif state == "revoked":
            qs = qs.filter(revoked_at__isnull=False)
        elif state == "ended":
            qs = qs.exclude(Exists(members.live())).filter(revoked_at__isnull=True)
        elif state:
            raise exceptions.ValidationError({"state": "one of live, ended, revoked"})
        for name, lookup in (("created_after", "created__gte"), ("created_before", "created__lt")):
            if params.get(name):
                try:
                    when = parse_datetime(params[name])
                    # In UTC now: 0001-01-01T00:00+23:59 is out of range there (OverflowError on
                    # SQLite, DataError on PostgreSQL, which also refuses offsets past 15:59).
                    when = when and (timezone.make_aware(when) if timezone.is_naive(when) else when).astimezone(UTC)
                except (ValueError, OverflowError):  # well-formed but impossible (month 13, 25:00)
                    when = None
                if when is None:
                    raise exceptions.ValidationError({name: "an ISO 8601 date-time"})
                qs = qs.filter(**{lookup: when})
        return qs


def _chain_or_404(chain_id) -> review.ChainView:
    view = review.chain_view(chain_id) if _is_uuid(chain_id) else None
    if view is None:
        raise Http404("No such chain.")
    return view


class ChainTreeView(BaseView):
    """The whole chain: every step (parents first) with actor, scopes and their
    difference from the parent, verified proof claims, state and tokens issued;
    and the integrity check."""

    @extend_schema(operation_id="chains_tree", auth=READ_AUTH, responses=ChainTreeSerializer)
    def get(self, request, chain_id):
        return Response(review.chain_data(_chain_or_404(chain_id)))


class ChainVerifyView(BaseView):
    """Recompute every link_hash: ``ok``, steps checked, and the first step that fails."""

    @extend_schema(operation_id="chains_verify", auth=READ_AUTH, responses=VerificationSerializer)
    def get(self, request, chain_id):
        verification = integrity.verify_chain(chain_id) if _is_uuid(chain_id) else None
        if verification is None or not verification.checked and verification.first_bad_step is None:
            raise Http404("No such chain.")
        return Response(review.verification_data(verification))


class ChainEvidenceView(BaseView):
    """The chain as JSON and a JWS over it signed with the IdP's OIDC key (check it
    offline against the published JWKS)."""

    @extend_schema(operation_id="chains_evidence", auth=READ_AUTH, responses=EvidenceSerializer)
    def get(self, request, chain_id):
        bundle = (
            review.evidence_bundle(chain_id, oauth2_settings.oidc_issuer(request._request))
            if _is_uuid(chain_id)
            else None
        )
        if bundle is None:
            raise Http404("No such chain.")
        return Response(bundle)


class RevokeSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200, required=False, default="revoked by an auditor")


class StepRevokeView(BaseView):
    """Revoke a step and its whole subtree (steps, DOT grants, tokens)."""

    required_scope = REVOKE_SCOPE

    @extend_schema(
        operation_id="steps_revoke", auth=REVOKE_AUTH, request=RevokeSerializer, responses=RevokeResultSerializer
    )
    def post(self, request, step_id):
        body = RevokeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        step = ChainedGrant.objects.filter(pk=step_id).first() if _is_uuid(step_id) else None
        if step is None:
            raise Http404("No such step.")
        who = request.user.get_username()
        count = lifecycle.revoke_subtree(step, f"{body.validated_data['reason']} ({who})")
        return Response(
            {"step": str(step.pk), "chain_id": str(step.root_id), "revoked": count}, status=status.HTTP_200_OK
        )


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
