"""Requests Django itself cannot read, answered as a 400 instead of a 500.

Django 5.2 decodes forms and query strings with the charset a request's Content-Type
declares. A codec Python knows but that is not a text encoding (``rot13``, ``hex``,
``base64``, ``zip`` …) or that cannot decode ASCII (``undefined``) makes it raise
LookupError/UnicodeError, and an RFC 2231 parameter in an unknown charset
(``a*=x-unknown''b``) ValueError, none of which it catches (docs/upstream.md, 7–10):

* in ``WSGIRequest.__init__`` (a query string and such a charset, or such a
  parameter): before any middleware, for any URL, even a GET. ``guard_wsgi``, around
  the WSGI application, hands Django such a request as ``application/octet-stream``
  and marked;
* when ``request.POST`` is read from a multipart form in such a charset
  (CsrfViewMiddleware reads it for every CSRF-protected page once a csrftoken cookie
  is sent);
* and for a urlencoded form in any charset but UTF-8, which Django refuses with a
  BadRequest but leaves unread, so that its 400 page's CSRF check raises again.

``RequestGuardMiddleware`` answers these with a 400: an OAuth error JSON on
chain_grant's OAuth and API endpoints, Django's 400 page elsewhere. chain_grant's own
endpoints also read their forms through ``unreadable_form``, so they answer an OAuth
error JSON without it. Both are optional but recommended::

    MIDDLEWARE = ["chain_grant.middleware.RequestGuardMiddleware", ...]  # before CsrfViewMiddleware
    application = guard_wsgi(get_wsgi_application())                    # wsgi.py
"""

from __future__ import annotations

import codecs

from django.core.exceptions import BadRequest, SuspiciousOperation
from django.http import JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.urls import Resolver404, resolve
from django.utils.http import parse_header_parameters

REFUSED = "chain_grant.refused_content_type"  # the WSGI environ key guard_wsgi sets
# What reading request.POST raises for a body Django cannot parse (besides OSError,
# a client that went away): BadRequest (a urlencoded form not in UTF-8), the
# SuspiciousOperation family (too big, too many fields or files), malformed multipart,
# and LookupError/UnicodeError from an unusable declared charset.
FORM_ERRORS = (BadRequest, SuspiciousOperation, MultiPartParserError, LookupError, UnicodeError)
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def _decodes_ascii(charset: str) -> bool:
    try:
        codecs.lookup(charset)
    except LookupError:
        return True  # unknown to Python: Django ignores it and decodes UTF-8
    try:
        return _PRINTABLE_ASCII.decode(charset) == _PRINTABLE_ASCII.decode()
    except (LookupError, ValueError, TypeError):  # not a text encoding ("rot13"), or "undefined"
        return False


def content_type_problem(content_type: str) -> str | None:
    """Why Django cannot read a request with this Content-Type, or None. Django parses
    it the same way (``parse_header_parameters``) and decodes forms and query strings
    with its ``charset``: one Python knows that cannot decode printable ASCII as itself
    is refused (an unknown one is fine: Django ignores it)."""
    try:
        _, params = parse_header_parameters(content_type or "")
    except (LookupError, ValueError):  # an RFC 2231 value (a*=enc''v) in an unknown or non-text charset
        return "The Content-Type header cannot be parsed."
    charset = params.get("charset")
    if charset and not _decodes_ascii(charset):
        return f"The request declares charset {charset[:40]!r}, which cannot decode ASCII."
    return None


def oauth_error(error: str, description: str, status: int = 400) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def unreadable_form(request) -> JsonResponse | None:
    """None if ``request`` (a POST) has a form Django can read; else its OAuth error."""
    if request.method != "POST":
        return None
    problem = request.META.get(REFUSED) or content_type_problem(request.META.get("CONTENT_TYPE", ""))
    if problem:
        return oauth_error("invalid_request", problem)
    try:
        request.POST  # noqa: B018 (parsed once, cached on the request)
    except FORM_ERRORS as exc:
        detail = "too large" if isinstance(exc, SuspiciousOperation) else "not a readable UTF-8 form"
        return oauth_error("invalid_request", f"The request body is {detail}.")
    return None


def wants_json(request) -> bool:
    """Does this URL answer errors as OAuth JSON (the API, the token, introspection,
    revocation, device authorization and wallet endpoints), not as a page (authorize)?"""
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return False
    view_class = getattr(match.func, "view_class", None)
    return "chain_grant_api" in match.namespaces or getattr(view_class, "oauth_json_errors", False)


class RequestGuardMiddleware:
    """A 400 for a request whose Content-Type Django cannot use (JSON on chain_grant's
    OAuth and API endpoints, Django's 400 page elsewhere). Put it first in
    ``MIDDLEWARE`` (at least before CsrfViewMiddleware). It reads no body."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        problem = request.META.get(REFUSED) or content_type_problem(request.META.get("CONTENT_TYPE", ""))
        if problem:
            if wants_json(request):
                return oauth_error("invalid_request", problem)
            request._mark_post_parse_error()  # the 400 page's CSRF check must not read this form
            raise BadRequest(problem)  # Django's 400 page (handler400)
        if request.method == "POST":
            forget_form_on_failure(request)
        return self.get_response(request)


def forget_form_on_failure(request) -> None:
    """If reading ``request.POST`` raises, leave it empty (as Django does for broken
    multipart), so the error page does not raise again. Django 5.2 raises BadRequest for
    a urlencoded form not in UTF-8 and leaves POST unread; its 400 and 500 views
    (``requires_csrf_token``) read it again for the CSRF check when a csrftoken cookie
    came: the BadRequest escapes the handler, a 500 (docs/upstream.md, 10)."""
    load = request._load_post_and_files

    def load_or_forget():
        try:
            load()
        except Exception:
            request._mark_post_parse_error()
            raise

    request._load_post_and_files = load_or_forget


def guard_wsgi(application):
    """Wrap a WSGI application: a request whose Content-Type Django cannot use (it would
    raise while building the request, before any middleware) reaches Django as
    ``application/octet-stream`` (no form is read from it) and marked, so
    ``RequestGuardMiddleware`` answers it with a 400."""

    def guarded(environ, start_response):
        problem = content_type_problem(environ.get("CONTENT_TYPE", ""))
        if problem:
            environ = {**environ, REFUSED: problem, "CONTENT_TYPE": "application/octet-stream"}
        return application(environ, start_response)

    guarded.__wrapped__ = application
    return guarded
