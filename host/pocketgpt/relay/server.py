"""The relay: XiaoZhi websocket protocol + our text extension, OTA, health, metrics, OpenAI API.

Two listeners, as XiaoZhi's reference server has them: the websocket port (default 8000,
path /xiaozhi/v1/) and the HTTP port (default 8003: POST /xiaozhi/ota/, GET /healthz,
GET /metrics, /v1/models, /v1/completions, /v1/chat/completions).

Every connection is independent: the only state a relay keeps is per connection (plus its
in-process rate buckets and counters), so several relays can sit behind one websocket load
balancer (docs/relay.md). Credentials are checked before any work: the websocket upgrade is
refused with HTTP 401 in `process_request`, the HTTP API answers 401 before reading a prompt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import ssl
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed

from pocketgpt.errors import PocketError
from pocketgpt.relay import protocol as P
from pocketgpt.relay.auth import DEVICE_ID_RE, TokenStore, bearer
from pocketgpt.relay.backends import Backend, BackendError, Generation, GenRequest
from pocketgpt.relay.httpguard import ConnectionGuard, GuardedSite
from pocketgpt.relay.limits import LiveCaps, check_number, check_sampling
from pocketgpt.relay.pairing import PairingBook, PairingFull

log = logging.getLogger("pocketgpt.relay")

_HOST_RE = re.compile(r"^[A-Za-z0-9.:\[\]-]{1,253}$")
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


# what a push-to-talk turn in which nothing was recognised says (a turn is never silent)
NOTHING_HEARD = "Sorry, I did not hear anything. Hold the button and speak."


class RateLimiter:
    """A token bucket per device: `burst` requests at once, refilled at `per_minute`."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(max(1, burst))
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> float:
        """0.0 if allowed (and counted), else the seconds to wait."""
        now = time.monotonic()
        if len(self._buckets) > 10000:  # forget refilled buckets so made-up device ids cannot grow memory
            self._buckets = {k: (lv, t) for k, (lv, t) in self._buckets.items()
                             if lv + (now - t) * self.rate < self.burst}
        level, last = self._buckets.get(key, (self.burst, now))
        level = min(self.burst, level + (now - last) * self.rate)
        if level >= 1.0:
            self._buckets[key] = (level - 1.0, now)
            return 0.0
        self._buckets[key] = (level, now)
        return (1.0 - level) / self.rate if self.rate > 0 else 3600.0


TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Counters for GET /metrics in Prometheus' text format (no client library needed)."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.ttft = [0] * (len(TTFT_BUCKETS) + 1)
        self.ttft_sum = 0.0
        self.ttft_count = 0

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + value

    def observe_ttft(self, seconds: float) -> None:
        for i, edge in enumerate(TTFT_BUCKETS):
            if seconds <= edge:
                self.ttft[i] += 1
                break
        else:
            self.ttft[-1] += 1
        self.ttft_sum += seconds
        self.ttft_count += 1

    def render(self, gauges: dict[str, float]) -> str:
        help_text = {
            "pocketgpt_sessions_total": "Websocket sessions accepted.",
            "pocketgpt_refusals_total": "Requests refused, by error code.",
            "pocketgpt_generations_total": "Generations ended, by finish reason.",
            "pocketgpt_tokens_generated_total": "Tokens generated.",
            "pocketgpt_http_requests_total": "HTTP requests, by route and status.",
        }
        lines: list[str] = []
        for name, value in sorted(gauges.items()):
            lines += [f"# TYPE {name} gauge", f"{name} {value:g}"]
        seen: set[str] = set()
        for (name, labels), value in sorted(self.counters.items()):
            if name not in seen:
                seen.add(name)
                lines += [f"# HELP {name} {help_text.get(name, name)}", f"# TYPE {name} counter"]
            lab = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"{name}{{{lab}}} {value:g}" if lab else f"{name} {value:g}")
        name = "pocketgpt_time_to_first_token_seconds"
        lines += [f"# HELP {name} Time from request to first generated text.", f"# TYPE {name} histogram"]
        acc = 0
        for edge, n in zip(TTFT_BUCKETS, self.ttft):
            acc += n
            lines.append(f'{name}_bucket{{le="{edge:g}"}} {acc}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.ttft_count}')
        lines += [f"{name}_sum {self.ttft_sum:g}", f"{name}_count {self.ttft_count}"]
        return "\n".join(lines) + "\n"


# ---- one websocket session --------------------------------------------------------------------

class WsSession:
    """One device connection: the protocol state machine between socket and backend."""

    def __init__(self, relay: Relay, ws: Any, device_id: str, token: str | None = None) -> None:
        self.relay = relay
        self.ws = ws
        self.device_id = device_id
        self._token = token  # kept in memory only, to notice a revocation; never logged
        self.session_id = uuid.uuid4().hex
        self.hello_done = False
        self.extension = False
        self.task: asyncio.Task[None] | None = None
        self.gen: Generation | None = None
        self.request_id: str | None = None     # the running pg.generate, if any
        self.audio_refused = False
        self.audio_problem: str | None = None  # the hello's audio_params cannot be decoded (voice on)
        self.listener: Any = None              # voice.Listener, made at the first listen start
        self.speaker: Any = None               # voice.Speaker of the running turn

    async def send(self, text: str) -> bool:
        try:
            await self.ws.send(text)
            return True
        except ConnectionClosed:
            return False

    async def refuse(self, code: str, message: str, request_id: str | None = None) -> None:
        self.relay.metrics.inc("pocketgpt_refusals_total", code=code)
        await self.send(P.error(code, message, request_id))

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    async def run(self) -> None:
        cfg = self.relay.cfg
        try:
            while True:
                timeout = cfg.idle_timeout if self.hello_done else cfg.hello_timeout
                try:
                    message = await asyncio.wait_for(self.ws.recv(), timeout)
                except asyncio.TimeoutError:
                    if self.busy:
                        continue  # a reply is streaming: the device is listening, not idle
                    code = "idle_timeout" if self.hello_done else "hello_timeout"
                    await self.refuse(code, f"nothing received for {timeout:g} s; closing")
                    await self.ws.close(1000 if self.hello_done else 1008, code)
                    return
                try:
                    await self.handle(message)
                except ConnectionClosed:
                    raise
                except Exception:
                    log.exception("session %s: failed handling a message", self.session_id[:8])
                    await self.refuse("internal", "the relay failed handling that message; the session stays open")
        except ConnectionClosed:
            pass
        finally:
            if self.gen is not None:
                self.gen.abort()
            if self.speaker is not None:
                self.speaker.stop()
            if self.listener is not None:
                await self.listener.close()
            if self.task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self.task), 5)
                except (asyncio.TimeoutError, Exception):
                    self.task.cancel()

    async def handle(self, message: str | bytes) -> None:
        if isinstance(message, (bytes, bytearray, memoryview)):
            if not self.hello_done:
                await self.refuse("hello_required", "send a hello before anything else")
            elif self.relay.voice is not None and self.audio_problem is None:
                if self.listener is not None:
                    self.listener.audio(bytes(message))
            elif self.audio_problem is not None and not self.audio_refused:
                self.audio_refused = True
                await self.refuse("bad_audio_params", self.audio_problem)
            elif not self.audio_refused:
                # once per listening phase: a device streams ~16 packets/s, one error is enough
                self.audio_refused = True
                why = self.relay.cfg.voice_off or (
                    "this relay has no voice: it needs the voice extra (pip install 'pocketgpt[voice]': opuslib, "
                    "pocketsphinx), Debian's libopus0 and espeak-ng")
                await self.refuse("audio_unsupported", f"{why}; binary audio frames are ignored until the next "
                                  "listen start; send text turns with listen detect or pg.generate")
            return
        try:
            msg = P.parse_client(message)
        except P.ProtocolError as exc:
            await self.refuse(exc.code, exc.message, exc.request_id)
            return
        if msg.type == "hello":
            self.hello_done = True
            self.extension = self.extension or msg.wants_extension
            ext = None
            if self.extension:
                ext = {"version": P.EXTENSION_VERSION, "max_tokens": self.relay.cfg.max_tokens_cap,
                       "max_prompt_chars": self.relay.cfg.max_prompt_chars, **self.relay.backend.describe()}
            await self.send(P.server_hello(self.session_id, ext))
            if self.relay.voice is not None:
                from pocketgpt.relay.voice.codec import check_client_audio

                self.audio_problem = check_client_audio(msg.audio_params)
                if self.audio_problem:
                    await self.refuse("bad_audio_params", self.audio_problem + "; audio frames are refused until "
                                      "a hello with usable audio_params, text turns still work")
            return
        if not self.hello_done:
            await self.refuse("hello_required", "send a hello before anything else")
            return
        if msg.type in ("listen", "pg.generate") and not await self._still_authorized(msg.request_id):
            return
        if msg.type == "listen":
            if msg.state == "start":
                self.audio_refused = False
                if self.relay.voice is not None and self.audio_problem is None:
                    await self._listen_start(msg.mode or "auto")
            elif msg.state == "stop":
                if self.listener is not None:
                    self.listener.stop()
            elif msg.state == "detect" and msg.text:
                if msg.text.strip().lower() in self.relay.cfg.wake_words:
                    return  # a wake word fired: nothing to answer until the user speaks
                await self.start_xiaozhi_turn(msg.text)
            return
        if msg.type == "abort":
            await self.abort(msg.request_id)
            return
        if msg.type in ("mcp", "iot"):
            return  # no device tools on this relay
        if msg.type == "pg.generate":
            await self.start_pg(msg)

    async def _still_authorized(self, request_id: str | None) -> bool:
        """A token revoked while its session is open stops working at the next request."""
        if self.relay.cfg.open or self.relay.store.verify(self._token) == self.device_id:
            return True
        log.info("session %s: device %r was revoked; closing", self.session_id[:8], self.device_id)
        await self.refuse("unauthorized", "this device's token was revoked; closing the connection", request_id)
        await self.ws.close(1008, "token revoked")
        return False

    # -- turns --

    def _check_request(self, prompt: str, request_id: str | None) -> tuple[str, str] | None:
        cfg = self.relay.cfg
        if self.relay.draining:
            return "shutting_down", "the relay is shutting down; reconnect to another relay"
        if len(prompt) > cfg.max_prompt_chars:
            return "prompt_too_long", f"prompt is {len(prompt)} characters; this relay takes at most {cfg.max_prompt_chars}"
        wait = self.relay.limiter.allow(self.device_id)
        if wait:
            return "rate_limited", f"too many requests from this device; retry in {wait:.1f} s"
        return None

    async def start_xiaozhi_turn(self, text: str) -> None:
        if self.busy:
            # the user spoke again while the reply plays: barge in, as XiaoZhi servers do
            await self.abort(None, quiet=True)
        refusal = self._check_request(text, None)
        if refusal:
            await self.refuse(*refusal)
            return
        req = GenRequest(prompt=text, max_tokens=self.relay.cfg.default_max_tokens, messages=(("user", text),))
        self.relay.log_request(self.device_id, "xiaozhi", text)
        self.task = asyncio.create_task(self._xiaozhi_turn(text, req))

    async def _xiaozhi_turn(self, text: str, req: GenRequest) -> None:
        sid = self.session_id
        await self.send(P.stt(text, sid))
        await self.send(P.tts("start", sid))
        splitter = P.SentenceSplitter()
        if self.relay.voice is not None:
            from pocketgpt.relay.voice.sentences import SpeechSplitter
            from pocketgpt.relay.voice.session import Speaker

            if self.relay.voice.cfg.speak_clauses:
                splitter = SpeechSplitter()  # also cuts long sentences at clauses: speech starts sooner
            self.speaker = Speaker(self.relay.voice, self.send, self.send_audio,
                                   lambda sentence: P.tts("sentence_start", sid, sentence))
        try:
            self.gen = await self.relay.start_generation(req, self.device_id)
            async for piece in self.gen:
                for sentence in splitter.feed(piece):
                    await self._sentence(sentence)
            rest = splitter.flush()
            if rest and self.gen.stats.finish_reason != "abort":
                await self._sentence(rest)
            self.gen = None
            if self.speaker is not None:
                await self.speaker.finish()  # the reply's audio, paced at real time
                if self.speaker.error and not self.speaker.stopped:
                    await self.refuse("voice_error", f"speech synthesis failed: {self.speaker.error}")
        except BackendError as exc:
            await self.refuse(exc.code, exc.message)
        finally:
            self.gen = None
            if self.speaker is not None:
                self.speaker.stop()
                self.speaker = None
            await self.send(P.tts("stop", sid))

    async def _say(self, text: str) -> None:
        """A turn of fixed words (no model): stt, tts start, the sentence (spoken when voice is on), tts stop."""
        sid = self.session_id
        await self.send(P.stt("", sid))
        await self.send(P.tts("start", sid))
        if self.relay.voice is not None:
            from pocketgpt.relay.voice.session import Speaker

            self.speaker = Speaker(self.relay.voice, self.send, self.send_audio,
                                   lambda sentence: P.tts("sentence_start", sid, sentence))
        try:
            await self._sentence(text)
            if self.speaker is not None:
                await self.speaker.finish()
        finally:
            if self.speaker is not None:
                self.speaker.stop()
                self.speaker = None
            await self.send(P.tts("stop", sid))

    async def _sentence(self, sentence: str) -> None:
        if self.speaker is not None:
            self.speaker.say(sentence)  # its sentence_start goes out right before its audio
        else:
            await self.send(P.tts("sentence_start", self.session_id, sentence))

    async def send_audio(self, packet: bytes) -> bool:
        try:
            await self.ws.send(packet)
            return True
        except ConnectionClosed:
            return False

    async def _listen_start(self, mode: str) -> None:
        from pocketgpt.relay.voice.session import Listener

        if self.busy and mode != "realtime" and self.request_id is None:
            await self.abort(None, quiet=True)  # talking over the reply (push-to-talk pressed again)
        if self.listener is None:
            self.listener = Listener(self.relay.voice, self._on_mic)
        self.listener.start(mode)

    async def _on_mic(self, ev: Any) -> None:
        """Events from the voice listener, in audio order."""
        if ev.kind == "error":
            await self.refuse(ev.code, ev.text)
        elif ev.kind == "speech_start":
            if self.listener is not None and self.listener.mode == "realtime" and self.busy and self.request_id is None:
                await self.abort(None, quiet=True)  # barge-in: the user talks over the reply
        elif ev.kind == "utterance":
            log.info("session %s: heard %.1f s of speech (%d words)", self.session_id[:8], ev.audio_s,
                     len(ev.text.split()))
            if ev.text:
                if await self._still_authorized(None):
                    await self.start_xiaozhi_turn(ev.text)
            elif self.listener is not None and self.listener.mode == "manual":
                # push-to-talk with nothing recognised: say so (never a silent turn), which also ends
                # the turn so the device leaves listening
                await self._say(NOTHING_HEARD)

    async def start_pg(self, msg: P.ClientMessage) -> None:
        rid = msg.request_id
        assert rid is not None and msg.prompt is not None
        cfg = self.relay.cfg
        if not self.extension:
            await self.refuse("unknown_type", "pg.generate needs \"features\": {\"pocketgpt\": 1} in the hello", rid)
            return
        if self.busy:
            await self.refuse("busy", f"request {self.request_id or '(voice turn)'} is still running; "
                              "abort it or wait for its pg.done", rid)
            return
        p = msg.params
        if p.max_tokens is not None and p.max_tokens > cfg.max_tokens_cap:
            await self.refuse("bad_message", f"max_tokens {p.max_tokens} exceeds this relay's cap of {cfg.max_tokens_cap}", rid)
            return
        refusal = self._check_request(msg.prompt, rid)
        if refusal:
            await self.refuse(*refusal, rid)
            return
        defaults = GenRequest(prompt=msg.prompt)
        req = GenRequest(
            prompt=msg.prompt, max_tokens=p.max_tokens or cfg.default_max_tokens,
            temperature=defaults.temperature if p.temperature is None else p.temperature,
            top_k=defaults.top_k if p.top_k is None else p.top_k,
            top_p=defaults.top_p if p.top_p is None else p.top_p,
            seed=p.seed, greedy=p.greedy, stop=p.stop, messages=() if p.raw else (("user", msg.prompt),))
        self.relay.log_request(self.device_id, "pg.generate", msg.prompt)
        self.request_id = rid
        self.task = asyncio.create_task(self._pg_turn(rid, req))

    async def _pg_turn(self, rid: str, req: GenRequest) -> None:
        try:
            self.gen = await self.relay.start_generation(req, self.device_id)
            async for piece in self.gen:
                await self.send(P.delta(rid, piece))
            st = self.gen.stats
            await self.send(P.done(rid, st.finish_reason, st.tokens, st.prompt_tokens))
        except BackendError as exc:
            await self.refuse(exc.code, exc.message, rid)
        finally:
            self.gen = None
            self.request_id = None

    async def abort(self, request_id: str | None, quiet: bool = False) -> None:
        if not self.busy:
            if not quiet and request_id is None:
                await self.send(P.tts("stop", self.session_id))  # XiaoZhi: abort is answered by tts stop
            return
        if request_id is not None and request_id != self.request_id:
            return  # an old or unknown id: nothing of that name is running
        if self.gen is not None:
            self.gen.abort()
        if self.speaker is not None:
            self.speaker.stop()  # no audio packet leaves after this point
        task = self.task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), 10)
            except asyncio.TimeoutError:
                task.cancel()


# ---- the relay --------------------------------------------------------------------------------

class Relay:
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
        self.active: set[Generation] = set()
        self.caps = LiveCaps(cfg.max_generations, cfg.max_requests_per_device)
        self._owners: dict[Generation, str | None] = {}  # live generation -> the device whose slot it holds
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
        self.active.add(gen)
        self._owners[gen] = owner
        return _Tracked(self, gen, shape=req.chat)  # type: ignore[return-value]

    def _forget(self, gen: Generation) -> None:
        self.active.discard(gen)
        if gen in self._owners:
            self.caps.release(self._owners.pop(gen))

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

    # -- HTTP --

    def _gauges(self) -> dict[str, float]:
        gauges: dict[str, float] = {
                  "pocketgpt_sessions_active": len(self.sessions), "pocketgpt_generations_active": len(self.active),
                  "pocketgpt_draining": 1 if self.draining else 0, "pocketgpt_open_mode": 1 if self.cfg.open else 0}
        sched = getattr(self.backend, "scheduler", None)
        if sched is not None and hasattr(sched, "steps"):  # batched decode: tokens per step = the batch size
            gauges["pocketgpt_batch_steps"] = sched.steps
            gauges["pocketgpt_batch_tokens"] = sched.batched_tokens
        return gauges

    @staticmethod
    def _route_name(request: Any) -> str:
        info = request.match_info.route.resource
        return info.canonical if info is not None else "other"

    @property
    def _http_middleware(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def middleware(request: Any, handler: Any) -> Any:
            status = 500
            try:
                resp = await handler(request)
                status = resp.status
                return resp
            except web.HTTPException as exc:
                status = exc.status
                if exc.status == 413:
                    return _api_error(413, "too_large", f"request body exceeds {self.cfg.max_message_bytes} bytes")
                if exc.status in (404, 405):
                    return _api_error(exc.status, "not_found", f"no {request.method} {request.path} on this relay")
                raise
            except (ConnectionResetError, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("HTTP %s %s failed", request.method, request.path)
                return _api_error(500, "internal", "the relay failed handling this request")
            finally:
                self.metrics.inc("pocketgpt_http_requests_total", route=self._route_name(request), status=str(status))
        return middleware

    def _http_device(self, request: Any) -> str | Any:
        """The device id behind an API request, or a 401 response."""
        if self.cfg.open:
            claimed = request.headers.get("Device-Id")
            return claimed if claimed and DEVICE_ID_RE.match(claimed) else f"anonymous@{request.remote}"
        owner = self.store.verify(bearer(request.headers.get("Authorization")))
        if owner is None:
            self.metrics.inc("pocketgpt_refusals_total", code="unauthorized")
            return _api_error(401, "invalid_api_key", "missing, invalid or revoked token: send Authorization: "
                              "Bearer TOKEN (pocketgpt token add DEVICE_ID issues one)")
        return owner

    async def http_healthz(self, request: Any) -> Any:
        from aiohttp import web

        body = {"status": "draining" if self.draining else "ok", "sessions": len(self.sessions),
                "generations": len(self.active), "open": self.cfg.open, **self.backend.describe()}
        return web.json_response(body, status=503 if self.draining else 200)

    async def http_metrics(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(text=self.metrics.render(self._gauges()), content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"})

    def ws_url_for(self, request: Any) -> str:
        if self.cfg.public_url:
            return self.cfg.public_url
        host = request.url.host or self.cfg.host
        if not _HOST_RE.match(host):  # the Host header is the client's word: only a plain name or address
            host = self.cfg.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{self.scheme[0]}://{host}:{self.ws_port}{P.WS_PATH}"

    def _ota_limited(self, key: str) -> Any:
        """A 429 when this source address ("addr:...") or device id ("id:...") calls OTA too often."""
        wait = self.ota_limiter.allow(key)
        if not wait:
            return None
        self.metrics.inc("pocketgpt_refusals_total", code="rate_limited")
        return _api_error(429, "rate_limited", f"too many configuration calls; retry in {wait:.1f} s",
                          headers={"Retry-After": str(max(1, int(wait + 0.999)))})

    async def http_ota(self, request: Any) -> Any:
        """XiaoZhi's configuration call: the websocket URL, the firmware version echoed back, and
        either an activation code (an unpaired device), or the device's token once after pairing."""
        from aiohttp import web

        if self.draining:
            return _api_error(503, "shutting_down", "the relay is shutting down")
        limited = self._ota_limited(f"addr:{request.remote}")  # per address, before reading any body
        if limited is not None:
            return limited
        body = await _json_body(request, "the OTA request body must be a JSON object", self.cfg.http_body_timeout)
        if not isinstance(body, dict):
            return body
        app = body.get("application")
        version = app.get("version") if isinstance(app, dict) else None
        version = version if isinstance(version, str) else ""
        version = version if len(version) <= 64 else ""
        device_id = request.headers.get("Device-Id") or (body.get("mac_address") if isinstance(body.get("mac_address"), str) else None)
        if device_id is not None and not DEVICE_ID_RE.match(device_id):
            self.metrics.inc("pocketgpt_refusals_total", code="bad_device_id")
            return _api_error(400, "bad_device_id", "Device-Id must be 1-64 letters, digits, ':', '.', '_' or '-' "
                              "(a MAC address such as aa:bb:cc:dd:ee:ff)")
        limited = self._ota_limited(f"id:{device_id}") if device_id else None
        if limited is not None:
            return limited
        ws: dict[str, Any] = {"url": self.ws_url_for(request), "version": P.PROTOCOL_VERSION}
        reply: dict[str, Any] = {"server_time": {"timestamp": int(time.time() * 1000), "timezone_offset": 0},
                                 "firmware": {"version": version, "url": ""}, "websocket": ws}
        if self.cfg.open:
            ws["token"] = ""
            return web.json_response(reply)
        if not device_id:
            return _api_error(400, "bad_device_id", "send the device's id as a Device-Id header")
        client_id = request.headers.get("Client-Id") or "(none)"
        loop = asyncio.get_running_loop()
        entry = await loop.run_in_executor(None, self.store.entry, device_id)
        if entry is not None:
            # take_handout locks and re-reads the store: only when a hand-out may be pending
            token = None if entry.handout is None else \
                await loop.run_in_executor(None, self.store.take_handout, device_id, client_id)
            if token is not None:
                ws["token"] = token  # once: later calls leave the device's saved token alone
                log.info("OTA handed device %r its token", device_id)
            return web.json_response(reply)
        if not self.cfg.pairing:
            self.metrics.inc("pocketgpt_refusals_total", code="unknown_device")
            log.info("OTA refused for unregistered device %r", device_id)
            return _api_error(403, "unknown_device", "this device is not registered with the relay "
                              "('pocketgpt token add DEVICE_ID' registers it)")
        try:
            pending = await loop.run_in_executor(None, self.pairing.code_for, device_id, client_id)
        except PairingFull as exc:
            return _api_error(429, "rate_limited", str(exc), headers={"Retry-After": "60"})
        log.info("OTA: device %r is not paired; it was given a pairing code", device_id)
        reply["activation"] = pending.activation(time.time())
        return web.json_response(reply)

    async def http_ota_activate(self, request: Any) -> Any:
        """A stock XiaoZhi device polls this while it shows its code: 202 until paired, then 200."""
        from aiohttp import web

        device_id = request.headers.get("Device-Id")
        if device_id is not None and not DEVICE_ID_RE.match(device_id):
            return _api_error(400, "bad_device_id", "Device-Id must be 1-64 letters, digits, ':', '.', '_' or '-'")
        limited = self._ota_limited(f"addr:{request.remote}") or (self._ota_limited(f"id:{device_id}") if device_id else None)
        if limited is not None:
            return limited
        if self.cfg.open:
            return web.json_response({"status": "activated"})
        loop = asyncio.get_running_loop()
        if device_id and await loop.run_in_executor(None, self.store.entry, device_id) is not None:
            return web.json_response({"status": "activated"})
        if device_id and self.cfg.pairing and await loop.run_in_executor(None, self.pairing.waiting, device_id):
            return web.json_response({"status": "waiting", "message": "waiting for 'pocketgpt token pair CODE'"},
                                     status=202)
        return _api_error(403, "unknown_device", "this device has no pairing code; call the OTA URL first")

    async def http_models(self, request: Any) -> Any:
        from aiohttp import web

        device = self._http_device(request)
        if not isinstance(device, str):
            return device
        return web.json_response({"object": "list", "data": [
            {"id": self.backend.model_id, "object": "model", "created": 0, "owned_by": "pocketgpt"}]})

    async def _api_request(self, request: Any) -> tuple[str, dict[str, Any]] | Any:
        if self.draining:
            return _api_error(503, "shutting_down", "the relay is shutting down; retry against another relay")
        device = self._http_device(request)
        if not isinstance(device, str):
            return device
        body = await _json_body(request, "the request body must be a JSON object", self.cfg.http_body_timeout)
        if not isinstance(body, dict):
            return body
        return device, body

    def _gen_request(self, body: dict[str, Any], prompt: str, default_max: int = 16) -> GenRequest | Any:
        cfg = self.cfg
        if len(prompt) > cfg.max_prompt_chars:
            return _api_error(400, "prompt_too_long",
                              f"prompt is {len(prompt)} characters; this relay takes at most {cfg.max_prompt_chars}")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens", default_max))
        if max_tokens is None:
            max_tokens = default_max
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            return _api_error(400, "bad_message", f"max_tokens must be a positive integer, got {max_tokens!r}")
        if max_tokens > cfg.max_tokens_cap:
            return _api_error(400, "bad_message", f"max_tokens {max_tokens} exceeds this relay's cap of {cfg.max_tokens_cap}")
        if body.get("n", 1) != 1:
            return _api_error(400, "bad_message", "this relay generates one choice per request (n=1)")
        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
            return _api_error(400, "bad_message", "stop must be a string or up to 4 strings")
        nums: dict[str, float] = {}
        for key, lo, hi, default in (("temperature", 0.0, 5.0, 0.8), ("top_p", 0.0, 1.0, 0.95)):
            v = body.get(key, default)
            v = default if v is None else v
            problem = check_number(v, key, lo, hi)
            if problem:
                return _api_error(400, "bad_message", problem)
            nums[key] = float(v)
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            return _api_error(400, "bad_message", f"seed must be an integer, got {seed!r}")
        top_k = body.get("top_k", 40)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            return _api_error(400, "bad_message", f"top_k must be a non-negative integer, got {top_k!r}")
        return GenRequest(prompt=prompt, max_tokens=max_tokens, temperature=nums["temperature"],
                          top_p=nums["top_p"] or 1.0, top_k=top_k, seed=seed, greedy=nums["temperature"] == 0.0,
                          stop=tuple(stop))

    async def http_completions(self, request: Any) -> Any:
        got = await self._api_request(request)
        if not isinstance(got, tuple):
            return got
        device, body = got
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            return _api_error(400, "bad_message", "prompt must be a non-empty string")
        if body.get("echo"):
            return _api_error(400, "bad_message", "echo is not supported")
        req = self._gen_request(body, prompt)
        if not isinstance(req, GenRequest):
            return req
        return await self._serve_api(request, device, body, req, chat=False)

    async def http_chat(self, request: Any) -> Any:
        got = await self._api_request(request)
        if not isinstance(got, tuple):
            return got
        device, body = got
        messages = chat_messages(body.get("messages"))
        if messages is None:
            return _api_error(400, "bad_message", "messages must be a non-empty list of {role, content} objects "
                              "with roles system, user or assistant")
        prompt = "\n".join(c for _, c in messages)  # for the length limit and the log
        req = self._gen_request(body, prompt, default_max=self.cfg.default_max_tokens)
        if not isinstance(req, GenRequest):
            return req
        req = dataclasses.replace(req, messages=messages)
        return await self._serve_api(request, device, body, req, chat=True)

    async def _serve_api(self, request: Any, device: str, body: dict[str, Any], req: GenRequest, chat: bool) -> Any:
        from aiohttp import web

        wait = self.limiter.allow(device)
        if wait:
            self.metrics.inc("pocketgpt_refusals_total", code="rate_limited")
            return _api_error(429, "rate_limited", f"too many requests from this device; retry in {wait:.1f} s",
                              headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        self.log_request(device, "chat" if chat else "completion", req.prompt)
        try:
            gen = await self.start_generation(req, device)
        except BackendError as exc:
            return _api_error(exc.status, exc.code, exc.message)
        cid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = self.backend.model_id
        if not body.get("stream"):
            parts: list[str] = []
            try:
                async for piece in gen:
                    parts.append(piece)
            except BackendError as exc:
                return _api_error(exc.status, exc.code, exc.message)
            finally:
                if not gen.finished:
                    gen.abort()
            st = gen.stats
            usage = {"prompt_tokens": st.prompt_tokens, "completion_tokens": st.tokens,
                     "total_tokens": st.prompt_tokens + st.tokens}
            text = "".join(parts)
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text},
                          "finish_reason": st.finish_reason}
                return web.json_response({"id": cid, "object": "chat.completion", "created": created,
                                          "model": model, "choices": [choice], "usage": usage})
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": st.finish_reason}
            return web.json_response({"id": cid, "object": "text_completion", "created": created,
                                      "model": model, "choices": [choice], "usage": usage})

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text: str | None, finish: str | None, first: bool = False) -> bytes:
            if chat:
                delta: dict[str, Any] = {}
                if first:
                    delta["role"] = "assistant"
                if text is not None:
                    delta["content"] = text
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"text": text or "", "index": 0, "logprobs": None, "finish_reason": finish}
            data = {"id": cid, "object": obj, "created": created, "model": model, "choices": [choice]}
            return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"

        try:
            if chat:
                await resp.write(chunk("", None, first=True))
            async for piece in gen:
                await resp.write(chunk(piece, None))
            st = gen.stats
            await resp.write(chunk(None if chat else "", st.finish_reason))
            opts = body.get("stream_options")
            if isinstance(opts, dict) and opts.get("include_usage"):
                usage = {"prompt_tokens": st.prompt_tokens, "completion_tokens": st.tokens,
                         "total_tokens": st.prompt_tokens + st.tokens}
                data = {"id": cid, "object": obj, "created": created, "model": model, "choices": [], "usage": usage}
                await resp.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        except BackendError as exc:
            err = {"error": {"message": exc.message, "type": "server_error", "code": exc.code, "param": None}}
            await resp.write(b"data: " + json.dumps(err).encode() + b"\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            gen.abort()  # the client went away: stop generating for nobody
            raise
        finally:
            if not gen.finished:
                gen.abort()
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


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


def chat_messages(messages: Any) -> tuple[tuple[str, str], ...] | None:
    """OpenAI chat messages as (role, text) pairs for the model's chat template (None: malformed).
    A developer message counts as system; content parts keep their text parts."""
    if not isinstance(messages, list) or not messages:
        return None
    out: list[tuple[str, str]] = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            return None
        content = m.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            texts = [t for t in parts if isinstance(t, str)]
            if len(texts) != len(parts):
                return None
            content = "".join(texts)
        if not isinstance(content, str):
            return None
        role = "system" if m["role"] == "developer" else m["role"]
        if role not in ("system", "user", "assistant"):
            return None
        out.append((role, content))
    return tuple(out)


def _api_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Any:
    """OpenAI's error shape, so OpenAI clients raise a typed error with our message."""
    from aiohttp import web

    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 408: "invalid_request_error", 413: "invalid_request_error",
            429: "rate_limit_error"}.get(status, "server_error")
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": code}},
                             status=status, headers=headers)


async def _json_body(request: Any, what: str, timeout: float) -> Any:
    """The request's JSON body, or a 400 for anything that is not one: bad JSON, an unknown
    charset, bytes that do not decode, nesting too deep for the parser; a 408 for a body that
    does not arrive within `timeout` seconds (a slow client holds no handler for long)."""
    try:
        await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:
        return _api_error(408, "timeout", f"the request body did not arrive within {timeout:g} s")
    try:
        body = await request.json()  # parses the body read above
    except (ValueError, UnicodeDecodeError, LookupError, RecursionError):
        return _api_error(400, "bad_json", what)
    if not isinstance(body, dict):
        return _api_error(400, "bad_json", what)
    return body


async def _close_after_response(request: Any, response: Any) -> None:
    """Connection: close once a request was read whole, so each request has its own head
    deadline (httpguard) instead of a keep-alive connection a slow client can hold. An answer
    given before the body was read (401, 413, 429) keeps the connection, so the client can finish
    sending and read it; aiohttp's short keep-alive timeout and the connection cap bound those."""
    if not request.body_exists or request.content.at_eof():
        response.force_close()
        response.headers["Connection"] = "close"  # aiohttp closes without saying so; clients must know
