"""The relay's resource limits and hygiene against a hostile client, over real sockets (127.0.0.1).

Caps on live generations (global and per device) and on sessions per device; a client that
leaves a non-streaming request stops its generation; slow clients (slowloris: half a request
head, a body that never comes) and connection floods on the HTTP port; unauthenticated bodies
that used to raise (deep JSON, an unknown charset, a non-text content part) answer 400; device
ids cannot forge log lines; a second SIGTERM stops at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from pocketgpt.relay.auth import TokenStore
from pocketgpt.relay.backends import EngineBackend
from pocketgpt.relay.client import RelayClient
from pocketgpt.relay.server import RelayConfig, exposure_warnings
from support import RelayThread, engine_kind, readline_within, run, serve_completions

pytestmark = pytest.mark.relay

DEVS = [f"ee:00:00:00:00:0{i}" for i in range(4)]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("relay-limits-home")
    store = TokenStore(path)
    return path, {d: store.add(d, handout=None) for d in DEVS}


class SlowEngine:
    """The real engine, each step 5 ms slower: a long generation outlasts a client's patience
    (a stand-in for a big model on a busy machine)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def step(self, streams: list[Any]) -> list[Any]:
        time.sleep(0.005)
        return self._engine.step(streams)


def test_a_client_leaving_a_non_streaming_request_stops_its_generation(engine: Any, home: Any) -> None:
    if engine_kind() != "engine":
        pytest.skip("batched decode needs the C engine")
    backend = EngineBackend(SlowEngine(engine), "tiny")
    rt = RelayThread(backend, home=home[0], max_tokens_cap=900)
    try:
        async def go() -> None:
            r, w = await asyncio.open_connection("127.0.0.1", rt.relay.http_port)
            body = json.dumps({"prompt": "Once upon a time", "max_tokens": 900, "temperature": 0}).encode()
            w.write(b"POST /v1/completions HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
                    b"Authorization: Bearer " + home[1][DEVS[0]].encode() +
                    b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            await w.drain()
            while backend.scheduler.batched_tokens < 5:  # generating
                await asyncio.sleep(0.02)
            w.close()  # the client gives up
            while rt.relay.active:  # until the relay counts the generation as ended
                await asyncio.sleep(0.05)
        run(go(), 90)
        assert backend.scheduler.batched_tokens < 600, backend.scheduler.batched_tokens
    finally:
        rt.stop()


def test_generation_caps_global_and_per_device(engine: Any, home: Any) -> None:
    import aiohttp

    rt = RelayThread(EngineBackend(SlowEngine(engine), "tiny"), home=home[0], max_tokens_cap=900,
                     max_generations=2, max_requests_per_device=1)
    try:
        async def api(dev: str) -> tuple[int, str]:
            async with aiohttp.ClientSession() as s:
                async with s.post(rt.http_url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2},
                                  headers={"Authorization": f"Bearer {home[1][dev]}"}) as r:
                    return r.status, (await r.json()).get("error", {}).get("code", "")

        async def go() -> None:
            async with RelayClient(rt.ws_url, token=home[1][DEVS[0]], device_id=DEVS[0]) as a, \
                    RelayClient(rt.ws_url, token=home[1][DEVS[1]], device_id=DEVS[1]) as b:
                stream_a = a.stream("Once upon a time", max_tokens=900, greedy=True, raw=True)
                assert (await stream_a.__anext__())[0] == "delta"
                assert await api(DEVS[0]) == (429, "busy")          # one at a time for this device
                stream_b = b.stream("Once upon a time", max_tokens=900, greedy=True, raw=True)
                assert (await stream_b.__anext__())[0] == "delta"
                assert await api(DEVS[2]) == (503, "overloaded")    # the relay is full
                for c in (a, b):
                    await c.ws.send(json.dumps({"type": "abort"}))
                async for _ in stream_a:
                    pass
                async for _ in stream_b:
                    pass
            for _ in range(100):
                status, _code = await api(DEVS[2])
                if status == 200:
                    break
                await asyncio.sleep(0.05)  # the aborted generations leave at the next step
            assert status == 200
        run(go(), 90)
    finally:
        rt.stop()


def test_one_device_cannot_take_every_session(engine: Any, home: Any) -> None:
    rt = RelayThread(EngineBackend(engine, "tiny"), home=home[0], max_sessions=10, max_sessions_per_device=2)
    try:
        async def go() -> None:
            headers = {"Authorization": f"Bearer {home[1][DEVS[0]]}", "Device-Id": DEVS[0]}
            held = [await connect(rt.ws_url, additional_headers=headers) for _ in range(2)]
            with pytest.raises(InvalidStatus) as refused:
                await connect(rt.ws_url, additional_headers=headers)
            assert refused.value.response.status_code == 429
            async with RelayClient(rt.ws_url, token=home[1][DEVS[1]], device_id=DEVS[1]) as other:
                assert other.hello["type"] == "hello"
            for ws in held:
                await ws.close()
        run(go(), 90)
    finally:
        rt.stop()


def _closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing, or None if it kept the connection open that long."""
    sock.settimeout(seconds)
    got = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return got
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        return got
    except TimeoutError:
        return None


def test_slow_clients_and_connection_floods_on_the_http_port(engine: Any, home: Any) -> None:
    rt = RelayThread(EngineBackend(engine, "tiny"), home=home[0], http_header_timeout=1.0, http_body_timeout=1.0,
                     http_max_connections=3)
    port = rt.relay.http_port
    try:
        # half a request head: dropped at the head deadline (the wait is a bound, not a measurement)
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /xiaozhi/ota/ HTTP/1.1\r\nHost: relay\r\nDevice-Id: ee:00")
        assert _closed_within(slow, 20) == b""
        slow.close()
        # a body that never comes: 408, then closed
        body = socket.create_connection(("127.0.0.1", port))
        body.sendall(b"POST /xiaozhi/ota/ HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"app")
        answer = _closed_within(body, 20)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
        body.close()
        # more connections than the cap: the extra one is closed at once, the others are served
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        time.sleep(0.2)  # let the relay accept them (ordering, not a measured duration)
        extra = socket.create_connection(("127.0.0.1", port))
        assert _closed_within(extra, 10) == b""
        for s in held + [extra]:
            s.close()
        ok = socket.create_connection(("127.0.0.1", port))
        ok.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        reply = _closed_within(ok, 20)
        assert reply is not None and reply.startswith(b"HTTP/1.1 200"), reply
        ok.close()
    finally:
        rt.stop()


def test_bodies_that_used_to_raise_are_400s_without_tracebacks(engine: Any, home: Any,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    import aiohttp

    rt = RelayThread(EngineBackend(engine, "tiny"), home=home[0], max_message_bytes=256 * 1024)
    try:
        auth = {"Authorization": f"Bearer {home[1][DEVS[0]]}"}
        cases = [
            ("/xiaozhi/ota/", {"Device-Id": DEVS[3], "Content-Type": "application/json"}, b"[" * 60000 + b"]" * 60000),
            ("/xiaozhi/ota/", {"Device-Id": DEVS[3], "Content-Type": "application/json; charset=no-such-charset"},
             b'{"application": {}}'),
            ("/v1/completions", {**auth, "Content-Type": "application/json"}, b"[" * 60000 + b"]" * 60000),
            ("/v1/chat/completions", {**auth, "Content-Type": "application/json"},
             json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}).encode()),
        ]

        async def go() -> list[tuple[int, str]]:
            out = []
            async with aiohttp.ClientSession() as s:
                for path, headers, data in cases:
                    async with s.post(rt.http_url + path, data=data, headers=headers) as r:
                        out.append((r.status, (await r.json())["error"]["code"]))
            return out
        with caplog.at_level(logging.INFO, logger="pocketgpt.relay"):
            got = run(go(), 90)
        assert [status for status, _ in got] == [400, 400, 400, 400], got
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    finally:
        rt.stop()


def test_device_ids_cannot_forge_log_lines(engine: Any, home: Any, caplog: pytest.LogCaptureFixture) -> None:
    rt = RelayThread(EngineBackend(engine, "tiny"), home=home[0], open=True)
    try:
        async def go() -> int:
            url = rt.ws_url + "?device-id=x%0A2026-01-01%20INFO%20pocketgpt.relay:%20forged"
            with pytest.raises(InvalidStatus) as refused:
                await connect(url)
            return refused.value.response.status_code
        with caplog.at_level(logging.INFO, logger="pocketgpt.relay"):
            assert run(go(), 90) == 400
        assert not [r for r in caplog.records if "\n" in r.getMessage()], caplog.text
    finally:
        rt.stop()


def test_start_warns_when_listening_beyond_loopback_without_public_url_or_tls() -> None:
    assert exposure_warnings(RelayConfig(host="127.0.0.1")) == []
    warned = exposure_warnings(RelayConfig(host="0.0.0.0"))
    assert len(warned) == 2 and "--public-url" in warned[0] and "TLS" in warned[1]
    assert exposure_warnings(RelayConfig(host="0.0.0.0", public_url="wss://relay.example/xiaozhi/v1/",
                                         cert="c.pem", key="k.pem")) == []


def test_a_second_sigterm_stops_at_once(tmp_path: Path) -> None:
    """The first SIGTERM drains (a reply from a slow backend would keep it waiting for the whole
    --drain-timeout); the second exits now."""
    from aiohttp import web


    async def go() -> int:
        async def endless(request: Any) -> Any:  # an OpenAI backend that streams forever
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            while True:
                await resp.write(b'data: {"choices":[{"text":"a","index":0}]}\n\n')
                await asyncio.sleep(0.2)

        runner, backend = await serve_completions(endless)
        proc = subprocess.Popen([sys.executable, "-m", "pocketgpt", "serve", "--backend", "openai", "--url", backend,
                                 "--open", "--port", "0", "--http-port", "0", "--home", str(tmp_path),
                                 "--drain-timeout", "600"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        loop = asyncio.get_running_loop()
        try:
            line = await loop.run_in_executor(None, readline_within, proc, 60.0)
            assert "ready" in line, line
            ws_port = int(line.split("ws_port=")[1].split()[0])
            async with RelayClient(f"ws://127.0.0.1:{ws_port}/xiaozhi/v1/") as c:
                await c.ws.send(json.dumps({"type": "pg.generate", "id": "t", "prompt": "x", "max_tokens": 500, "raw": True}))
                assert (await c.recv())["type"] == "pg.delta"
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
                assert proc.poll() is None  # draining: the reply may finish
                proc.send_signal(signal.SIGTERM)
                return await loop.run_in_executor(None, proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
            await runner.cleanup()
    assert run(go(), 90) != 0
