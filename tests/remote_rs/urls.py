"""The README's remote resource server (``notes``, the README's lines word for word) and
the same requirement as a DRF view (``Notes``): the writer, after the planner, at most
three steps deep, with a person's consent within one hop and scope email."""

from django.http import JsonResponse
from django.urls import path
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework.response import Response
from rest_framework.views import APIView

from chain_grant.oauth.chain_required import ChainRequired, Requirement, chain_required


@chain_required(actor="writer", upstream=["planner"], max_depth=3, person_within=1, scopes=["email"])
def notes(request):  # request.chain: the token's ChainView; request.user: the person the chain acts for
    return JsonResponse({"by": request.chain.actor, "for": request.user.username, "depth": request.chain.depth})


class Notes(APIView):  # DRF: DOT's authentication introspects the token, ChainRequired reads its chain
    authentication_classes = [OAuth2Authentication]
    permission_classes = [ChainRequired]
    chain_requirement = Requirement(
        actor="writer", upstream=["planner"], max_depth=3, person_within=1, scopes=["email"]
    )

    def post(self, request):
        return Response({"by": request.chain.actor, "for": request.user.username, "depth": request.chain.depth})


urlpatterns = [path("plain/notes/", notes), path("notes/", Notes.as_view())]
