"""No device can hurt another: bad requests, engine faults and broken backends end one request.

Each test runs a real relay on 127.0.0.1 (port 0) with the tiny real GPT-2 and real clients. A
request that the engine cannot take (a huge top_k, an overlong or unencodable stop string) is
refused with an error for that request alone; an engine that raises (in a batched step, in one
request's prefill) ends exactly the requests it touched, each with an error message; after every
fault /healthz counts no live generation and the next request succeeds.

The faults are injected by wrapping the real engine (`FaultyEngine`): the hardware-free way to
make a working engine fail at a chosen moment.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from pocketgpt.relay.auth import TokenStore
from pocketgpt.relay.backends import EngineBackend, OpenAIBackend
from pocketgpt.relay.client import RelayClient
from support import RelayThread, engine_kind, run, serve_completions

DEV = "aa:bb:cc:00:00:0a"      # the one sending bad requests
VICTIM = "aa:bb:cc:00:00:0b"   # another device, generating at the same time
LONG = dict(max_tokens=900, greedy=True, raw=True)  # continuations: they run to their length

pytestmark = [pytest.mark.relay,
              pytest.mark.skipif(engine_kind() != "engine", reason="batched decode needs the C engine (pip install -e .)")]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("relay-faults-home")
    store = TokenStore(path)
    return path, {DEV: store.add(DEV), VICTIM: store.add(VICTIM)}


class FaultyEngine:
    """The real engine, with faults switched on by a test: the next batched step of two or more
    streams raising, or the prefill of a prompt containing FAULT raising."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.fail_step = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def step(self, streams: list[Any]) -> list[Any]:
        for st in streams:
            if st.needs_prefill and getattr(st, "_fault", False):
                raise RuntimeError("injected fault in prefill")
        if self.fail_step.is_set() and len(streams) >= 2 and not any(st.needs_prefill for st in streams):
            self.fail_step.clear()
            raise RuntimeError("injected fault in a batched step")
        return self._engine.step(streams)

    def session(self) -> Any:
        sess = self._engine.session()
        real_stream = sess.stream

        def stream(prompt: Any, **kw: Any) -> Any:
            st = real_stream(prompt, **kw)
            st._fault = "FAULT" in self._engine.detokenize(list(prompt)) if not isinstance(prompt, str) else "FAULT" in prompt
            return st
        sess.stream = stream
        return sess


@pytest.fixture(scope="module")
def faulty(engine: Any) -> FaultyEngine:
    return FaultyEngine(engine)


@pytest.fixture(scope="module")
def relay(faulty: FaultyEngine, home: tuple[Path, dict[str, str]]) -> Any:
    rt = RelayThread(EngineBackend(faulty, "tiny"), home=home[0], max_tokens_cap=1000, rate_per_minute=60000,
                     rate_burst=10000)
    yield rt
    rt.stop()


def client(rt: RelayThread, home: tuple[Path, dict[str, str]], dev: str) -> RelayClient:
    return RelayClient(rt.ws_url, token=home[1][dev], device_id=dev)


async def healthz(rt: RelayThread) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.get(rt.http_url + "/healthz") as r:
            return await r.json()


async def settled(rt: RelayThread) -> dict[str, Any]:
    """/healthz once the relay has seen every consumer finish (a reply's last message goes out
    just before its generation is counted out)."""
    for _ in range(200):
        h = await healthz(rt)
        if h["generations"] == 0:
            return h
        await asyncio.sleep(0.05)
    return h


async def started(c: RelayClient, prompt: str, **params: Any) -> tuple[Any, asyncio.Task[Any]]:
    """Start a long generation and wait until its first piece arrived (it is in the batch)."""
    agen = c.stream(prompt, **params)
    kind, first = await agen.__anext__()
    assert kind == "delta", first

    async def rest() -> list[tuple[str, dict[str, Any]]]:
        return [item async for item in agen]
    return first, asyncio.create_task(rest())


BAD_REQUESTS = [
    pytest.param({"top_k": 2**31}, id="top_k-2^31"),
    pytest.param({"top_k": 1e300}, id="top_k-1e300"),
    pytest.param({"seed": 1e300}, id="seed-1e300"),
    pytest.param({"stop": ["x" * 256]}, id="stop-256-bytes"),
    pytest.param({"stop": ["\ud800"]}, id="stop-lone-surrogate"),
]


@pytest.mark.parametrize("bad", BAD_REQUESTS)
def test_a_bad_websocket_request_is_refused_and_another_device_finishes(relay: RelayThread, home: Any,
                                                                         bad: dict[str, Any]) -> None:
    async def go() -> None:
        async with client(relay, home, VICTIM) as victim, client(relay, home, DEV) as attacker:
            _, rest = await started(victim, "Once upon a time", **LONG)
            reply = await attacker.generate("Hello there", max_tokens=20, **bad)
            assert reply.error is not None and reply.error["code"] == "bad_message", reply
            assert "\n" not in reply.error["message"]
            items = await rest
            assert items[-1][0] == "done", items[-1]
            assert items[-1][1]["reason"] in ("length", "stop")
            again = await attacker.generate("Hello there", max_tokens=5, greedy=True)
            assert again.error is None and again.reason in ("length", "stop")
        assert (await settled(relay))["generations"] == 0
    run(go(), 90)


@pytest.mark.parametrize("bad", [b for b in BAD_REQUESTS if "1e300" not in b.id] + [
    pytest.param({"top_k": -1}, id="top_k-negative"), pytest.param({"seed": 2**64}, id="seed-2^64")])
def test_a_bad_http_request_is_400_and_another_device_finishes(relay: RelayThread, home: Any, bad: dict[str, Any]) -> None:
    import aiohttp

    async def go() -> None:
        async with client(relay, home, VICTIM) as victim:
            _, rest = await started(victim, "Once upon a time", **LONG)
            auth = {"Authorization": f"Bearer {home[1][DEV]}"}
            async with aiohttp.ClientSession() as s:
                for path, body in (("/v1/completions", {"prompt": "Hello", "max_tokens": 20}),
                                   ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                             "max_tokens": 20, "stream": True})):
                    async with s.post(relay.http_url + path, data=json.dumps({**body, **bad}), headers=auth) as r:
                        err = await r.json()
                        assert r.status == 400 and err["error"]["code"] == "bad_message", err
            items = await rest
            assert items[-1][0] == "done" and items[-1][1]["reason"] in ("length", "stop")
        assert (await settled(relay))["generations"] == 0
    run(go(), 90)


def test_an_engine_failure_in_a_step_ends_each_of_its_requests_with_an_error(relay: RelayThread, home: Any,
                                                                              faulty: FaultyEngine) -> None:
    async def go() -> None:
        async with client(relay, home, VICTIM) as a, client(relay, home, DEV) as b:
            faulty.fail_step.set()  # strikes the first step that decodes both together
            _, rest_a = await started(a, "Once upon a time", **LONG)
            _, rest_b = await started(b, "The weather today", **LONG)
            for items in (await rest_a, await rest_b):
                assert items[-1][0] == "error" and items[-1][1]["code"] == "backend_error", items[-1]
            assert (await settled(relay))["generations"] == 0
            reply = await a.generate("Once upon a time", max_tokens=8, greedy=True)
            assert reply.error is None and reply.reason in ("length", "stop")
        assert (await settled(relay))["generations"] == 0
    run(go(), 90)


def test_an_engine_failure_in_one_prefill_ends_that_request_alone(relay: RelayThread, home: Any) -> None:
    import aiohttp

    async def go() -> None:
        async with client(relay, home, VICTIM) as victim, client(relay, home, DEV) as attacker:
            _, rest = await started(victim, "Once upon a time", **LONG)
            reply = await attacker.generate("FAULT here", max_tokens=8)
            assert reply.error is not None and reply.error["code"] == "backend_error"
            async with aiohttp.ClientSession() as s:
                async with s.post(relay.http_url + "/v1/completions", json={"prompt": "FAULT", "max_tokens": 4},
                                  headers={"Authorization": f"Bearer {home[1][DEV]}"}) as r:
                    assert r.status == 502 and (await r.json())["error"]["code"] == "backend_error"
            items = await rest
            assert items[-1][0] == "done" and items[-1][1]["reason"] in ("length", "stop")
        assert (await settled(relay))["generations"] == 0
    run(go(), 90)


# ---- an OpenAI-compatible backend that misbehaves -----------------------------------------------

async def fake_backend(chunks: list[bytes], die: bool) -> tuple[Any, str]:
    """An OpenAI-style /v1/completions on 127.0.0.1 that streams `chunks`, then either ends the
    stream properly or drops the connection (a backend that died mid-stream)."""
    from aiohttp import web

    async def completions(request: Any) -> Any:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for c in chunks:
            await resp.write(c)
        if die:
            request.transport.close()
            return resp
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    return await serve_completions(completions)


GOOD = b'data: {"choices":[{"text":"Hi","index":0,"finish_reason":null}]}\n\n'


@pytest.mark.parametrize("chunks,die", [
    pytest.param([GOOD], True, id="dies-mid-stream"),
    pytest.param([GOOD, b"data: []\n\n"], False, id="chunk-is-a-list"),
    pytest.param([GOOD, b'data: {"choices":["x"]}\n\n'], False, id="choice-is-a-string"),
    pytest.param([GOOD, b'data: {"choices":[{"text":5}]}\n\n'], False, id="text-is-a-number"),
    pytest.param([GOOD, b'data: {"choices":[{"text":"a"}],"usage":{"prompt_tokens":"x"}}\n\n'], False,
                 id="usage-not-a-number"),
])
def test_a_broken_openai_backend_ends_the_request_with_an_error(chunks: list[bytes], die: bool) -> None:
    async def go() -> None:
        runner, url = await fake_backend(chunks, die)
        front = RelayThread(OpenAIBackend(url, "fake"), open=True)
        try:
            async with RelayClient(front.ws_url) as c:
                reply = await c.generate("Hello", max_tokens=8, raw=True)  # a continuation: the backend's own pieces
                assert reply.error is not None and reply.error["code"] == "backend_error", reply
                assert reply.text == "Hi"
            assert (await settled(front))["generations"] == 0
        finally:
            await asyncio.get_running_loop().run_in_executor(None, front.stop)
            await runner.cleanup()
    run(go(), 90)


# ---- clients and disks that fail ---------------------------------------------------------------

def test_a_client_vanishing_mid_reply_frees_its_generation(relay: RelayThread, home: Any) -> None:
    from websockets.asyncio.client import connect

    async def go() -> None:
        headers = {"Authorization": f"Bearer {home[1][DEV]}", "Device-Id": DEV}
        ws = await connect(relay.ws_url, additional_headers=headers)
        await ws.send(json.dumps({"type": "hello", "version": 1, "features": {"pocketgpt": 1}}))
        await ws.recv()
        await ws.send(json.dumps({"type": "pg.generate", "id": "gone", "prompt": "Once upon a time", **LONG}))
        assert json.loads(await ws.recv())["type"] == "pg.delta"
        ws.transport.abort()  # no close frame: the device lost power
        assert (await settled(relay))["generations"] == 0
        async with client(relay, home, DEV) as c:
            reply = await c.generate("Hello", max_tokens=4, greedy=True)
            assert reply.error is None and reply.reason in ("length", "stop")
    run(go(), 90)


def test_a_full_disk_while_writing_devices_json_changes_nothing(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from pocketgpt.errors import PocketError

    store = TokenStore(tmp_path)
    old_token = store.add("ff:00:00:00:00:01")
    before = (tmp_path / "devices.json").read_bytes()
    real = Path.write_text

    def full(self: Path, *a: Any, **kw: Any) -> int:
        if self.name.startswith(".devices.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(PocketError) as err:
        store.add("ff:00:00:00:00:02")
    assert "No space left on device" in str(err.value) and "\n" not in str(err.value)
    assert (tmp_path / "devices.json").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert store.entry("ff:00:00:00:00:02") is None and store.verify(old_token) == "ff:00:00:00:00:01"
    monkeypatch.setattr(Path, "write_text", real)
    assert store.verify(store.add("ff:00:00:00:00:02")) == "ff:00:00:00:00:02"


WRITER = """
import sys
from pocketgpt.relay.auth import TokenStore
store = TokenStore(sys.argv[1])
i = 0
while True:
    i += 1
    dev = f"k{sys.argv[2]}-{i}"
    store.add(dev)
    store.revoke(dev) if i % 3 == 0 else None
"""


def test_kill_9_during_token_writes_leaves_the_old_or_the_new_file(tmp_path: Path) -> None:
    import random
    import signal
    import subprocess
    import sys
    import time

    TokenStore(tmp_path).add("ff:00:00:00:00:0a")
    rng = random.Random(18)
    most = 0
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(round_)])
        time.sleep(0.3 + rng.random() * 0.7)  # somewhere in the middle of its writes (not a measurement)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        doc = json.loads((tmp_path / "devices.json").read_text(encoding="utf-8"))  # never torn
        store = TokenStore(tmp_path)
        assert "ff:00:00:00:00:0a" in doc["devices"]
        most = max(most, len(doc["devices"]))
        for entry in store.devices():
            assert store.verify(store.token_for(entry.device_id)) == entry.device_id
    assert most > 1  # the writers did write before they were killed
