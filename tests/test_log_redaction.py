"""Codes never reach runserver's log (``make run``/``make demo`` write it to var/):
the request line of a consent step's authorize URL carries ``code=<previous>``."""

import io
import json
import logging
import runpy
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from chain_grant.redaction import RedactFilter, redact


def test_runserver_request_lines_are_redacted():
    logger = logging.getLogger("django.server")
    handlers = [h for h in logger.handlers if any(isinstance(f, RedactFilter) for f in h.filters)]
    assert handlers, "django.server must log through the redacting handler"
    stream = io.StringIO()
    previous = handlers[0].setStream(stream)
    try:
        logger.info('"%s" %s %s', "GET /oauth/authorize/?client_id=c&code=S3cr3tC0de&state=st HTTP/1.1", 302, 0)
        logger.info('"%s" %s %s', "GET /accounts/login/?next=/oauth/authorize/%3Fcode%3DS3cr3tC0de HTTP/1.1", 200, 0)
        logger.info('"%s" %s %s', "GET /oauth/wallet/requests/x/complete?response_code=S3cr3tC0de HTTP/1.1", 302, 0)
    finally:
        handlers[0].setStream(previous)
    output = stream.getvalue()
    assert "S3cr3tC0de" not in output and output.count("[REDACTED]") == 3
    assert "client_id=c" in output and "state=st" in output


def test_redact_keeps_what_is_not_a_credential():
    assert redact("/cb?code_challenge=abc&state=x&nonce=n") == "/cb?code_challenge=abc&state=x&nonce=n"
    assert redact("/cb?id_token=a.b.c&Code=x") == "/cb?id_token=[REDACTED]&Code=[REDACTED]"


@override_settings()
def test_chain_grant_logger_is_redacted_too():
    logger = logging.getLogger("chain_grant")
    assert any(isinstance(f, RedactFilter) for h in logger.handlers for f in h.filters)


# --- dict / repr / JSON / header forms (oauthlib and DOT at DEBUG) ---------------------------------------------

CODE, TOKEN, JWS = "Zx3kQ9vLmN2pR7sT1uW4", "AcC3ssT0kenValue1234", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJwIn0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            f"Created authorization code grant {{'code': '{CODE}', 'state': 'st'}} for request <oauthlib.Request>.",
            "Created authorization code grant {'code': '[REDACTED]', 'state': 'st'} for request <oauthlib.Request>.",
            id="oauthlib grant dict",
        ),
        pytest.param(
            f"Issuing new token to client id 'c' (<App>), {{'access_token': '{TOKEN}', 'expires_in': 3600, "
            f"'token_type': 'Bearer', 'scope': 'openid read', 'refresh_token': 'R3fr3shT0kenValue99', "
            f"'id_token': '{JWS}'}}.",
            "Issuing new token to client id 'c' (<App>), {'access_token': '[REDACTED]', 'expires_in': 3600, "
            "'token_type': 'Bearer', 'scope': 'openid read', 'refresh_token': '[REDACTED]', "
            "'id_token': '[REDACTED]'}.",
            id="oauthlib token dict",
        ),
        pytest.param(
            f'{{"access_token": "{TOKEN}", "refresh_token": "R3fr3sh", "token_type": "Bearer", "state": "s"}}',
            '{"access_token": "[REDACTED]", "refresh_token": "[REDACTED]", "token_type": "Bearer", "state": "s"}',
            id="JSON",
        ),
        pytest.param(
            '{"client_secret":"s3cret","client_id":"chain-client","code_verifier":"v3rifier"}',
            '{"client_secret":"[REDACTED]","client_id":"chain-client","code_verifier":"[REDACTED]"}',
            id="compact JSON",
        ),
        pytest.param(
            f'"{{\\"code\\": \\"{CODE}\\", \\"nonce\\": \\"n\\"}}"',
            '"{\\"code\\": \\"[REDACTED]\\", \\"nonce\\": \\"n\\"}"',
            id="JSON inside a JSON string",
        ),
        pytest.param(
            f'b\'{{"authorization_code":"{CODE}","code_challenge":"E9Mel"}}\'',
            'b\'{"authorization_code":"[REDACTED]","code_challenge":"E9Mel"}\'',
            id="bytes repr of a JSON body",
        ),
        pytest.param(
            f"[('grant_type', 'code_chain'), ('authorization_code', '{CODE}'), ('id_token', '{JWS}'), "
            "('code_challenge', 'E9Mel'), ('scope', 'read')]",
            "[('grant_type', 'code_chain'), ('authorization_code', '[REDACTED]'), ('id_token', '[REDACTED]'), "
            "('code_challenge', 'E9Mel'), ('scope', 'read')]",
            id="POST items (tuples)",
        ),
        pytest.param(
            "<QueryDict: {'password': ['hunter2'], 'username': ['alice'], 'assertion': ['a.b.c']}>",
            "<QueryDict: {'password': ['[REDACTED]'], 'username': ['alice'], 'assertion': ['[REDACTED]']}>",
            id="QueryDict repr",
        ),
        pytest.param(
            "Step(subject='planner', code='abc123', state='st') client_secret = 'pw'",
            "Step(subject='planner', code='[REDACTED]', state='st') client_secret = '[REDACTED]'",
            id="kwargs repr and a local",
        ),
        pytest.param(
            "{'HTTP_AUTHORIZATION': 'Basic Y2hhaW4tY2xpZW50OnMzY3JldA==', 'Authorization': 'Bearer "
            + TOKEN
            + "', 'HTTP_COOKIE': 'csrftoken=x; sessionid=abc', 'HTTP_DPOP': '"
            + JWS
            + "', 'CONTENT_TYPE': 'application/x-www-form-urlencoded'}",
            "{'HTTP_AUTHORIZATION': 'Basic [REDACTED]', 'Authorization': 'Bearer [REDACTED]', "
            "'HTTP_COOKIE': '[REDACTED]', 'HTTP_DPOP': '[REDACTED]', "
            "'CONTENT_TYPE': 'application/x-www-form-urlencoded'}",
            id="request headers (META)",
        ),
        pytest.param(
            "POST /oauth/token HTTP/1.1\r\nHost: idp\r\nAuthorization: Basic Y2hhaW4tY2xpZW50OnMzY3JldA==\r\n"
            "Cookie: sessionid=abc\r\nDPoP: " + JWS + "\r\nX-Api-Key: k3y\r\nAccept: */*",
            "POST /oauth/token HTTP/1.1\r\nHost: idp\r\nAuthorization: Basic [REDACTED]\r\n"
            "Cookie: [REDACTED]\r\nDPoP: [REDACTED]\r\nX-Api-Key: [REDACTED]\r\nAccept: */*",
            id="raw headers",
        ),
        pytest.param(
            f"introspection of Bearer {TOKEN} failed; retry with DPoP {JWS} or basic Y2M6eA==",
            "introspection of Bearer [REDACTED] failed; retry with DPoP [REDACTED] or basic [REDACTED]",
            id="bare Authorization values",
        ),
        pytest.param(
            'WWW-Authenticate: Bearer realm="oauth", error="invalid_token"',
            'WWW-Authenticate: Bearer realm="oauth", error="invalid_token"',
            id="a challenge is not a credential",
        ),
        pytest.param(
            "Validating refresh token R3fr3shT0kenValue99xyz for client <App>. "
            "Invalid refresh token, R3fr3shT0kenValue99xyz, for client <App>. "
            "Refresh token R3fr3shT0kenValue99xyz lack requested scopes, ['write'].",
            "Validating refresh token [REDACTED] for client <App>. "
            "Invalid refresh token, [REDACTED], for client <App>. "
            "Refresh token [REDACTED] lack requested scopes, ['write'].",
            id="oauthlib refresh token lines",
        ),
        pytest.param(
            "Validating refresh token request, <oauthlib.Request SANITIZED>.",
            "Validating refresh token request, <oauthlib.Request SANITIZED>.",
            id="prose without a token",
        ),
        pytest.param(f"proof rejected: {JWS}", "proof rejected: [REDACTED]", id="a bare JWS"),
        pytest.param(
            f'<oauthlib.Request url="http://testserver/oauth/authorize/?client_id=c&code={CODE}", '
            "http_method=\"POST\", headers=\"{'Content-Type': 'x'}\", "
            f'body="authorization_code={CODE}&code_verifier=v3r">',
            '<oauthlib.Request url="http://testserver/oauth/authorize/?client_id=c&code=[REDACTED]", '
            "http_method=\"POST\", headers=\"{'Content-Type': 'x'}\", "
            'body="authorization_code=[REDACTED]&code_verifier=[REDACTED]">',
            id="oauthlib.Request repr (set_debug)",
        ),
        pytest.param(
            "{'CSRF_COOKIE': 'c5rf', 'SESSION': 'x'} csrfmiddlewaretoken=c5rf&allow=Authorize "
            "sessionid=s3ss; csrftoken=c5rf",
            "{'CSRF_COOKIE': '[REDACTED]', 'SESSION': 'x'} csrfmiddlewaretoken=[REDACTED]&allow=Authorize "
            "sessionid=[REDACTED]; csrftoken=[REDACTED]",
            id="Django's session and CSRF values",
        ),
        pytest.param(
            "{'QUERY_STRING': 'code=abc&state=s', 'PATH_INFO': '/oauth/authorize/'}",
            "{'QUERY_STRING': 'code=[REDACTED]&state=s', 'PATH_INFO': '/oauth/authorize/'}",
            id="a query string as a quoted value",
        ),
    ],
)
def test_redact_dict_repr_json_and_header_forms(line, expected):
    assert redact(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "{'state': 'st', 'nonce': 'n', 'code_challenge': 'E9Mel', 'code_challenge_method': 'S256'}",
        "{'scope': 'openid read', 'client_id': 'chain-client', 'token_type': 'Bearer', 'expires_in': 3600}",
        '{"token_type_hint": "access_token", "error": "invalid_grant", "code": 400, "dpop_jkt": "x"}',
        "Failed basic auth: credentials can't be decoded as base64",
        "Bearer authentication required; Basic auth is not offered",
        "client_id=c&state=s&nonce=n&code_challenge=x&scope=read",
        "{'code': '', 'token': None}",
        "status code: 400, authorization_code grant",
    ],
)
def test_redact_keeps_non_secrets_in_every_form(line):
    assert redact(line) == line


def test_redact_is_idempotent():
    once = redact(f"{{'code': '{CODE}'}} Bearer {TOKEN} /cb?code={CODE}&state=s {JWS}")
    assert redact(once) == once and CODE not in once and TOKEN not in once


# --- tracebacks: redacted inside, kept for every handler and formatter -----------------------------------------


def _raise_with_secrets():
    request = {"code": CODE, "access_token": TOKEN, "state": "st"}  # noqa: F841  (a local, for capture_locals)
    try:
        raise KeyError(f"/oauth/token?code={CODE}&state=st")
    except KeyError as exc:
        raise RuntimeError(f"receiver failed on {request!r} with Authorization: Bearer {TOKEN}") from exc


def _capture(*formatters, logger_name="chain_grant.tests.traceback"):
    """A logger with one redacting handler per formatter (propagation off); returns
    (logger, streams, records seen by a handler after the filters)."""
    logger = logging.getLogger(logger_name)
    logger.propagate, logger.handlers = False, []
    streams, seen = [], []
    for formatter in formatters:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.addFilter(RedactFilter())
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        streams.append(stream)
    spy = logging.Handler()
    spy.addFilter(RedactFilter())
    spy.emit = seen.append
    logger.addHandler(spy)
    return logger, streams, seen


def _assert_redacted_traceback(text):
    assert "Traceback (most recent call last)" in text and "_raise_with_secrets" in text
    assert "RuntimeError: receiver failed on" in text and "KeyError" in text  # the chained exception too
    assert "The above exception was the direct cause" in text
    assert CODE not in text and TOKEN not in text
    assert "'code': '[REDACTED]'" in text and "code=[REDACTED]&state=st" in text and "Bearer [REDACTED]" in text


def test_traceback_reaches_plain_and_json_formatters_redacted():
    from django.utils.log import ServerFormatter

    from idp_project.settings import JsonFormatter

    logger, (plain, server, js), seen = _capture(
        logging.Formatter("%(levelname)s %(name)s %(message)s"),
        ServerFormatter("[{server_time}] {message}", style="{"),
        JsonFormatter(),
    )
    try:
        _raise_with_secrets()
    except RuntimeError:
        logger.exception("Internal Server Error: %s", f"/oauth/token?code={CODE}")
    _assert_redacted_traceback(plain.getvalue())
    _assert_redacted_traceback(server.getvalue())
    entry = json.loads(js.getvalue())
    assert entry["message"] == "Internal Server Error: /oauth/token?code=[REDACTED]"
    _assert_redacted_traceback(entry["exc"])
    # exc_info stays on the record (for handlers that build their own report, e.g. mail_admins)
    assert seen and seen[0].exc_info and seen[0].exc_info[0] is RuntimeError
    _assert_redacted_traceback(seen[0].exc_text)


def test_local_reprs_in_a_rendered_traceback_are_redacted():
    """A handler without the filter (or a locals-rendering formatter) ran first and cached
    exc_text with local reprs: the filter redacts that text for every later handler."""
    import traceback

    logger, (plain,), _ = _capture(logging.Formatter("%(message)s"))
    try:
        _raise_with_secrets()
    except RuntimeError as exc:
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
        record.exc_text = "".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())
    assert f"'code': '{CODE}'" in record.exc_text and "request = " in record.exc_text  # locals rendered
    logger.handle(record)
    _assert_redacted_traceback(plain.getvalue())
    assert "request = {'code': '[REDACTED]', 'access_token': '[REDACTED]', 'state': 'st'}" in plain.getvalue()


def _log_with_a_secret_in_the_source(logger):
    logger.warning("with stack", stack_info=True)  # /cb?code=S3cr3tInSource (the stack prints this line)


def test_stack_info_is_redacted():
    logger, (plain,), _ = _capture(logging.Formatter("%(message)s"))
    _log_with_a_secret_in_the_source(logger)
    text = plain.getvalue()
    assert "Stack (most recent call last)" in text and "_log_with_a_secret_in_the_source" in text
    assert "S3cr3tInSource" not in text and "/cb?code=[REDACTED]" in text


def test_a_message_that_cannot_be_formatted_is_logged_redacted():
    logger, (plain,), _ = _capture(logging.Formatter("%(message)s"))
    logger.warning("bad format %d", f"code={CODE}")  # getMessage() raises
    text = plain.getvalue()
    assert "bad format %d" in text and "code=[REDACTED]" in text and CODE not in text


def test_a_record_is_redacted_once_for_all_handlers():
    logger, streams, seen = _capture(logging.Formatter("%(message)s"), logging.Formatter("%(message)s"))
    logger.info("grant %r", {"code": CODE})
    assert [s.getvalue() for s in streams] == ["grant {'code': '[REDACTED]'}\n"] * 2
    assert seen[0].msg == "grant {'code': '[REDACTED]'}" and seen[0].args is None


# --- gunicorn: filters on its handlers, and on the app's once a worker has loaded it ----------------------------

GUNICORN_CONF = Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py"


@pytest.fixture
def gunicorn_conf(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prometheus"))
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    return runpy.run_path(str(GUNICORN_CONF))


def _gunicorn_logger(conf, tmp_path, json_logs=False):
    from gunicorn.config import Config

    cfg = Config()
    cfg.set("accesslog", str(tmp_path / "access.log"))
    cfg.set("errorlog", str(tmp_path / "error.log"))
    logger_class = conf["RedactingLogger"]
    logger_class.setup.__globals__["JSON_LOGS"] = json_logs
    return logger_class(cfg)


@pytest.mark.parametrize("json_logs", [False, True], ids=["plain", "json"])
def test_gunicorn_error_log_keeps_a_redacted_traceback(gunicorn_conf, tmp_path, json_logs):
    log = _gunicorn_logger(gunicorn_conf, tmp_path, json_logs)
    for handler in (*log.error_log.handlers, *log.access_log.handlers):
        assert any(isinstance(f, RedactFilter) for f in handler.filters), handler  # on the handlers
    try:
        _raise_with_secrets()
    except RuntimeError:
        log.exception("Error handling request %s", f"/oauth/token?code={CODE}")
    for handler in log.error_log.handlers:
        handler.flush()
    text = (tmp_path / "error.log").read_text()
    if json_logs:
        entry = json.loads(text)
        assert entry["message"] == "Error handling request /oauth/token?code=[REDACTED]"
        text = entry["exc"]
    _assert_redacted_traceback(text)


def test_gunicorn_worker_puts_the_filter_on_the_apps_handlers(gunicorn_conf):
    from .log_capture import isolated_logging

    with isolated_logging():
        bare = logging.StreamHandler(io.StringIO())
        logging.getLogger("oauth2_provider").addHandler(bare)
        worker = type("Worker", (), {"log": logging.getLogger("gunicorn.error.test")})()
        gunicorn_conf["post_worker_init"](worker)
        assert any(isinstance(f, RedactFilter) for f in bare.filters)
        logging.getLogger("oauth2_provider").debug("token %r", {"access_token": TOKEN})
        logging.getLogger("oauth2_provider").warning("token %r", {"access_token": TOKEN})
        assert TOKEN not in bare.stream.getvalue() and "'access_token': '[REDACTED]'" in bare.stream.getvalue()
