"""The HTTP port's defences against slow clients: a deadline for each request's head and a cap
on open connections, in front of aiohttp (which has neither).

aiohttp holds a connection whose client sends half a request line or half its headers for as
long as the client likes (slowloris): a few hundred such sockets exhaust the relay's file
descriptors. `GuardedSite` is a TCPSite whose connections pass through `_Guarded`: a new
connection beyond `max_connections` is closed at once, and one whose request head (up to the
blank line) has not arrived within `header_timeout` seconds is dropped. The relay answers every
request with `Connection: close`, so each request gets a fresh deadline; the body has its own
(the handlers read it with a timeout and answer 408).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

log = logging.getLogger("pocketgpt.relay")


class ConnectionGuard:
    """Shared counters of one listener."""

    def __init__(self, max_connections: int, header_timeout: float) -> None:
        self.max_connections = max(1, max_connections)
        self.header_timeout = header_timeout
        self.open = 0
        self.refused = 0
        self.timed_out = 0


class _Guarded(asyncio.Protocol):
    """Forwards everything to aiohttp's protocol, after the two checks."""

    def __init__(self, inner: Any, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._counted = False

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        g = self._guard
        if g.open >= g.max_connections:
            g.refused += 1
            transport.abort()
            return
        g.open += 1
        self._counted = True
        self._timer = asyncio.get_running_loop().call_later(g.header_timeout, self._too_slow)
        self._inner.connection_made(transport)

    def _too_slow(self) -> None:
        self._timer = None
        self._guard.timed_out += 1
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self._counted:
            return
        if self._timer is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self._timer.cancel()
                self._timer = None
            self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._counted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counted:
            self._counted = False
            self._guard.open -= 1
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedSite(web.TCPSite):
    """aiohttp's TCPSite with every connection behind a `_Guarded`."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard,
                 ssl_context: Any = None) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        factory = self._runner.server
        assert factory is not None
        self._server = await loop.create_server(lambda: _Guarded(factory(), self.guard), self._host, self._port,
                                                ssl=self._ssl_context, backlog=self._backlog,
                                                reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        if hasattr(self, "_bound_port"):  # aiohttp >= 3.10 reports port 0's real port from here
            self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port
