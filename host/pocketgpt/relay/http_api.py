"""The relay's HTTP listener: XiaoZhi's OTA call, health, metrics and the OpenAI API.

POST /xiaozhi/ota/ (the websocket URL, an activation code or a token once), POST
/xiaozhi/ota/activate, GET /healthz, GET /metrics, GET /v1/models, POST /v1/completions and
POST /v1/chat/completions. The routes are methods of `HttpApi`, which `server.Relay` mixes in:
they read the relay's state (config, token store, limits, metrics, backend) and start
generations through `Relay.start_generation`, like a websocket session does. Credentials are
checked before a body is read: a request without a valid token gets 401 before its prompt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from pocketgpt.relay import protocol as P
from pocketgpt.relay.auth import DEVICE_ID_RE, bearer
from pocketgpt.relay.backends import BackendError, GenRequest
from pocketgpt.relay.limits import check_number
from pocketgpt.relay.pairing import PairingFull

if TYPE_CHECKING:
    from pocketgpt.relay.auth import TokenStore
    from pocketgpt.relay.backends import Backend, Generation
    from pocketgpt.relay.limits import RateLimiter
    from pocketgpt.relay.metrics import Metrics
    from pocketgpt.relay.pairing import PairingBook
    from pocketgpt.relay.server import RelayConfig
    from pocketgpt.relay.session import WsSession

log = logging.getLogger("pocketgpt.relay")

_HOST_RE = re.compile(r"^[A-Za-z0-9.:\[\]-]{1,253}$")


class HttpApi:
    """The HTTP routes, mixed into `server.Relay`, which owns the state named below."""

    cfg: RelayConfig
    backend: Backend
    store: TokenStore
    pairing: PairingBook
    limiter: RateLimiter
    ota_limiter: RateLimiter
    metrics: Metrics
    sessions: set[WsSession]
    active: dict[Generation, str | None]
    draining: bool
    ws_port: int | None

    if TYPE_CHECKING:  # defined by Relay
        @property
        def scheme(self) -> tuple[str, str]: ...

        async def start_generation(self, req: GenRequest, device: str = "") -> Generation: ...

        def log_request(self, device_id: str, kind: str, prompt: str) -> None: ...

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

    def _ota_device_gate(self, device_id: str | None) -> Any:
        """The OTA calls' check of a device id (absent, or well formed and under its rate): None
        to go on, else the refusal. The source address was limited before (and the body read)."""
        if device_id is not None and not DEVICE_ID_RE.match(device_id):
            self.metrics.inc("pocketgpt_refusals_total", code="bad_device_id")
            return _api_error(400, "bad_device_id", "Device-Id must be 1-64 letters, digits, ':', '.', '_' or '-' "
                              "(a MAC address such as aa:bb:cc:dd:ee:ff)")
        return self._ota_limited(f"id:{device_id}") if device_id else None

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
        refused = self._ota_device_gate(device_id)
        if refused is not None:
            return refused
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
        refused = self._ota_limited(f"addr:{request.remote}") or self._ota_device_gate(device_id)
        if refused is not None:
            return refused
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
            return _api_error(400, "prompt_too_long", f"prompt is {len(prompt)} characters; this relay takes at most "
                              f"{cfg.max_prompt_chars}: shorten it")
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

