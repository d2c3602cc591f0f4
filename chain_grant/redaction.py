"""Redacting credentials from logged URLs and messages.

Access logs (gunicorn's, runserver's ``django.server``) print request lines, and an
authorize URL carries ``code=<previous>``; a wallet's completion carries
``response_code=``. ``redact()`` replaces the value of every credential-bearing query
parameter, also percent-encoded inside ``?next=``. ``RedactFilter`` applies it to a
log record's final message::

    LOGGING["filters"] = {"redact": {"()": "chain_grant.redaction.RedactFilter"}}
"""

from __future__ import annotations

import logging
import re

# Query parameters whose value is a credential. `state`, `nonce`, `code_challenge` are not.
SECRET_PARAMS = (
    "code",
    "authorization_code",
    "id_token",
    "id_token_hint",
    "code_verifier",
    "client_secret",
    "refresh_token",
    "access_token",
    "token",
    "assertion",
    "client_assertion",
    "password",
    "response_code",
    "poll",
    "vp_token",
    "subject_token",
    "actor_token",
    "device_code",
    "user_code",
)
REDACTED = "[REDACTED]"
# A parameter starts after ?, &, ; or # -- also percent-encoded, once or more (a login
# redirect carries the authorize URL in ?next=...%26code%3D...). Its value runs to the next
# separator. Case-insensitive; `code_challenge=` or `xcode=` do not match `code`.
_SEP = r"(?:[?&;#]|%(?:25)*(?:3[fF]|26|3[bB]|23))"
_EQ = r"(?:=|%(?:25)*3[dD])"
_VALUE = r"(?:(?!%(?:25)*(?:26|3[bB]|23))[^&;#\s\"'])*"
_PARAM_RE = re.compile(
    rf"(^|{_SEP})((?:{'|'.join(sorted(map(re.escape, SECRET_PARAMS), key=len, reverse=True))}){_EQ})({_VALUE})",
    re.IGNORECASE,
)


def redact(text):
    """``text`` with the value of every credential-bearing query parameter replaced."""
    if not isinstance(text, str) or "=" not in text and "%" not in text:
        return text
    return _PARAM_RE.sub(lambda m: m.group(1) + m.group(2) + (REDACTED if m.group(3) else ""), text)


class RedactFilter(logging.Filter):
    """Redacts a record's final message (error log lines can carry the request URI)."""

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
