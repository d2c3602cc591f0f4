"""The example's conversation (scripts/agent_chat.py's ``Chat``), observed by the tests and
the cluster run: ``on_step`` receives one code-free ``StepEvent`` per completed step, with
the chain id (the root's event goes out with the first hop's, when the IdP has told the
chain id); with ``pool=AddressPool(...)`` every request goes through the pool::

    chat = run(live_server.url, var_dir=var, on_step=events.append, out=io.StringIO())
    chat = run(pool=AddressPool(cluster.urls), var_dir=cluster.var_dir, on_step=kill_midway)
    chat.events, chat.chain_id, chat.tree, chat.verification, chat.answer, chat.admin_url
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from . import load_agent_chat
from .failover import AddressPool

agent_chat = load_agent_chat()


@dataclass(frozen=True)
class StepEvent:
    index: int  # 0 = the wallet root
    kind: str  # wallet | agent | user
    actor: str
    depth: int
    parent: int | None  # the parent's index
    scope: str | None  # as the IdP granted it (agent steps)
    code_digest_prefix: str  # first 8 hex of SHA-256(code): what the admin and the API show
    message_sha256: str | None  # agent steps: the msg_sha256 the proof signed
    chain_id: str


class ObservedChat(agent_chat.Chat):
    def __init__(
        self,
        idp: str | None = None,
        *,
        on_step: Callable[[StepEvent], None] | None = None,
        pool: AddressPool | None = None,
        **options,
    ):
        self.on_step, self.pool, self.events = on_step, pool, []
        super().__init__((idp or (pool.name if pool else agent_chat.DEFAULT_IDP)), **options)

    def record(self, *args, **kwargs):
        step = super().record(*args, **kwargs)
        if self.chain_id:
            for recorded in self.steps[len(self.events) :]:
                event = StepEvent(
                    recorded.index,
                    recorded.kind,
                    recorded.actor,
                    recorded.depth,
                    recorded.parent,
                    recorded.scope,
                    recorded.code_digest_prefix,
                    recorded.message_sha256,
                    self.chain_id,
                )
                self.events.append(event)
                if self.on_step:
                    self.on_step(event)
        return step

    def browser(self, **kwargs):
        browser = super().browser(**kwargs)
        if self.pool:
            browser.opener.add_handler(self.pool.handler())
        return browser

    def run(self):
        with self.pool.installed() if self.pool else contextlib.nullcontext():
            return super().run()


def run(idp: str | None = None, **options) -> ObservedChat:
    """One observed conversation (``options``: ``on_step``, ``pool`` and the example's ``Chat`` fields)."""
    return ObservedChat(idp, **options).run()
