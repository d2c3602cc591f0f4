"""A person for ``--interactive``: stands in for ``webbrowser.open``. Their browser is the
example's own headless ``Browser`` (logging in as ``login``, presenting ``wallet``); it
follows the URL it is given in a thread and lands, as a real browser would, on the
example's callback listener (``REDIRECT_URI``)."""

from __future__ import annotations

import threading
import urllib.parse
import urllib.request

from . import load_agent_chat


def headless_person(idp: str, *, login: tuple[str, str], wallet=None):
    """→ (``open(url)`` to patch over ``webbrowser.open``, the list of URLs it was given)."""
    agent_chat = load_agent_chat()
    opened: list[str] = []

    def open_(url: str, *args, **kwargs) -> bool:
        opened.append(url)
        state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)).get("state", "")

        def act():
            try:
                landed, page = agent_chat.Browser(idp, login=login, wallet=wallet).visit(url, "the person's browser")
                if page:
                    raise RuntimeError(f"the browser ended on a page: {agent_chat.page_error(page)}")
            except Exception as exc:  # noqa: BLE001 (end the run now, with the reason, instead of a timeout)
                error = {"error": "test_person_failed", "error_description": repr(exc), "state": state}
                landed = f"{agent_chat.REDIRECT_URI}?{urllib.parse.urlencode(error)}"
            urllib.request.urlopen(landed, timeout=10).close()

        threading.Thread(target=act, daemon=True).start()
        return True

    return open_, opened
