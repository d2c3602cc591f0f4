"""Call idp_project's real WSGI application (what gunicorn runs: ``guard_wsgi`` and
every middleware included) from a test, in the test's database transaction.

Django's test client builds the request object itself, so a request Django cannot
even build (some Content-Type charsets) never reaches the application's guard there;
this client hands the WSGI application raw bytes, as a server does."""

from __future__ import annotations

import io
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import quote

from django.core.signals import request_finished, request_started
from django.db import close_old_connections


@contextmanager
def keep_test_connection():
    """As Django's test client does: a request must not close the connection that holds
    the test's transaction (close_old_connections runs at each request's start and end)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    def json(self):
        return json.loads(self.body)


@dataclass
class WSGIClient:
    app: object = None
    cookies: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.app is None:
            from idp_project.wsgi import application

            self.app = application

    def request(
        self,
        method: str,
        path: str,
        query: str | bytes = "",
        body: bytes = b"",
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """``headers``: HTTP header names as sent ("Authorization"); str values are sent
        as a server would pass them on (latin-1 in the WSGI environ; others are UTF-8)."""
        if isinstance(query, bytes):
            query = query.decode("latin-1")
        environ = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": _wsgi_str(path),
            "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if content_type is not None:
            environ["CONTENT_TYPE"] = _wsgi_str(content_type)
        if self.cookies:
            # A native string as a server passes it: a cookie with characters past U+00FF
            # arrives as its UTF-8 bytes (the harness once put them in raw: a 500 no server
            # could cause).
            environ["HTTP_COOKIE"] = _wsgi_str("; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = _wsgi_str(value)
        started = {}

        def start_response(status, response_headers, exc_info=None):
            started["status"], started["headers"] = int(status.split()[0]), dict(response_headers)

        with keep_test_connection():
            result = self.app(environ, start_response)
            try:
                data = b"".join(result)
            finally:
                getattr(result, "close", lambda: None)()
        return Response(started["status"], started["headers"], data)


def _wsgi_str(value: str) -> str:
    """PEP 3333 "native strings": the bytes on the wire, decoded as latin-1."""
    try:
        value.encode("latin-1")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass").decode("latin-1")


def form(pairs) -> bytes:
    """application/x-www-form-urlencoded, any str (lone surrogates as their UTF-8 bytes)."""
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in pairs).encode("ascii")


def _quote(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")
