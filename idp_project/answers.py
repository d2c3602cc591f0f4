"""A small resource protected by chain tokens: the demo's agents publish their answer here.

``path("api/answers/", include("idp_project.answers"))``

* ``POST /api/answers/`` ``{"text": …}``: only the writer, with a person's consent within
  one hop (``chain_grant.oauth.chain_required.ChainRequired``: a token from the writer's
  step, whose parent is a person's step, with scope ``email``). The actor chain is read
  from the token (``chain_grant.core.lineage``) and stored with the answer → 201 with
  the answer and its chain.
* ``GET /api/answers/<id>/``: the answer, for a token of the same person (scope
  ``email``) or a staff session.

Refusals are RFC 6750's (``WWW-Authenticate`` names the unmet requirement): 403
``insufficient_scope`` for a token not from a chain, another actor, no person's step
within one hop, or no ``email``; 401 ``invalid_token`` for a token whose step was revoked
or whose link to its step does not match the signed record.
"""

from __future__ import annotations

from django.urls import path
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from chain_grant.core import lineage
from chain_grant.models import ChainedGrant
from chain_grant.oauth.chain_required import ChainRequired, Requirement
from chain_grant.oauth.resource import DPoPAuthentication
from chain_grant.review.api import error_handler

from .models import Answer

try:  # OpenAPI descriptions (drf-spectacular is installed in idp_project)
    from drf_spectacular.utils import extend_schema
except ImportError:  # pragma: no cover

    def extend_schema(*args, **kwargs):
        return lambda view: view


SCOPE = "email"
AUTH = [{"oauth2": [SCOPE]}]
MAX_TEXT = 20_000


class TokenOrStaff(BasePermission):
    """A bearer token with scope ``email`` (its user active), or a staff session for reading."""

    message = f"An access token with scope '{SCOPE}' is required."

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        if isinstance(request.successful_authenticator, (DPoPAuthentication, OAuth2Authentication)):
            return request.auth is not None and request.auth.is_valid([SCOPE])
        return request.method == "GET" and user.is_staff


class AnswerInSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=MAX_TEXT, trim_whitespace=False)


class ActorSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ChainedGrant.Kind.choices)
    actor = serializers.CharField()
    scope = serializers.CharField()


class AnswerSerializer(serializers.ModelSerializer):
    user = serializers.SerializerMethodField()
    actors = ActorSerializer(many=True)
    act = serializers.JSONField(allow_null=True, help_text="RFC 8693 §4.1, as in introspection")

    class Meta:
        model = Answer
        fields = (
            "id",
            "text",
            "user",
            "client_id",
            "scope",
            "chain_id",
            "step_id",
            "chain_depth",
            "actors",
            "act",
            "created",
        )

    def get_user(self, obj) -> str | None:
        return obj.user.get_username() if obj.user_id else None


def chain_snapshot(step: ChainedGrant) -> list[dict[str, str]]:
    """The actors from the root down to ``step`` (one query): kind, who and scope."""
    rows = lineage.ancestors(step, with_actors=True)
    return [{"kind": s.kind, "actor": lineage.actor_label(s), "scope": s.scope} for s in rows]


class AnswersView(APIView):
    """The answers' API keeps chain_grant's error shape ({"error", "error_description"})."""

    authentication_classes = [DPoPAuthentication, OAuth2Authentication, SessionAuthentication]
    permission_classes = [TokenOrStaff]

    def get_exception_handler(self):
        return error_handler


class AnswerListView(AnswersView):
    permission_classes = [ChainRequired, TokenOrStaff]
    chain_requirement = Requirement(actor="writer", person_within=1, scopes=[SCOPE])

    @extend_schema(
        operation_id="answers_create", auth=AUTH, request=AnswerInSerializer, responses={201: AnswerSerializer}
    )
    def post(self, request):
        body = AnswerInSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        token, step = request.auth, request.chain_step  # ChainRequired read the step
        answer = Answer.objects.create(
            text=body.validated_data["text"],
            user=token.user,
            client_id=token.application.client_id if token.application_id else "",
            scope=token.scope,
            chain_id=step.root_id,
            step_id=step.pk,
            chain_depth=step.depth,
            actors=chain_snapshot(step),
            act=lineage.actor_claim(step),
        )
        return Response(AnswerSerializer(answer).data, status=status.HTTP_201_CREATED)


class AnswerDetailView(AnswersView):
    @extend_schema(operation_id="answers_read", auth=[*AUTH, {"cookieAuth": []}], responses=AnswerSerializer)
    def get(self, request, answer_id: int):
        answers = Answer.objects.select_related("user")
        if not isinstance(request.successful_authenticator, SessionAuthentication):
            answers = answers.filter(user=request.user)  # a token reads its own person's answers only
        answer = answers.filter(pk=answer_id).first()
        if answer is None:
            return _error(status.HTTP_404_NOT_FOUND, "not_found", "No such answer.")
        return Response(AnswerSerializer(answer).data)


def _error(code: int, error: str, description: str) -> Response:
    return Response({"error": error, "error_description": description}, status=code)


urlpatterns = [
    path("", AnswerListView.as_view(), name="answer-list"),
    path("<int:answer_id>/", AnswerDetailView.as_view(), name="answer-detail"),
]
