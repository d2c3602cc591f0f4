"""Corp's resource server: a view DOT protects (scope read)."""

from django.http import JsonResponse
from oauth2_provider.decorators import protected_resource


@protected_resource(scopes=["read"])
def documents(request):
    return JsonResponse({"documents": ["q4-plan"], "for": getattr(request.resource_owner, "username", None)})
