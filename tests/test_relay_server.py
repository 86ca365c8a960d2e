"""The relay over real sockets: XiaoZhi conformance, the text extension, auth, limits, abuse.

One relay (both listeners, port 0) serves most tests; tests needing other limits start their
own on fresh ports. Clients are the real websockets and aiohttp/openai libraries.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from pocketgpt.relay.auth import TokenStore
from pocketgpt.relay.backends import EngineBackend
from pocketgpt.relay.client import RelayClient
from support import RelayThread, chat_reference, reference, run

pytestmark = pytest.mark.relay

DEV = "aa:bb:cc:00:00:01"
DEV2 = "aa:bb:cc:00:00:02"
STOCK_HELLO = {"type": "hello", "version": 1, "features": {"mcp": True}, "transport": "websocket",
               "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60}}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("relay-home")
    store = TokenStore(path)
    return path, {DEV: store.add(DEV), DEV2: store.add(DEV2)}


@pytest.fixture(scope="module")
def relay(engine: Any, home: tuple[Path, dict[str, str]]) -> Any:
    rt = RelayThread(EngineBackend(engine, "tiny", workers=2), home=home[0], max_tokens_cap=900,
                     rate_per_minute=6000, rate_burst=1000, max_sessions=48, max_message_bytes=16 * 1024,
                     max_prompt_chars=2000, max_sessions_per_device=48, max_requests_per_device=48)
    yield rt
    rt.stop()


def client(rt: RelayThread, home: tuple[Path, dict[str, str]], dev: str = DEV, **kw: Any) -> RelayClient:
    return RelayClient(rt.ws_url, token=home[1][dev], device_id=dev, **kw)


async def raw(rt: RelayThread, token: str | None, device: str | None = DEV, **kw: Any) -> Any:
    headers = {"Protocol-Version": "1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if device:
        headers["Device-Id"] = device
    return await connect(rt.ws_url, additional_headers=headers, **kw)


async def recv_json(ws: Any, timeout: float = 30) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


# ---- XiaoZhi conformance ----------------------------------------------------------------------

def test_stock_hello_and_typed_text_turn(relay: RelayThread, home: Any) -> None:
    async def go() -> None:
        async with await raw(relay, home[1][DEV]) as ws:
            await ws.send(json.dumps(STOCK_HELLO))
            hello = await recv_json(ws)
            assert hello["type"] == "hello" and hello["transport"] == "websocket" and hello["session_id"]
            assert hello["audio_params"] == {"format": "opus", "sample_rate": 24000, "channels": 1, "frame_duration": 60}
            assert "features" not in hello and "pocketgpt" not in hello
            await ws.send(json.dumps({"session_id": "", "type": "listen", "state": "detect", "text": "Tell me about cats."}))
            msgs = []
            while not msgs or msgs[-1] != {"type": "tts", "state": "stop", "session_id": hello["session_id"]}:
                msgs.append(await recv_json(ws))
            assert msgs[0] == {"type": "stt", "text": "Tell me about cats.", "session_id": hello["session_id"]}
            assert msgs[1] == {"type": "tts", "state": "start", "session_id": hello["session_id"]}
            sentences = msgs[2:-1]
            assert sentences, "the reply carried no sentence"
            assert all(m["type"] == "tts" and m["state"] == "sentence_start" and m["text"].strip() for m in sentences)
            assert not any(m["type"] == "error" for m in msgs)
        async with await raw(relay, home[1][DEV]) as ws:   # every connection is a new session
            await ws.send(json.dumps(STOCK_HELLO))
            assert (await recv_json(ws))["session_id"] != hello["session_id"]
    run(go())


def test_listen_mcp_wake_word_and_abort_without_a_turn(relay: RelayThread, home: Any) -> None:
    async def go() -> None:
        async with await raw(relay, home[1][DEV]) as ws:
            await ws.send(json.dumps(STOCK_HELLO))
            sid = (await recv_json(ws))["session_id"]
            for msg in ({"type": "listen", "state": "start", "mode": "manual"}, {"type": "listen", "state": "stop"},
                        {"type": "listen", "state": "start", "mode": "realtime"},
                        {"type": "listen", "state": "detect", "text": "你好小智"},
                        {"type": "mcp", "payload": {"jsonrpc": "2.0", "id": 1, "result": {}}},
                        {"type": "iot", "update": True, "descriptors": [{"name": "Speaker"}]}):
                await ws.send(json.dumps({"session_id": sid, **msg}))
            await ws.send(json.dumps({"session_id": sid, "type": "abort"}))
            # none of the above asks for an answer; the abort is answered by tts stop, and nothing else came first
            assert await recv_json(ws) == {"type": "tts", "state": "stop", "session_id": sid}
    run(go())


def test_xiaozhi_abort_mid_reply_ends_with_tts_stop(relay: RelayThread, home: Any) -> None:
    async def go() -> None:
        async with await raw(relay, home[1][DEV]) as ws:
            await ws.send(json.dumps(STOCK_HELLO))
            sid = (await recv_json(ws))["session_id"]
            await ws.send(json.dumps({"type": "listen", "state": "detect", "text": "Go on and on"}))
            assert (await recv_json(ws))["type"] == "stt"
            assert (await recv_json(ws))["state"] == "start"
            await ws.send(json.dumps({"type": "abort", "reason": "wake_word_detected"}))
            rest = []
            while True:
                m = await recv_json(ws)
                rest.append(m)
                if m.get("state") == "stop":
                    break
            assert rest[-1] == {"type": "tts", "state": "stop", "session_id": sid}
            assert all(m["type"] == "tts" for m in rest)
            assert sum(m["state"] == "stop" for m in rest) == 1
    run(go())


# ---- the text extension -----------------------------------------------------------------------

def test_extension_hello_and_greedy_stream_matches_the_engine(relay: RelayThread, home: Any, engine: Any) -> None:
    want = reference(engine, "The quick brown fox", 40)

    async def go() -> None:
        async with client(relay, home) as c:
            assert c.hello["features"] == {"pocketgpt": 1}
            assert c.hello["pocketgpt"]["version"] == 1 and c.hello["pocketgpt"]["max_tokens"] == 900
            r = await c.generate("The quick brown fox", max_tokens=40, greedy=True, raw=True)
            assert r.error is None and r.reason in ("length", "stop")
            assert r.text == want
            assert r.prompt_tokens == len(engine.tokenize("The quick brown fox"))
            assert r.tokens == 40 or r.reason == "stop"
            # a second request on the same session works too
            r2 = await c.generate("Hello", max_tokens=5, greedy=True, id="second")
            assert r2.reason in ("length", "stop") and r2.tokens <= 5
    run(go())


def test_pg_generate_answers_in_the_models_chat_template_unless_raw(relay: RelayThread, home: Any, engine: Any) -> None:
    """The device's escalated request is a chat turn: the model's template, a reply with a word."""

    want, n_prompt = chat_reference(engine, [{"role": "user", "content": "What is love?"}], 24)

    async def go() -> None:
        async with client(relay, home) as c:
            r = await c.generate("  What is love? ", max_tokens=24, greedy=True)
            assert r.error is None and r.text == want and r.text.strip()
            assert r.prompt_tokens == n_prompt
            raw_reply = await c.generate("What is love?", max_tokens=24, greedy=True, raw=True)
            assert raw_reply.prompt_tokens == len(engine.tokenize("What is love?"))
            bad = await c.generate("x", raw="yes")
            assert bad.error is not None and "'raw' must be true or false" in bad.error["message"]
    run(go())


def test_abort_by_id_mid_generation(relay: RelayThread, home: Any) -> None:
    async def go() -> None:
        async with client(relay, home) as c:
            await c.ws.send(json.dumps({"type": "pg.generate", "id": "long", "prompt": "Once", "max_tokens": 900,
                                        "raw": True}))
            first = await c.recv()
            assert first["type"] == "pg.delta" and first["id"] == "long"
            await c.ws.send(json.dumps({"type": "abort", "id": "long"}))
            while True:
                m = await c.recv()
                if m["type"] == "pg.done":
                    break
                assert m["type"] == "pg.delta"
            assert m["id"] == "long" and m["reason"] == "abort" and m["tokens"] < 900
            # the session is free again at once
            r = await c.generate("Again", max_tokens=3, greedy=True)
            assert r.reason in ("length", "stop")
    run(go())


def test_busy_session_and_extension_errors(relay: RelayThread, home: Any) -> None:
    async def go() -> None:
        async with client(relay, home) as c:
            await c.ws.send(json.dumps({"type": "pg.generate", "id": "a", "prompt": "Once", "max_tokens": 900}))
            await c.ws.send(json.dumps({"type": "pg.generate", "id": "b", "prompt": "Twice"}))
            seen_busy = False
            while True:
                m = await c.recv()
                if m["type"] == "error":
                    assert m == {"type": "error", "code": "busy", "message": m["message"], "id": "b"}
                    seen_busy = True
                    await c.ws.send(json.dumps({"type": "abort"}))
                if m["type"] == "pg.done":
                    assert m["id"] == "a"
                    break
            assert seen_busy
            for bad, code in (({"type": "pg.generate", "id": "c", "prompt": "x", "max_tokens": 901}, "bad_message"),
                              ({"type": "pg.generate", "id": "d", "prompt": "x" * 2001}, "prompt_too_long"),
                              ({"type": "pg.generate", "id": "e", "prompt": "x", "top_p": 0}, "bad_message")):
                await c.ws.send(json.dumps(bad))
                m = await c.recv()
                assert m["type"] == "error" and m["code"] == code and m["id"] == bad["id"], m
        async with client(relay, home, extension=False) as stock:
            await stock.ws.send(json.dumps({"type": "pg.generate", "id": "z", "prompt": "x"}))
            m = await stock.recv()
            assert m["type"] == "error" and m["code"] == "unknown_type" and m["id"] == "z"
    run(go())


def test_garbage_is_answered_with_errors_and_the_session_survives(relay: RelayThread, home: Any) -> None:
    async def go() -> None:
        async with await raw(relay, home[1][DEV]) as ws:
            await ws.send(b"\x00\x01garbage")
            assert (await recv_json(ws))["code"] == "hello_required"
            await ws.send('{"type":"listen","state":"start"}')
            assert (await recv_json(ws))["code"] == "hello_required"
            await ws.send(json.dumps({**STOCK_HELLO, "features": {"pocketgpt": 1}}))
            assert (await recv_json(ws))["type"] == "hello"
            for frame, code in (("{nope", "bad_json"), ("[]", "bad_json"), ('{"type":"warp"}', "unknown_type"),
                                ('{"type":7}', "bad_message"), ("\u0000", "bad_json")):
                await ws.send(frame)
                m = await recv_json(ws)
                assert m["type"] == "error" and m["code"] == code and m["message"], (frame, m)
            await ws.send(b"\xde\xad\xbe\xef" * 10)
            m = await recv_json(ws)  # voice off: one error that names what voice needs
            assert m["code"] == "audio_unsupported"
            assert all(p in m["message"] for p in ("pocketgpt[voice]", "opuslib", "pocketsphinx", "libopus0", "espeak-ng"))
            await ws.send(b"more audio")  # refused once per listening phase, not once per packet
            await ws.send(json.dumps({"type": "pg.generate", "id": "ok", "prompt": "Still here", "max_tokens": 3}))
            m = await recv_json(ws)
            assert m["type"] in ("pg.delta", "pg.done") and m["id"] == "ok"
    run(go())


def test_oversize_frame_closes_1009_and_the_server_stays_up(relay: RelayThread, home: Any) -> None:
    async def go() -> None:
        ws = await raw(relay, home[1][DEV], max_size=None)
        await ws.send(json.dumps(STOCK_HELLO))
        await recv_json(ws)
        await ws.send("x" * (16 * 1024 + 1))
        with pytest.raises(ConnectionClosed):
            await recv_json(ws)
        assert ws.close_code == 1009
        async with client(relay, home) as c:
            assert (await c.generate("up?", max_tokens=2)).reason in ("length", "stop")
    run(go())


def test_32_concurrent_clients_each_get_their_complete_stream(relay: RelayThread, home: Any, engine: Any) -> None:
    prompts = [f"Story number {i}:" for i in range(32)]
    want = {p: reference(engine, p, 24) for p in prompts}

    async def one(p: str) -> str:
        async with client(relay, home) as c:
            r = await c.generate(p, max_tokens=24, greedy=True, raw=True)
            assert r.error is None, r.error
            return r.text

    async def go() -> list[str]:
        return await asyncio.gather(*(one(p) for p in prompts))

    sched = relay.relay.backend.scheduler
    steps0, tokens0 = getattr(sched, "steps", 0), getattr(sched, "batched_tokens", 0)
    got = run(go())
    for p, text in zip(prompts, got):
        assert text == want[p], p
    if hasattr(sched, "steps"):  # the C engine: the 32 streams were decoded together, not one by one
        steps, tokens = sched.steps - steps0, sched.batched_tokens - tokens0
        assert tokens / steps > 4, (tokens, steps)


# ---- who may connect --------------------------------------------------------------------------

def test_missing_wrong_foreign_and_revoked_tokens_get_401(relay: RelayThread, home: Any) -> None:
    path, tokens = home
    store = TokenStore(path)
    victim = store.add("aa:bb:cc:00:00:99")

    async def status(token: str | None, device: str | None) -> int:
        try:
            ws = await raw(relay, token, device)
        except InvalidStatus as exc:
            return exc.response.status_code
        await ws.close()
        return 101

    async def go() -> None:
        assert await status(None, DEV) == 401
        assert await status("pgt_000000000000_forged", DEV) == 401
        assert await status(tokens[DEV][:-2], DEV) == 401
        assert await status(tokens[DEV2], DEV) == 401          # a token of another device
        assert await status(victim, "aa:bb:cc:00:00:99") == 101
        TokenStore(path).revoke("aa:bb:cc:00:00:99")            # as 'pocketgpt token revoke' does
        assert await status(victim, "aa:bb:cc:00:00:99") == 401
        # browser-style clients: credentials in the query string
        url = relay.ws_url + f"?device-id={DEV}&authorization=Bearer%20{tokens[DEV]}"
        async with connect(url) as ws:
            await ws.send(json.dumps(STOCK_HELLO))
            assert (await recv_json(ws))["type"] == "hello"
    run(go())


def test_revoking_a_device_closes_its_open_session_at_the_next_request(relay: RelayThread, home: Any) -> None:
    path, _ = home
    token = TokenStore(path).add("aa:bb:cc:00:00:77")

    async def go() -> None:
        async with RelayClient(relay.ws_url, token=token, device_id="aa:bb:cc:00:00:77") as c:
            assert (await c.generate("before", max_tokens=2)).error is None
            TokenStore(path).revoke("aa:bb:cc:00:00:77")
            r = await c.generate("after", max_tokens=2)
            assert r.error is not None and r.error["code"] == "unauthorized"
            with pytest.raises(ConnectionClosed):
                await c.recv()
            assert c.ws.close_code == 1008
    run(go())


def test_ota_hands_a_registered_device_its_token_once_and_unknown_ones_a_code(relay: RelayThread, home: Any) -> None:
    import aiohttp

    body = {"application": {"version": "1.6.2", "name": "xiaozhi"}, "mac_address": DEV, "chip_model_name": "esp32s3"}

    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(relay.http_url + "/xiaozhi/ota/", json=body,
                              headers={"Device-Id": DEV, "Client-Id": "c0ffee"}) as r:
                assert r.status == 200
                got = await r.json()
            assert got["firmware"]["version"] == "1.6.2"
            assert got["websocket"] == {"url": relay.ws_url, "token": home[1][DEV], "version": 1}
            assert isinstance(got["server_time"]["timestamp"], int)
            async with s.post(relay.http_url + "/xiaozhi/ota/", json=body,
                              headers={"Device-Id": DEV, "Client-Id": "c0ffee"}) as r:
                assert r.status == 200 and "pgt_" not in await r.text()  # handed once, never again
            async with s.post(relay.http_url + "/xiaozhi/ota/", json={**body, "mac_address": "de:ad:00:00:00:00"},
                              headers={"Device-Id": "de:ad:00:00:00:00"}) as r:
                assert r.status == 200
                got = await r.json()
                assert "pgt_" not in json.dumps(got) and "token" not in got["websocket"]
                assert got["activation"]["code"].isdigit() and len(got["activation"]["code"]) == 6
            async with s.post(relay.http_url + "/xiaozhi/ota/", data=b"{not json",
                              headers={"Device-Id": DEV}) as r:
                assert r.status == 400 and (await r.json())["error"]["code"] == "bad_json"
    run(go())


# ---- limits -----------------------------------------------------------------------------------

def test_hello_and_idle_timeouts_close_with_an_error(engine: Any, home: Any) -> None:
    rt = RelayThread(EngineBackend(engine, "tiny", workers=1), home=home[0], hello_timeout=1.0, idle_timeout=1.5)
    try:
        async def go() -> None:
            async with await raw(rt, home[1][DEV]) as ws:
                m = await recv_json(ws)
                assert m["type"] == "error" and m["code"] == "hello_timeout"
                with pytest.raises(ConnectionClosed):
                    await recv_json(ws)
                assert ws.close_code == 1008
            async with await raw(rt, home[1][DEV]) as ws:
                await ws.send(json.dumps(STOCK_HELLO))
                await recv_json(ws)
                m = await recv_json(ws)
                assert m["code"] == "idle_timeout"
                with pytest.raises(ConnectionClosed):
                    await recv_json(ws)
        run(go())
    finally:
        rt.stop()


def test_session_cap_and_rate_limit(engine: Any, home: Any) -> None:
    rt = RelayThread(EngineBackend(engine, "tiny", workers=1), home=home[0], max_sessions=2,
                     rate_per_minute=0.001, rate_burst=2)
    try:
        async def go() -> None:
            a = await raw(rt, home[1][DEV])
            b = await raw(rt, home[1][DEV2], DEV2)
            with pytest.raises(InvalidStatus) as exc:
                await raw(rt, home[1][DEV])
            assert exc.value.response.status_code == 503
            await b.close()
            await a.send(json.dumps({**STOCK_HELLO, "features": {"pocketgpt": 1}}))
            await recv_json(a)
            codes = []
            for i in range(3):
                await a.send(json.dumps({"type": "pg.generate", "id": f"q{i}", "prompt": "hi", "max_tokens": 1}))
                while True:
                    m = await recv_json(a)
                    if m["type"] in ("pg.done", "error"):
                        codes.append(m.get("code", m["type"]))
                        break
            assert codes == ["pg.done", "pg.done", "rate_limited"]
            await a.close()
        run(go())
    finally:
        rt.stop()


def test_drain_lets_running_generations_finish_and_refuses_new_sessions(engine: Any, home: Any) -> None:
    rt = RelayThread(EngineBackend(engine, "tiny", workers=1), home=home[0], drain_timeout=30)

    async def go() -> None:
        async with client(rt, home) as c:
            await c.ws.send(json.dumps({"type": "pg.generate", "id": "d", "prompt": "Drain", "max_tokens": 200,
                                        "greedy": True, "raw": True}))
            assert (await c.recv())["type"] == "pg.delta"
            drained = asyncio.get_running_loop().run_in_executor(None, rt.stop)
            while not rt.relay.draining:
                await asyncio.sleep(0.01)
            # refused: a 503, the listener already closed, or (a connection the kernel had queued
            # just before the listener closed) dropped before any HTTP response
            with pytest.raises((InvalidStatus, InvalidMessage, OSError)):
                await raw(rt, home[1][DEV])
            while True:
                m = await c.recv()
                if m["type"] == "pg.done":
                    break
            assert m["reason"] in ("length", "stop") and (m["tokens"] == 200 or m["reason"] == "stop")
            with pytest.raises(ConnectionClosed):
                await c.recv()
            assert c.ws.close_code == 1001
            await drained
    run(go())


def test_drain_deadline_aborts_what_is_still_running(engine: Any, home: Any) -> None:
    rt = RelayThread(EngineBackend(engine, "tiny", workers=1), home=home[0], drain_timeout=0, max_tokens_cap=900)

    async def go() -> None:
        async with client(rt, home) as c:
            await c.ws.send(json.dumps({"type": "pg.generate", "id": "d", "prompt": "Drain", "max_tokens": 900,
                                        "raw": True}))
            assert (await c.recv())["type"] == "pg.delta"
            drained = asyncio.get_running_loop().run_in_executor(None, rt.stop)
            while True:
                m = await c.recv()
                if m["type"] == "pg.done":
                    break
            assert m["reason"] == "abort" and m["tokens"] < 900
            await drained
    run(go())


def test_a_long_generation_does_not_starve_a_short_one(engine: Any, home: Any) -> None:
    """One worker, two sessions: the short request finishes while the long one is still running."""
    rt = RelayThread(EngineBackend(engine, "tiny", workers=1), home=home[0], max_tokens_cap=900)
    try:
        async def go() -> None:
            async with client(rt, home) as long_c, client(rt, home, DEV2) as short_c:
                await long_c.ws.send(json.dumps({"type": "pg.generate", "id": "long", "prompt": "Once",
                                                 "max_tokens": 900, "stop": ["@@@@"], "raw": True}))
                assert (await long_c.recv())["type"] == "pg.delta"
                r = await short_c.generate("Quick", max_tokens=10)
                assert r.reason in ("length", "stop")
                await long_c.ws.send(json.dumps({"type": "abort", "id": "long"}))
                while (m := await long_c.recv())["type"] != "pg.done":
                    pass
                assert m["reason"] == "abort", "the long generation had already finished: not a fairness test"
        run(go())
    finally:
        rt.stop()


@pytest.mark.parametrize("text", ["", "?!", "...", "\U0001F600\U0001F389", "   ", "\u00bfQu\u00e9 es la vida?",
                                  "\u4eba\u751f\u306e\u610f\u5473\u306f\u4f55\u3067\u3059\u304b",
                                  "\U0001F600" * 700, "x" * 2500])
def test_a_typed_turn_always_gets_words_or_one_clear_error(relay: RelayThread, home: Any, text: str) -> None:
    """Punctuation, emoji, blanks, other languages, more than the context: never silence, never a hang."""
    async def go() -> None:
        async with await raw(relay, home[1][DEV]) as ws:
            await ws.send(json.dumps(STOCK_HELLO))
            sid = (await recv_json(ws))["session_id"]
            await ws.send(json.dumps({"session_id": sid, "type": "listen", "state": "detect", "text": text}))
            msgs = []
            while not msgs or msgs[-1] != {"type": "tts", "state": "stop", "session_id": sid}:
                msgs.append(await recv_json(ws))
            said = " ".join(m["text"] for m in msgs if m.get("state") == "sentence_start")
            errors = [m for m in msgs if m["type"] == "error"]
            if len(text) > 500:  # more than the context or the relay's 2000 characters: one error, what to do
                assert len(errors) == 1 and errors[0]["code"] == "prompt_too_long" and "shorten" in errors[0]["message"]
            else:
                assert not errors and any(c.isalnum() for c in said), msgs
    run(go())
