"""Redacting credentials from logged URLs, messages and tracebacks.

Access logs (gunicorn's, runserver's ``django.server``) print request lines, and an
authorize URL carries ``code=<previous>``; a wallet's completion carries
``response_code=``. At DEBUG, oauthlib and DOT print grants, token responses and
requests (``{'code': '…'}``, ``('id_token', '…')``, ``'HTTP_AUTHORIZATION': 'Basic …'``).
``redact()`` replaces the value of every name in ``SECRET_PARAMS`` in each of these forms:

* query and form parameters, ``name=value`` (also percent-encoded inside ``?next=``);
* dict, repr, JSON and local-variable forms with a quoted value: ``'name': 'value'``,
  ``"name": "value"``, ``\\"name\\": \\"value\\"``, ``('name', 'value')``,
  ``name='value'``, ``name = 'value'``, ``'name': ['value']``, ``b'…'`` values;

and also:

* the value of the headers in ``SECRET_HEADERS`` (``Authorization: Bearer …``,
  ``'HTTP_AUTHORIZATION': 'Basic …'``, ``Cookie:``, ``DPoP:``), keeping the scheme;
* a bare ``Basic``/``Bearer``/``DPoP`` credential, a compact JWS/JWE (``eyJ….….…``) and
  oauthlib's ``refresh token <value>`` lines.

``state``, ``nonce``, ``code_challenge``, ``scope``, ``client_id`` are not credentials and
stay. ``RedactFilter`` applies ``redact()`` to a record's message, its traceback text and
its stack; put it on every *handler* (a logger's filters do not see propagated records)::

    LOGGING["filters"] = {"redact": {"()": "chain_grant.redaction.RedactFilter"}}
    LOGGING["handlers"]["console"]["filters"] = ["redact"]

Speed: it runs on every line. A line is lower-cased once and searched with ``str.find``
for a few anchors (``code``, ``token``, ``authoriz``, …); a small precompiled pattern is
matched only after a whole name found there, so most of a line is never looked at by a
regex (``bench/redact.py``).

Not redacted: a credential with no name, header, scheme or JWS shape next to it (a bare
``KeyError('<token>')``), and SQL parameters -- keep ``django.db.backends`` above DEBUG.
"""

from __future__ import annotations

import logging
import re

# Names whose value is a credential (query/form parameters, dict keys, cookies). `state`,
# `nonce`, `code_challenge` are not.
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
    # Django's session and CSRF values: cookies (sessionid=; csrftoken=), the consent form's
    # field, the request's META["CSRF_COOKIE"] (in oauthlib's request repr at DEBUG).
    "sessionid",
    "csrftoken",
    "csrfmiddlewaretoken",
    "csrf_cookie",
)
# Headers whose value is a credential (also as WSGI/META keys: HTTP_AUTHORIZATION, HTTP_COOKIE).
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "dpop"})
REDACTED = "[REDACTED]"


_HEADER_WORDS = frozenset(
    variant
    for header in SECRET_HEADERS
    for variant in (header, header.replace("-", "_"), "http_" + header.replace("-", "_"))
)
_SCHEMES = frozenset({"basic", "bearer", "dpop"})
_PROSE = frozenset({"refresh token", "access token", "refresh_token", "access_token"})
_PARAMS = frozenset(SECRET_PARAMS)

# --- where to look -----------------------------------------------------------------------------
# Every word a credential follows (a parameter or header name, a scheme, oauthlib's "refresh
# token") contains one of these anchors. The line is lower-cased once and each anchor found
# with str.find; a word is a candidate where it starts with ``str.startswith``; only then is a
# (small) pattern matched after it.
_ANCHORS: tuple[str, ...] = (
    *("code", "token", "secret", "assert", "passw", "poll", "authoriz", "cookie", "api-key", "api_key"),
    *("dpop", "basic", "bearer", "sessionid"),
)
_WORDS = _PARAMS | _HEADER_WORDS | _SCHEMES | _PROSE


def _anchor_table(anchor):
    """{character before the anchor in the word (None: the word starts with it): [(offset, word)]},
    longest word first: at a hit, only the words that fit the character before it are tried."""
    table = {}
    for word in sorted((w for w in _WORDS if anchor in w), key=len, reverse=True):
        offset = word.index(anchor)
        table.setdefault(word[offset - 1] if offset else None, []).append((offset, word))
    return anchor, table.pop(None, []), table


_ANCHOR_WORDS = tuple(_anchor_table(anchor) for anchor in _ANCHORS)
assert all(any(a in w for a in _ANCHORS) for w in _WORDS)
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")

# --- what follows the word ---------------------------------------------------------------------
# name=value: after ?, &, ;, #, a space, a quote or a bracket -- also percent-encoded, once or
# more (a login redirect carries the authorize URL in ?next=...%26code%3D...). The value runs
# to the next separator; `code_challenge=` or `xcode=` do not match `code`.
_SEP_CHARS = frozenset("?&;#\"'([{,| \t\r\n")
_PCT_SEP_BEFORE = re.compile(
    "|".join(f"(?<=%{'25' * depth}{hexa})" for depth in range(4) for hexa in ("3f", "26", "3b", "23")), re.I
)
_PARAM_TAIL = re.compile(r"(?:=|%(?:25)*3d)(?P<v>(?:(?!%(?:25)*(?:26|3b|23))[^&;#\s\"'\\])+)", re.I)
# 'name': 'value' / "name": "value" / \"name\": \"value\" / name='value' / name = 'value' /
# 'name': ['value'] (a QueryDict); a b'...' value; unterminated at the end of a line.
_QUOTED = (
    r"\[?\s*(?:"
    r"b?'(?P<v1>(?:[^'\\\n]|\\.)*)(?:'|(?=\n)|\Z)"
    r"|b?\"(?P<v2>(?:[^\"\\\n]|\\.)*)(?:\"|(?=\n)|\Z)"
    r"|\\'(?P<v3>[^'\\\n]*)\\'"
    r"|\\\"(?P<v4>[^\"\\\n]*)\\\""
    r")"
)
_KV_TAIL = re.compile(rf"(?:\\?[\"'])?\s*[:=]\s*{_QUOTED}")
# ('name', 'value'): a comma only inside a tuple -- ["access_token", "error"] is a list of names.
_TUPLE_TAIL = re.compile(rf"\\?[\"']\s*,\s*{_QUOTED}")
# Name: value (a header, unquoted): to the end of the line, a comma or a closing bracket.
_HEADER_TAIL = re.compile(r"[ \t]*:[ \t]*(?![\s\"'\\])(?P<v>[^\r\n,\"'}\])]*[^\s,\"'}\])])")
# Basic/Bearer/DPoP <credential>, not an auth-param (realm="..."). A credential has a digit or
# one of ._~+/=- or is 16+ characters long: "Bearer authentication" is prose.
_SCHEME_TAIL = re.compile(
    r"[ \t]+(?!(?:realm|scope|error|error_description|error_uri|algs|charset|nonce)\s*=)"
    r"(?P<v>(?=[a-z0-9._~+/-]*[0-9._~+/=-]|[a-z0-9._~+/-]{16})[a-z0-9._~+/-]+=*)",
    re.I,
)
# oauthlib: "Validating refresh token <value> for client ...", "Invalid refresh token, <value>, ...".
_PROSE_TAIL = re.compile(r",?[ \t]+(?!for\b)(?P<v>[a-z0-9._~+/-]{16,}=*)", re.I)
_SCHEME_PREFIX = re.compile(r"[A-Za-z][\w.-]* +(?=\S)")
# A compact JWS/JWE anywhere: an ID token, an agent's proof, a DPoP proof, a client assertion.
_JWS_RE = re.compile(r"eyJ[\w-]{8,}\.[\w-]*\.[\w-]*(?:\.[\w-]*\.[\w-]*)?", re.ASCII)
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _quoted_span(m):
    for group in ("v1", "v2", "v3", "v4"):
        if m.group(group) is not None:
            return m.span(group)
    return None


def _value_span(text, start, word):
    """The span of the credential after ``word`` at ``start``, or None."""
    end = start + len(word)
    after = text[end : end + 1]
    if after and after in _WORD_CHARS:  # `code_challenge`, `tokens`
        return None
    before = text[start - 1] if start else ""
    if before in _WORD_CHARS and not (before in "36bBfF" and word in _PARAMS and _PCT_SEP_BEFORE.match(text, start)):
        return None  # `xcode`, but `%26code`
    if word in _PARAMS:
        if not before or before in _SEP_CHARS or before in "36bBfF":
            m = _PARAM_TAIL.match(text, end)
            if m:
                return m.span("v")
        if before in "\"'" and (text[start - 2 : start - 1] == "(" or text[start - 3 : start - 1] == "(b"):
            m = _TUPLE_TAIL.match(text, end)
            if m:
                return _quoted_span(m)
    if word in _PARAMS or word in _HEADER_WORDS:
        m = _KV_TAIL.match(text, end)
        if m:
            span = _quoted_span(m)
            if span and word in _HEADER_WORDS:  # keep the scheme: 'Bearer [REDACTED]'
                scheme = _SCHEME_PREFIX.match(text, *span)
                span = (scheme.end(), span[1]) if scheme else span
            return span
    if word in _HEADER_WORDS:
        m = _HEADER_TAIL.match(text, end)
        if m:
            scheme = _SCHEME_PREFIX.match(text, *m.span("v"))
            return (scheme.end() if scheme else m.start("v"), m.end("v"))
    if word in _SCHEMES:
        m = _SCHEME_TAIL.match(text, end)
        if m:
            return m.span("v")
    if word in _PROSE:
        m = _PROSE_TAIL.match(text, end)
        if m:
            return m.span("v")
    return None


def _spans(text):
    """Where credentials are, as (start, end) pairs, ascending and not overlapping."""
    # Only ASCII letters are lowered, so a position in `low` is the same position in `text`.
    low = text.lower() if text.isascii() else text.translate(_LOWER)
    candidates = {}
    for anchor, starting, inside in _ANCHOR_WORDS:
        i = low.find(anchor)
        while i >= 0:
            for offset, word in inside.get(low[i - 1], ()) if i else ():
                start = i - offset
                if start >= 0 and start not in candidates and low.startswith(word, start):
                    span = _value_span(text, start, word)
                    if span is not None:
                        candidates[start] = span
                        break
            else:
                if i not in candidates:
                    for _, word in starting:
                        if low.startswith(word, i):
                            span = _value_span(text, i, word)
                            if span is not None:
                                candidates[i] = span
                                break
            i = low.find(anchor, i + 1)
    i = text.find("eyJ")
    while i >= 0:
        m = _JWS_RE.match(text, i)
        if m and (not i or text[i - 1] not in _WORD_CHARS):
            candidates.setdefault(i, m.span())
            i = m.end()
        i = text.find("eyJ", i + 1)
    spans, done = [], 0
    for start in sorted(candidates):
        begin, end = candidates[start]
        if start >= done and begin < end:
            spans.append((begin, end))
            done = end
    return spans


def redact(text):
    """``text`` with every credential value (see the module's docstring) replaced."""
    if not isinstance(text, str) or len(text) < 4:
        return text
    spans = _spans(text)
    if not spans:
        return text
    out, done = [], 0
    for begin, end in spans:
        out += (text[done:begin], REDACTED)
        done = end
    out.append(text[done:])
    return "".join(out)


_EXCEPTION_FORMATTER = logging.Formatter()


class RedactFilter(logging.Filter):
    """Redacts a record's message, traceback and stack, for every handler after it.

    The message is formatted and redacted (``args`` become None). The traceback is rendered
    into ``exc_text`` (what ``logging.Formatter`` prints instead of re-formatting
    ``exc_info``) and redacted; ``exc_info`` stays, so a formatter that wants a traceback
    still gets one -- it must print ``exc_text`` when set, as ``logging.Formatter`` does.
    A record is processed once, however many handlers carry the filter.
    """

    def filter(self, record):
        mark = record.__dict__.get("_chain_grant_redacted")
        if (
            mark is not None
            and record.args is None
            and mark[0] is record.msg
            and mark[1] is record.exc_text
            and mark[2] is record.stack_info
        ):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken call: keep what it said, redacted, instead of a "Logging error"
            try:
                message = f"{record.msg} (arguments {record.args!r})"
            except Exception:
                message = "<unprintable log message>"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _EXCEPTION_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._chain_grant_redacted = (record.msg, record.exc_text, record.stack_info)
        return True


# The loggers whose records can carry credentials -- oauthlib's and DOT's at DEBUG, the request
# lines of runserver, Django's 500s -- and the root logger they (and everything else) propagate to.
CREDENTIAL_LOGGERS = ("oauthlib", "oauth2_provider", "django.server", "django.request", "root")


def reached_handlers(name):
    """The handlers a record of logger ``name`` reaches, propagation included ("root": the
    root logger); ``[logging.lastResort]`` when there is none."""
    logger = logging.getLogger(None if name == "root" else name)
    if logger.disabled:
        return []
    found = []
    while logger is not None:
        found += logger.handlers
        if not logger.propagate:
            break
        logger = logger.parent
    if not found and logging.lastResort is not None:
        found.append(logging.lastResort)
    return found


def redacts(handler):
    return any(isinstance(f, RedactFilter) for f in handler.filters)


def unredacted_handlers(names=CREDENTIAL_LOGGERS):
    """{handler: [names of the loggers whose records reach it]} for every handler without a
    RedactFilter (NullHandlers, which print nothing, aside)."""
    found = {}
    for name in names:
        for handler in reached_handlers(name):
            if not isinstance(handler, logging.NullHandler) and not redacts(handler):
                found.setdefault(handler, [])
                if name not in found[handler]:
                    found[handler].append(name)
    return found


def install(names=CREDENTIAL_LOGGERS):
    """Add a RedactFilter to every handler the records of ``names`` reach that has none
    (gunicorn's post_worker_init does, whatever LOGGING the app was given); returns them."""
    handlers = list(unredacted_handlers(names))
    for handler in handlers:
        handler.addFilter(RedactFilter())
    return handlers
