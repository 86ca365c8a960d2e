"""The relay's HTTP side with real clients: the openai package, aiohttp; and the OpenAI backend
chained to a second relay (device -> relay B --openai--> relay A -> engine)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from pocketgpt.relay.auth import TokenStore
from pocketgpt.relay.backends import EngineBackend, OpenAIBackend
from pocketgpt.relay.client import RelayClient
from support import RelayThread, chat_reference, reference_run, run

pytestmark = pytest.mark.relay

DEV = "api-user-1"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("relay-http-home")
    return path, TokenStore(path).add(DEV)


@pytest.fixture(scope="module")
def relay(engine: Any, home: tuple[Path, str]) -> Any:
    rt = RelayThread(EngineBackend(engine, "tiny", workers=2), home=home[0], max_tokens_cap=300,
                     rate_per_minute=6000, rate_burst=1000, max_message_bytes=8 * 1024)
    yield rt
    rt.stop()


@pytest.fixture()
def oai(relay: RelayThread, home: tuple[Path, str]) -> Any:
    import openai

    return openai.OpenAI(base_url=relay.http_url + "/v1", api_key=home[1], max_retries=0, timeout=30)


def test_openai_models_and_completions(oai: Any, engine: Any) -> None:
    assert [m.id for m in oai.models.list().data] == ["tiny"]
    want, n_want, reason = reference_run(engine, "The weather today", 20)
    r = oai.completions.create(model="tiny", prompt="The weather today", max_tokens=20, temperature=0)
    assert r.choices[0].text == want
    assert r.choices[0].finish_reason == reason
    assert r.usage.prompt_tokens == len(engine.tokenize("The weather today")) and r.usage.completion_tokens == n_want
    chunks = list(oai.completions.create(model="tiny", prompt="The weather today", max_tokens=20, temperature=0,
                                         stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_openai_chat_streaming_and_not(oai: Any, engine: Any) -> None:
    """/v1/chat/completions renders the messages with the model's chat template (not "User:" lines)."""
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there"}]
    r = oai.chat.completions.create(model="tiny", messages=messages, max_tokens=16, temperature=0)
    assert r.choices[0].message.role == "assistant"
    text = r.choices[0].message.content
    want, n_prompt = chat_reference(engine, messages, 16)
    assert text == want and text.strip()
    assert r.usage.prompt_tokens == n_prompt
    stream = oai.chat.completions.create(model="tiny", messages=messages, max_tokens=16, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_openai_errors_are_typed(relay: RelayThread, oai: Any) -> None:
    import openai

    bad = openai.OpenAI(base_url=relay.http_url + "/v1", api_key="pgt_nope_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="tiny", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="cap of 300"):
        oai.completions.create(model="tiny", prompt="x", max_tokens=301)
    with pytest.raises(openai.BadRequestError, match="prompt"):
        oai.completions.create(model="tiny", prompt="", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="messages"):
        oai.chat.completions.create(model="tiny", messages=[], max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="1100 tokens") as err:   # longer than the model's context
        oai.completions.create(model="tiny", prompt=" a" * 1100, max_tokens=1)
    assert err.value.code == "prompt_too_long"


def test_http_hygiene_health_metrics_and_limits(relay: RelayThread, home: tuple[Path, str]) -> None:
    import aiohttp

    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(relay.http_url + "/healthz") as r:
                assert r.status == 200
                h = await r.json()
                assert h["status"] == "ok" and h["open"] is False and h["model"] == "tiny"
            auth = {"Authorization": f"Bearer {home[1]}"}
            async with s.post(relay.http_url + "/v1/completions", data=b"x" * (9 * 1024), headers=auth) as r:
                assert r.status == 413 and (await r.json())["error"]["code"] == "too_large"
            async with s.post(relay.http_url + "/v1/completions", data=b"{broken", headers=auth) as r:
                assert r.status == 400 and (await r.json())["error"]["code"] == "bad_json"
            async with s.post(relay.http_url + "/v1/completions", json={"prompt": "x"}) as r:
                assert r.status == 401 and "token" in (await r.json())["error"]["message"]
            async with s.get(relay.http_url + "/nope") as r:
                assert r.status == 404
            async with s.post(relay.http_url + "/v1/completions", json={"prompt": "Count", "max_tokens": 3}, headers=auth) as r:
                assert r.status == 200
            async with s.get(relay.http_url + "/metrics") as r:
                text = await r.text()
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            assert "pocketgpt_sessions_active " in text and 'pocketgpt_refusals_total{code="unauthorized"}' in text
            assert "pocketgpt_tokens_generated_total" in text and "pocketgpt_time_to_first_token_seconds_count" in text
            assert home[1] not in text
    run(go())


def test_http_rate_limit_is_429_with_retry_after(engine: Any, home: tuple[Path, str]) -> None:
    import aiohttp

    rt = RelayThread(EngineBackend(engine, "tiny", workers=1), home=home[0], rate_per_minute=0.001, rate_burst=1)
    try:
        async def go() -> list[int]:
            out = []
            async with aiohttp.ClientSession() as s:
                for _ in range(2):
                    async with s.post(rt.http_url + "/v1/completions", json={"prompt": "hi", "max_tokens": 1},
                                      headers={"Authorization": f"Bearer {home[1]}"}) as r:
                        out.append(r.status)
                        if r.status == 429:
                            assert int(r.headers["Retry-After"]) >= 1
                            assert (await r.json())["error"]["code"] == "rate_limited"
            return out
        assert run(go()) == [200, 429]
    finally:
        rt.stop()


def test_openai_backend_chained_to_another_relay(relay: RelayThread, home: tuple[Path, str], engine: Any) -> None:
    """device -> relay B (backend openai) -> relay A's /v1/completions -> engine: same greedy text."""
    front = RelayThread(OpenAIBackend(relay.http_url + "/v1", "tiny", api_key=home[1]), open=True)
    try:
        want, n_want, reason = reference_run(engine, "Far away", 24)

        async def go() -> None:
            async with RelayClient(front.ws_url) as c:
                assert c.hello["pocketgpt"]["backend"] == "openai"
                r = await c.generate("Far away", max_tokens=24, greedy=True, raw=True)
                # relay A's usage (its token count) and finish reason come through relay B unchanged
                assert r.error is None and r.text == want and r.reason == reason and r.tokens == n_want
                # abort through the chain
                await c.ws.send(json.dumps({"type": "pg.generate", "id": "x", "prompt": "Go", "max_tokens": 300, "raw": True}))
                assert (await c.recv())["type"] == "pg.delta"
                await c.ws.send(json.dumps({"type": "abort", "id": "x"}))
                while (m := await c.recv())["type"] != "pg.done":
                    pass
                assert m["reason"] == "abort"
        run(go())
    finally:
        front.stop()


def test_dead_openai_backend_is_reported_to_the_device(home: tuple[Path, str]) -> None:
    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    front = RelayThread(OpenAIBackend(f"http://127.0.0.1:{dead_port}/v1", "gpt2"), open=True)
    try:
        async def go() -> None:
            async with RelayClient(front.ws_url) as c:
                r = await c.generate("Anyone there?", max_tokens=5)
                assert r.error is not None and r.error["code"] == "backend_unavailable" and r.error["id"] == "r1"
                assert str(dead_port) in r.error["message"]
                msgs = await c.text_turn("Hello?")   # a stock text turn: error, then tts stop, never a hang
                assert [m["type"] for m in msgs][:2] == ["stt", "tts"]
                assert any(m["type"] == "error" and m["code"] == "backend_unavailable" for m in msgs)
                assert msgs[-1]["state"] == "stop"
                r = await c.generate("Still alive?", max_tokens=5)   # the relay stays up
                assert r.error["code"] == "backend_unavailable"
        run(go())

        import openai
        api = openai.OpenAI(base_url=front.http_url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            api.completions.create(model="gpt2", prompt="x", max_tokens=2)
        assert err.value.status_code == 503
    finally:
        front.stop()


def test_ota_behind_a_load_balancer_and_mac_from_the_body(engine: Any, home: tuple[Path, str]) -> None:
    """--public-url is what devices get; a device that sends no Device-Id header is known by its mac_address."""
    import aiohttp

    rt = RelayThread(EngineBackend(engine, "tiny", workers=1), home=home[0],
                     public_url="wss://chat.example.org/xiaozhi/v1/")
    try:
        async def go() -> dict:
            async with aiohttp.ClientSession() as s:
                async with s.post(rt.http_url + "/xiaozhi/ota/", json={"application": {"version": "0.9"},
                                                                       "mac_address": DEV}) as r:
                    assert r.status == 200
                    return await r.json()
        got = run(go())
        assert got["websocket"] == {"url": "wss://chat.example.org/xiaozhi/v1/", "token": home[1], "version": 1}
        assert got["firmware"]["version"] == "0.9"
    finally:
        rt.stop()


def test_chat_bad_input_gets_a_reply_or_one_clear_error(oai: Any) -> None:
    import openai

    for content in ("", "   ", "?!", "\U0001F600", "\u00bfQu\u00e9 es la vida?", "\u4eba\u751f\u306e\u610f\u5473"):
        r = oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}], max_tokens=8)
        assert any(c.isalnum() for c in r.choices[0].message.content), (content, r.choices[0].message.content)
    with pytest.raises(openai.BadRequestError, match="roles system, user or assistant"):
        oai.chat.completions.create(model="tiny", messages=[{"role": "wizard", "content": "hi"}], max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="shorten it"):
        oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "\U0001F600" * 1500}],
                                    max_tokens=4)
