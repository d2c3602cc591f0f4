"""The README's remote resource server: a DRF view and a plain Django view, each
requiring the writer, after the planner, with a person's consent within one hop."""

from django.http import JsonResponse
from django.urls import path
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework.response import Response
from rest_framework.views import APIView

from chain_grant.oauth.chain_required import ChainRequired, Requirement, chain_required

WRITER = Requirement(actor="writer", upstream=["planner"], max_depth=3, person_within=1, scopes=["email"])


class Notes(APIView):
    authentication_classes = [OAuth2Authentication]
    permission_classes = [ChainRequired]
    chain_requirement = WRITER

    def post(self, request):
        return Response({"by": request.chain.actor, "for": request.user.username, "depth": request.chain.depth})


@chain_required(WRITER)
def plain_notes(request):
    return JsonResponse({"by": request.chain.actor, "for": request.user.username, "depth": request.chain.depth})


urlpatterns = [path("notes/", Notes.as_view()), path("plain/notes/", plain_notes)]
