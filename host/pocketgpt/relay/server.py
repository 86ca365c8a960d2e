"""The relay: XiaoZhi websocket protocol + our text extension, OTA, health, metrics, OpenAI API.

Two listeners, as XiaoZhi's reference server has them: the websocket port (default 8000,
path /xiaozhi/v1/) and the HTTP port (default 8003: POST /xiaozhi/ota/, GET /healthz,
GET /metrics, /v1/models, /v1/completions, /v1/chat/completions).

Every connection is independent: the only state a relay keeps is per connection (plus its
in-process rate buckets and counters), so several relays can sit behind one websocket load
balancer (docs/relay.md). Credentials are checked before any work: the websocket upgrade is
refused with HTTP 401 in `process_request`, the HTTP API answers 401 before reading a prompt.

This file is the relay's lifecycle: its configuration, `Relay` (start both listeners, the
websocket upgrade gate, the generations it owns, drain on SIGTERM, stop). The rooms beside it:
session.py   one device's websocket session (the protocol state machine and its turns)
http_api.py  the HTTP routes (OTA, health, metrics, OpenAI API), mixed into `Relay`
limits.py    what a request may ask and how often (rate buckets, live caps)
metrics.py   the counters behind GET /metrics
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pocketgpt.errors import PocketError
from pocketgpt.relay import protocol as P
from pocketgpt.relay.auth import DEVICE_ID_RE, TokenStore, bearer
from pocketgpt.relay.backends import Backend, BackendError, Generation, GenRequest
from pocketgpt.relay.http_api import HttpApi, _close_after_response, chat_messages
from pocketgpt.relay.httpguard import ConnectionGuard, GuardedSite
from pocketgpt.relay.limits import LiveCaps, RateLimiter, check_sampling
from pocketgpt.relay.metrics import Metrics
from pocketgpt.relay.pairing import PairingBook
from pocketgpt.relay.session import NOTHING_HEARD, WsSession

__all__ = ["DEFAULT_WAKE_WORDS", "NOTHING_HEARD", "Relay", "RelayConfig", "chat_messages", "exposure_warnings"]

log = logging.getLogger("pocketgpt.relay")

DEFAULT_WAKE_WORDS = ("你好小智", "你好小志", "hi pocket", "hey pocket")


@dataclass
class RelayConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    http_port: int = 8003
    open: bool = False                 # no tokens at all: only for a trusted LAN
    home: Path | None = None           # token store folder ($POCKETGPT_HOME)
    cert: str | None = None            # TLS certificate + key: wss:// and https://
    key: str | None = None
    public_url: str | None = None      # websocket URL the OTA call hands out (behind a load balancer)
    pairing: bool = True               # unknown devices get an activation code (False: 403, pre-registration only)
    ota_per_minute: float = 60.0       # OTA calls per source address and per device id
    ota_burst: int = 20
    max_message_bytes: int = 64 * 1024
    max_sessions: int = 64
    max_sessions_per_device: int = 4   # one token cannot take every websocket session
    max_generations: int = 64          # live generations in the whole relay (each holds a KV cache)
    max_requests_per_device: int = 4   # concurrent generations per device (websocket + HTTP)
    http_max_connections: int = 256    # open HTTP connections (slow clients cannot exhaust descriptors)
    http_header_timeout: float = 10.0  # seconds a client has to send a request's head
    http_body_timeout: float = 10.0    # seconds a client has to send a request's body
    rate_per_minute: float = 60.0      # generation requests per device (websocket + HTTP)
    rate_burst: int = 10
    max_prompt_chars: int = 8000
    max_tokens_cap: int = 512
    default_max_tokens: int = 64
    idle_timeout: float = 120.0
    hello_timeout: float = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    drain_timeout: float = 10.0
    log_prompts: bool = False
    wake_words: tuple[str, ...] = DEFAULT_WAKE_WORDS
    voice: Any = False                 # True or a voice.VoiceConfig: Opus in, STT, TTS, Opus out (docs/voice.md)
    voice_off: str = ""                # why voice is off (said to a device that sends audio anyway)



# ---- small helpers ----------------------------------------------------------------------------

def exposure_warnings(cfg: RelayConfig) -> list[str]:
    """What to warn about at start when the relay listens beyond this machine."""
    import ipaddress

    try:
        loopback = cfg.host == "localhost" or ipaddress.ip_address(cfg.host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return []
    out = []
    if not cfg.public_url:
        out.append(f"listening on {cfg.host} without --public-url: the OTA call hands devices a websocket URL "
                   "built from the request's Host header; set --public-url to the address devices use")
    if not (cfg.cert and cfg.key):
        out.append(f"listening on {cfg.host} without TLS: tokens and prompts cross the network in clear; "
                   "use --cert/--key or a TLS-terminating proxy")
    return out


# ---- the relay --------------------------------------------------------------------------------

class Relay(HttpApi):
    """Both listeners, the token store, limits, metrics and the backend; `drain()` shuts down."""

    def __init__(self, cfg: RelayConfig, backend: Backend) -> None:
        self.cfg = cfg
        self.backend = backend
        self.store = TokenStore(cfg.home)
        self.pairing = PairingBook(self.store)
        self.limiter = RateLimiter(cfg.rate_per_minute, cfg.rate_burst)
        self.ota_limiter = RateLimiter(cfg.ota_per_minute, cfg.ota_burst)  # keys: source address, device id
        self.metrics = Metrics()
        self.sessions: set[WsSession] = set()
        self.caps = LiveCaps(cfg.max_generations, cfg.max_requests_per_device)
        self.active: dict[Generation, str | None] = {}  # live generation -> the device whose slot it holds
        self.draining = False
        self.ws_port: int | None = None
        self.http_port: int | None = None
        self._ws_server: Any = None
        self._http_runner: Any = None
        self._stopped: asyncio.Event | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self.voice: Any = None
        if cfg.voice:
            from pocketgpt.relay.voice.session import VoiceConfig, VoiceService

            self.voice = VoiceService(cfg.voice if isinstance(cfg.voice, VoiceConfig) else None)

    # -- lifecycle --

    def ssl_context(self) -> ssl.SSLContext | None:
        if not (self.cfg.cert or self.cfg.key):
            return None
        if not (self.cfg.cert and self.cfg.key):
            raise PocketError("TLS needs both --cert and --key")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(self.cfg.cert, self.cfg.key)
        except (OSError, ssl.SSLError) as exc:
            raise PocketError(f"cannot load TLS certificate {self.cfg.cert} / key {self.cfg.key}: {exc}") from None
        return ctx

    async def start(self) -> None:
        from aiohttp import web
        from websockets.asyncio.server import serve

        self._stopped = asyncio.Event()
        tls = self.ssl_context()
        c = self.cfg
        if self.voice is not None:
            from pocketgpt.relay.voice.codec import AudioError

            try:
                await self.voice.start()
            except AudioError as exc:
                raise PocketError(f"voice cannot start: {exc}") from None
        try:
            self._ws_server = await serve(
                self._ws_handler, c.host, c.port, process_request=self._process_request,
                max_size=c.max_message_bytes, ping_interval=c.ping_interval, ping_timeout=c.ping_timeout,
                close_timeout=5, open_timeout=c.hello_timeout, compression=None, ssl=tls, server_header="pocketgpt")
        except OSError as exc:
            raise PocketError(f"cannot listen on {c.host}:{c.port} for websockets: {exc.strerror}; "
                              "pick another --port") from None
        self.ws_port = self._ws_server.sockets[0].getsockname()[1]
        app = web.Application(client_max_size=c.max_message_bytes, middlewares=[self._http_middleware])
        app.router.add_post("/xiaozhi/ota/", self.http_ota)
        app.router.add_post("/xiaozhi/ota", self.http_ota)
        app.router.add_post("/xiaozhi/ota/activate", self.http_ota_activate)
        app.router.add_get("/healthz", self.http_healthz)
        app.router.add_get("/metrics", self.http_metrics)
        app.router.add_get("/v1/models", self.http_models)
        app.router.add_post("/v1/completions", self.http_completions)
        app.router.add_post("/v1/chat/completions", self.http_chat)
        app.on_response_prepare.append(_close_after_response)
        # handler_cancellation: a client that leaves cancels its handler, so its generation stops
        self._http_runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2,
                                          handler_cancellation=True, keepalive_timeout=c.http_header_timeout)
        await self._http_runner.setup()
        self.http_guard = ConnectionGuard(c.http_max_connections, c.http_header_timeout)
        site = GuardedSite(self._http_runner, c.host, c.http_port, self.http_guard, ssl_context=tls)
        try:
            await site.start()
        except OSError as exc:
            self._ws_server.close()
            raise PocketError(f"cannot listen on {c.host}:{c.http_port} for HTTP: {exc.strerror}; "
                              "pick another --http-port") from None
        self.http_port = self._http_runner.addresses[0][1]
        for warning in exposure_warnings(c):
            log.warning("%s", warning)
        if c.open:
            log.warning("OPEN MODE: no tokens are checked; anyone who reaches ports %s and %s can use the model. "
                        "Use --open only on a trusted LAN.", self.ws_port, self.http_port)

    @property
    def scheme(self) -> tuple[str, str]:
        return ("wss", "https") if self.cfg.cert else ("ws", "http")

    async def wait_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    def request_drain(self) -> None:
        """Signal-handler entry: the first signal drains, a second one exits at once."""
        if self._drain_task is None:
            self._drain_task = asyncio.ensure_future(self.drain())
            return
        log.warning("second stop signal: exiting now, without waiting for the drain")
        logging.shutdown()
        os._exit(1)

    async def drain(self) -> None:
        """SIGTERM: refuse new sessions and requests, let running generations finish until the
        deadline, abort the rest (their clients get pg.done reason abort / tts stop), close."""
        if self.draining:
            if self._stopped is not None:
                await self._stopped.wait()
            return
        self.draining = True
        loop = asyncio.get_running_loop()
        log.warning("draining: no new sessions; %d generation(s) running, deadline %.0f s",
                    len(self.active), self.cfg.drain_timeout)
        if self._ws_server is not None:
            self._ws_server.close(close_connections=False)  # stop listening; open sessions stay
        deadline = loop.time() + self.cfg.drain_timeout
        while self.active and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self.active:
            log.warning("drain deadline reached: aborting %d generation(s)", len(self.active))
            for gen in list(self.active):
                gen.abort()
            end = loop.time() + 5
            while self.active and loop.time() < end:
                await asyncio.sleep(0.02)
        # spoken replies still playing get the same deadline, then stop (their tts stop still goes out)
        while any(s.speaker is not None for s in self.sessions) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for s in list(self.sessions):
            if s.speaker is not None:
                s.speaker.stop()
        for s in list(self.sessions):
            # let each turn send its last message (pg.done / tts stop) before the close frame
            if s.task is not None and not s.task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(s.task), 2)
                except (asyncio.TimeoutError, Exception):
                    pass
            try:
                await s.ws.close(1001, "relay shutting down")
            except Exception:
                pass
        if self._ws_server is not None:
            try:
                await asyncio.wait_for(self._ws_server.wait_closed(), 10)
            except asyncio.TimeoutError:
                log.warning("some websocket handlers did not finish in time")
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        await self.backend.aclose()
        if self.voice is not None:
            self.voice.close()
        log.info("relay stopped")
        if self._stopped is not None:
            self._stopped.set()

    # -- generations --

    async def start_generation(self, req: GenRequest, device: str = "") -> Generation:
        if self.draining:
            raise BackendError("shutting_down", "the relay is shutting down", 503)
        problem = check_sampling(req.top_k, req.stop, req.seed, self.backend.n_vocab)
        if problem:  # refused here, for this request alone, not inside a step shared with others
            raise BackendError("bad_message", problem, 400)
        owner = None if self.cfg.open else device  # open mode: ids are unverified, only the global cap counts
        full = self.caps.acquire(owner)
        if full:
            self.metrics.inc("pocketgpt_refusals_total", code=full[0])
            raise BackendError(*full)
        try:
            gen = await self.backend.start(req)
        except BaseException:
            self.caps.release(owner)
            raise
        self.active[gen] = owner
        return _Tracked(self, gen, shape=req.chat)  # type: ignore[return-value]

    def _forget(self, gen: Generation) -> None:
        if gen in self.active:
            self.caps.release(self.active.pop(gen))

    def _ended(self, gen: Generation) -> None:
        self._forget(gen)
        st = gen.stats
        self.metrics.inc("pocketgpt_generations_total", reason=st.finish_reason)
        self.metrics.inc("pocketgpt_tokens_generated_total", st.tokens)
        if st.first_token_s is not None:
            self.metrics.observe_ttft(st.first_token_s)

    def log_request(self, device_id: str, kind: str, prompt: str) -> None:
        if self.cfg.log_prompts:
            log.info("device %r %s prompt=%r", device_id, kind, prompt)
        else:
            log.info("device %r %s (%d chars)", device_id, kind, len(prompt))

    # -- websocket --

    def _process_request(self, connection: Any, request: Any) -> Any:
        parts = urlsplit(request.path)
        if parts.path == "/healthz":
            return connection.respond(503 if self.draining else 200, "draining\n" if self.draining else "ok\n")
        if parts.path.rstrip("/") != P.WS_PATH.rstrip("/"):
            return connection.respond(404, f"no websocket endpoint at {parts.path}; use {P.WS_PATH}\n")
        if self.draining:
            self.metrics.inc("pocketgpt_refusals_total", code="shutting_down")
            return connection.respond(503, "relay is shutting down; connect to another relay\n")
        query = parse_qs(parts.query)
        token = bearer(request.headers.get("Authorization")) or bearer((query.get("authorization") or [None])[0])
        claimed = request.headers.get("Device-Id") or (query.get("device-id") or [None])[0]
        if claimed is not None and not DEVICE_ID_RE.match(claimed):
            self.metrics.inc("pocketgpt_refusals_total", code="bad_device_id")
            return connection.respond(400, "Device-Id must be 1-64 letters, digits, ':', '.', '_' or '-'\n")
        if self.cfg.open:
            device_id = claimed or f"anonymous@{connection.remote_address[0] if connection.remote_address else '?'}"
        else:
            try:
                owner = self.store.verify(token)
            except PocketError as exc:
                log.error("token store unreadable: %s", exc)
                return connection.respond(500, "relay token store is damaged; see the relay's log\n")
            if owner is None:
                self.metrics.inc("pocketgpt_refusals_total", code="unauthorized")
                log.info("refused websocket: %s token (device %r)", "missing" if not token else "invalid", claimed)
                return connection.respond(401, "missing, invalid or revoked token: register the device with "
                                          "'pocketgpt token add DEVICE_ID' and send Authorization: Bearer TOKEN\n")
            if claimed and claimed != owner:
                self.metrics.inc("pocketgpt_refusals_total", code="unauthorized")
                return connection.respond(401, "this token belongs to another device\n")
            device_id = owner
        if len(self.sessions) >= self.cfg.max_sessions:
            self.metrics.inc("pocketgpt_refusals_total", code="too_many_sessions")
            return connection.respond(503, f"relay is at its limit of {self.cfg.max_sessions} sessions; retry later\n")
        mine = 0 if self.cfg.open else sum(1 for s in self.sessions if s.device_id == device_id)
        if mine >= self.cfg.max_sessions_per_device:
            self.metrics.inc("pocketgpt_refusals_total", code="too_many_sessions")
            return connection.respond(429, f"this device already has {mine} sessions open (the limit); close one\n")
        connection.pocketgpt_device = device_id
        connection.pocketgpt_token = token
        return None

    async def _ws_handler(self, ws: Any) -> None:
        session = WsSession(self, ws, getattr(ws, "pocketgpt_device", "unknown"), getattr(ws, "pocketgpt_token", None))
        self.sessions.add(session)
        self.metrics.inc("pocketgpt_sessions_total")
        log.info("session %s opened for device %r", session.session_id[:8], session.device_id)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            log.info("session %s closed (code %s)", session.session_id[:8], getattr(ws, "close_code", None))


class _Tracked:
    """Wraps a Generation so the relay learns when it ends (for drain and metrics)."""

    def __init__(self, relay: Relay, gen: Generation, shape: bool = False) -> None:
        self._relay = relay
        self._gen = gen
        self._shape = shape  # a chat reply: whole sentences, never empty (chat_format.ReplyShaper)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gen, name)

    def __aiter__(self) -> Any:
        return self._iterate()

    async def _iterate(self) -> Any:
        from pocketgpt.chat_format import ReplyShaper

        shaper = ReplyShaper() if self._shape else None
        try:
            async for piece in self._gen:
                if shaper is None:
                    yield piece
                elif (text := shaper.feed(piece)):
                    yield text
            if shaper is not None and (text := shaper.finish(self._gen.stats.finish_reason)):
                yield text
        finally:
            if self._gen.finished or self._gen.aborted:
                self._relay._ended(self._gen)
            else:
                self._relay._forget(self._gen)
