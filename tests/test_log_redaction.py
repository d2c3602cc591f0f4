"""Codes never reach runserver's log (``make run``/``make demo`` write it to var/):
the request line of a consent step's authorize URL carries ``code=<previous>``."""

import io
import logging

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
