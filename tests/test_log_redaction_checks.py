"""chain_grant.W005: every handler that records of oauthlib, DOT (oauth2_provider), runserver
(django.server), Django's 500s (django.request) or the root logger reach carries RedactFilter."""

import logging
import logging.config
import os
import re
from pathlib import Path

import pytest
from django.core import checks as django_checks
from django.utils.log import DEFAULT_LOGGING

from chain_grant import checks
from chain_grant.redaction import RedactFilter, install, redact, unredacted_handlers
from idp_project import settings as idp

from .log_capture import capture, isolated_logging


def w005(messages=None):
    messages = checks.check_log_redaction() if messages is None else messages
    return [m for m in messages if m.id == "chain_grant.W005"]


@pytest.fixture
def logs():
    with isolated_logging():
        yield


@pytest.mark.parametrize(
    ("log_format", "production"), [("", False), ("", True), ("json", False), ("json", True)], ids=str
)
def test_the_idps_logging_has_no_unredacted_handler(logs, log_format, production):
    capture(idp.logging_config(log_format, production))
    assert w005() == []
    for name in ("oauthlib", "oauthlib.oauth2.rfc6749.grant_types.base", "oauth2_provider", "django.request"):
        assert logging.getLogger(name).propagate  # to a redacting root (or django) handler


def test_the_project_as_configured_passes(settings):
    assert w005(django_checks.run_checks()) == []  # registered without deploy=True


def test_a_handler_without_the_filter_is_named(logs):
    capture(idp.logging_config())
    bare = logging.StreamHandler()
    logging.getLogger("oauthlib").addHandler(bare)
    found = w005()
    assert len(found) == 1 and repr(bare) in found[0].msg and "oauthlib" in found[0].msg
    assert not found[0].is_serious() and "RedactFilter" in found[0].hint


def test_a_filter_on_the_logger_only_does_not_count(logs):
    """A logger's filters see only records logged on that very logger: oauthlib logs on
    oauthlib.oauth2.rfc6749.*, whose records propagate past them."""
    streams = capture(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"redact": {"()": "chain_grant.redaction.RedactFilter"}},
            "handlers": {"plain": {"class": "logging.StreamHandler"}},
            "root": {"handlers": ["plain"], "level": "DEBUG"},
            "loggers": {"oauthlib": {"filters": ["redact"]}},
        }
    )
    logging.getLogger("oauthlib.oauth2.rfc6749.grant_types").debug("grant %r", {"code": "LEAKED"})
    assert "LEAKED" in streams["plain"].getvalue()  # what W005 is about
    assert {n for m in w005() for n in ("oauthlib", "root") if n in m.msg} == {"oauthlib", "root"}


def test_no_handler_at_all_means_last_resort(logs):
    root = logging.getLogger()
    root.handlers = []
    for name in ("oauthlib", "oauth2_provider", "django", "django.request", "django.server"):
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = [], True
    found = w005()
    assert len(found) == 1 and "logging.lastResort" in found[0].msg
    assert all(n in found[0].msg for n in ("oauthlib", "oauth2_provider", "django.server", "django.request", "root"))


def test_djangos_default_logging_is_reported(logs):
    """A project without LOGGING: Django's console, django.server and mail_admins handlers,
    and no root handler (oauthlib's and DOT's warnings go to logging.lastResort)."""
    logging.getLogger().handlers = []
    logging.config.dictConfig(DEFAULT_LOGGING)
    messages = {m.msg.split(" ")[2]: m.msg for m in w005()}  # "Log handler 'console' <StreamHandler ..."
    assert set(messages) == {"'console'", "'django.server'", "'mail_admins'", "logging.lastResort"}
    assert "records of django.request reach it" in messages["'console'"]
    assert "records of django.request reach it" in messages["'mail_admins'"]
    assert "records of django.server reach it" in messages["'django.server'"]
    # oauthlib has a NullHandler of its own: without another handler its records are dropped.
    assert "records of oauth2_provider, root reach it" in messages["logging.lastResort"]


def test_null_handlers_and_propagate_false_are_respected(logs):
    capture(idp.logging_config())
    logging.getLogger("oauthlib").addHandler(logging.NullHandler())  # libraries add these
    hidden = logging.StreamHandler()
    logging.getLogger("unrelated").addHandler(hidden)  # no credential logger reaches it
    assert w005() == []
    logging.getLogger("django.server").propagate = True  # now it also reaches root's handler
    assert w005() == []


def test_install_adds_the_filter_where_it_is_missing(logs):
    logging.config.dictConfig(DEFAULT_LOGGING)
    assert w005()
    changed = install()
    assert changed and all(any(isinstance(f, RedactFilter) for f in h.filters) for h in changed)
    assert unredacted_handlers() == {} and w005() == []
    assert redact("/cb?code=x") == "/cb?code=[REDACTED]"


def _readme_logging_snippets():
    """README.md's two ways to wire redaction: the plug-in section's two lines, applied to
    the LOGGING of a typical IdP (tests/dot_idp/before/settings.py), and the complete
    LOGGING of "Logs: what is redacted"."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    complete = [b[b.index("LOGGING = {") :] for b in blocks if "LOGGING = {" in b]
    lines = [line for b in blocks for line in b.splitlines() if line.startswith("LOGGING[")]
    assert len(complete) == 1 and len(lines) == 2
    host = (root / "tests" / "dot_idp" / "before" / "settings.py").read_text()
    host_logging = host[host.index("LOGGING = {") :]
    return [host_logging + "\n".join(lines) + "\n", complete[0]]


@pytest.mark.parametrize("index", [0, 1], ids=["plug-in", "deploying"])
def test_the_readme_snippets_pass_the_check(logs, index):
    """Applied as Django applies a project's LOGGING: after its DEFAULT_LOGGING."""
    namespace = {"os": os}
    exec(_readme_logging_snippets()[index], namespace)
    logging.getLogger().handlers = []
    logging.config.dictConfig(DEFAULT_LOGGING)
    streams = capture(namespace["LOGGING"])
    assert w005() == []
    logging.getLogger("oauthlib.oauth2.rfc6749.grant_types.authorization_code").warning("grant %r", {"code": "X1"})
    logging.getLogger("django.server").warning('"GET /oauth/authorize/?code=X2 HTTP/1.1" 200 0')
    logging.getLogger("django.request").error("Internal Server Error: %s", "/cb?code=X3")
    text = "".join(s.getvalue() for s in streams.values())
    assert text.count("[REDACTED]") == 3 and not {"X1", "X2", "X3"} & set(re.findall(r"X\d", text))
