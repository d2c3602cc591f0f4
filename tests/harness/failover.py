"""One IdP behind several addresses, as in the cluster run (scripts/cluster.py) or behind
a DNS name with several A records.

The client keeps talking to the IdP's *name* (its URL: the Host header, the cookies, the
URLs the IdP builds all stay on it); each request to that name is connected to the next
address in turn, and an address that refuses the connection (nothing was sent) is
dropped and the same request goes to the next one. Installed as a urllib handler, so it
covers the SDK's calls (``urllib.request.urlopen``) and, added to its opener, the
example's browser, with no hook in the example::

    pool = AddressPool(["http://127.0.0.1:8001", "http://127.0.0.1:8002"])
    with pool.installed():  # urllib.request.urlopen goes through the pool
        ...
    browser.opener.add_handler(pool.handler())

Plain HTTP only (the local cluster).
"""

from __future__ import annotations

import contextlib
import http.client
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter


class AddressPool:
    def __init__(self, addresses: list[str], name: str | None = None):
        self.addresses = [a.rstrip("/") for a in addresses if a.strip()]
        if not self.addresses:
            raise ValueError("an AddressPool needs at least one address")
        self.name = (name or self.addresses[0]).rstrip("/")
        self.netloc = urllib.parse.urlsplit(self.name).netloc.lower()
        self.alive = list(self.addresses)
        self.dropped: list[str] = []
        self.served: Counter[str] = Counter()  # requests answered, per address
        self._next = 0

    def open(self, handler: urllib.request.HTTPHandler, request: urllib.request.Request):
        """Send ``request`` (for the IdP's name) through the next address that accepts it."""
        while self.alive:
            index = self._next % len(self.alive)
            address = urllib.parse.urlsplit(self.alive[index]).netloc

            def connection(_host, address=address, **kwargs):  # the name's request, another address's socket
                return http.client.HTTPConnection(address, **kwargs)

            try:
                response = handler.do_open(connection, request)
            except urllib.error.URLError as exc:
                if not isinstance(exc.reason, ConnectionRefusedError):
                    raise
                self.dropped.append(self.alive.pop(index))  # nothing was sent: the next address gets it
                self._next = index
                continue
            self.served[self.alive[index]] += 1
            self._next = index + 1
            return response
        raise urllib.error.URLError(ConnectionRefusedError(f"every address of {self.name} refused the connection"))

    def handler(self) -> urllib.request.BaseHandler:
        """A urllib handler sending the name's requests through this pool (one per opener)."""
        return _PoolHandler(self)

    @contextlib.contextmanager
    def installed(self):
        """``urllib.request.urlopen`` (the SDK's calls, the wallet's direct_post) through the pool."""
        previous = urllib.request._opener  # no public getter
        urllib.request.install_opener(urllib.request.build_opener(self.handler()))
        try:
            yield self
        finally:
            urllib.request.install_opener(previous)


class _PoolHandler(urllib.request.HTTPHandler):
    handler_order = 400  # before urllib's own HTTPHandler (500) in an opener that has one

    def __init__(self, pool: AddressPool):
        super().__init__()
        self.pool = pool

    def http_open(self, request):
        if request.host.lower() != self.pool.netloc:
            return super().http_open(request)
        return self.pool.open(self, request)
